"""Compile time and exact bits of tiny VGG-8 / ResNet-18 train steps (4 methods) + MC eval under XLA_FLAGS."""
import hashlib, json, os, sys, time
sys.path.insert(0, "/work/main/tests")
import jax, numpy as np, optax
from synthetic import quadrant_task
from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax import train as T
from neft_jax.models import VGG8, ResNet18

def h(tree):
    m = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        m.update(np.asarray(x).tobytes())
    return m.hexdigest()[:12]
images, labels = quadrant_task(96, seed=0)
out = {}; total = 0.0
for name, make in (("vgg8", lambda: VGG8(4, width=0.0625)), ("resnet18", lambda: ResNet18(4, width=0.0625))):
    for method in sys.argv[1].split(","):
        model = make()
        state = T.create_train_state(model, jax.random.key(0), (1, 32, 32, 1), optax.adam(1e-3),
                                     T.make_hparams(0.3, alpha=0.1))
        step = T.make_train_step(model, method, DeviceModel(), jit=True)
        batch = {"image": images[:32], "label": labels[:32]}
        t = time.perf_counter()
        compiled = step.lower(state, batch, jax.random.key(1)).compile()
        ct = time.perf_counter() - t; total += ct
        for i in range(3):
            b = {"image": images[i*32:(i+1)*32], "label": labels[i*32:(i+1)*32]}
            state, m = compiled(state, b, jax.random.key(i))
        out[f"{name}-{method}"] = [round(ct, 2), h((state.params, state.batch_stats, m))]
    ti, tl = quadrant_task(50, seed=1)
    ts = make_test_set(ti, tl, 25)
    t = time.perf_counter()
    r = monte_carlo(model, {"params": state.params, "batch_stats": state.batch_stats}, ts,
                    jax.random.split(jax.random.key(3), 4), DeviceModel(0.3), chunk_size=2)
    total += time.perf_counter() - t
    out[f"{name}-mc"] = h((r.accuracies, r.ekl))
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", "").replace("--xla_cpu_multi_thread_eigen=true --xla_cpu_use_fusion_emitters=false", "B"), "total": round(total, 1), **out}))
