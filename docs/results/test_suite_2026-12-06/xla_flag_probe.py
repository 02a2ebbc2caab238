"""Compile time and exact numbers of a tiny VGG-8 IRS/OVF step + MC eval under XLA_FLAGS."""
import hashlib, json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests"))
import jax, numpy as np, optax
from synthetic import quadrant_task
from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax import train as T
from neft_jax.models import VGG8

out = {}
def h(tree):
    m = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        m.update(np.asarray(x).tobytes())
    return m.hexdigest()[:16]
images, labels = quadrant_task(96, seed=0)
for method in ("irs", "ovf", "noise"):
    model = VGG8(4, width=0.0625)
    state = T.create_train_state(model, jax.random.key(0), (1, 32, 32, 1), optax.adam(1e-3),
                                 T.make_hparams(0.3, alpha=0.1))
    step = T.make_train_step(model, method, DeviceModel(), jit=True)
    batch = {"image": images[:32], "label": labels[:32]}
    t = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(1)).compile()
    ct = time.perf_counter() - t
    losses = []
    t = time.perf_counter()
    for i in range(3):
        b = {"image": images[i*32:(i+1)*32], "label": labels[i*32:(i+1)*32]}
        state, m = compiled(state, b, jax.random.key(i))
        losses.append(float(m["loss"]))
    jax.block_until_ready(state.params)
    rt = (time.perf_counter() - t) / 3
    out[method] = {"compile": round(ct, 2), "step_ms": round(rt * 1e3, 1), "losses": losses, "params": h(state.params)}
ti, tl = quadrant_task(50, seed=1)
ts = make_test_set(ti, tl, 25)
t = time.perf_counter()
r = monte_carlo(model, {"params": state.params, "batch_stats": state.batch_stats}, ts,
                jax.random.split(jax.random.key(3), 4), DeviceModel(0.3), chunk_size=2)
out["mc"] = {"time": round(time.perf_counter() - t, 2), "acc": [float(a) for a in r.accuracies], "ekl": float(r.ekl)}
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), **out}))
