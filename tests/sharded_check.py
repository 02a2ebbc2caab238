"""Run in a subprocess with 8 forced CPU devices: sharded vs single-device results."""

import json
import os

# The test session's XLA flags (tests/conftest.py) plus 8 host devices.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import jax
import numpy as np
import optax
from synthetic import quadrant_task
from tiny import TINY_DATA_DIR

from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax import train as T
from neft_jax.models import VGG8
from neft_jax.parallel import data_mesh, make_data_parallel_step, replicate, shard_batch


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = data_mesh()
    model = VGG8(4, width=0.0625)  # the run_experiment below builds the same backbone
    # Plain SGD: the update is linear in the gradient, so float reduction-order differences
    # stay at float scale (Adam would turn near-zero gradients into ±lr steps).
    state0 = T.create_train_state(model, jax.random.key(0), (1, 32, 32, 1),
                                  optax.sgd(1e-3), T.make_hparams(0.2, alpha=0.1))
    raw = T.make_train_step(model, "irs", DeviceModel(), jit=False)
    single = jax.jit(raw)
    parallel = make_data_parallel_step(raw, mesh)
    images, labels = quadrant_task(64 * 3, seed=0)
    a, b = state0, replicate(state0, mesh)
    losses, step_diffs = [], []
    for i in range(3):
        batch = {"image": images[i * 64:(i + 1) * 64], "label": labels[i * 64:(i + 1) * 64]}
        a, metrics_a = single(a, batch, jax.random.key(i))
        b, metrics = parallel(b, shard_batch(batch, mesh), jax.random.key(i))
        losses.append((float(metrics_a["loss"]), float(metrics["loss"])))
        if i == 0:
            update = [np.asarray(x) - np.asarray(y) for x, y in
                      zip(jax.tree.leaves(a.params), jax.tree.leaves(state0.params), strict=True)]
            first_update_scale = max(float(np.max(np.abs(u))) for u in update)
        step_diffs.append(max(float(np.max(np.abs(x - y))) for x, y in
                              zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params),
                                  strict=True)))
    # A fresh state (not replicated) beside a batch from shard_batch: the mesh's Auto axis
    # lets XLA place it (an Explicit axis, jax.make_mesh's default, refused the pair).
    first = {"image": images[:64], "label": labels[:64]}
    _, fresh = parallel(state0, shard_batch(first, mesh), jax.random.key(0))
    diff = max(float(np.max(np.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True))
    stats_diff = max(float(np.max(np.abs(x - y))) for x, y in
                     zip(jax.tree.leaves(a.batch_stats), jax.tree.leaves(b.batch_stats),
                         strict=True))
    scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(a.params))

    test_images, test_labels = quadrant_task(50, seed=1)
    test_set = make_test_set(test_images, test_labels, 25)
    variables = {"params": a.params, "batch_stats": a.batch_stats}
    keys = jax.random.split(jax.random.key(3), 20)
    device = DeviceModel(0.3)
    one = monte_carlo(model, variables, test_set, keys, device, chunk_size=1)
    many = monte_carlo(model, variables, test_set, keys, device, chunk_size=1, mesh=mesh)
    import sys
    import tempfile

    from neft_jax import parallel
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.orchestration import run_experiment

    meshes, sharded_steps = [], []  # what the harness's loop builds: a mesh of 8, used
    local_data_mesh, data_parallel_jit = parallel.local_data_mesh, parallel.data_parallel_jit
    parallel.local_data_mesh = lambda *a: meshes.append(local_data_mesh(*a)) or meshes[-1]
    parallel.data_parallel_jit = lambda step, mesh, *a, **k: sharded_steps.append(
        mesh.size) or data_parallel_jit(step, mesh, *a, **k)
    out = tempfile.mkdtemp()
    cfg = ExperimentConfig(methods=("noise",), epochs=1, batch_size=64, width=0.0625,
                           mc_runs=8, val_mc_runs=8, sigma=0.3, out=out + "/run",
                           max_train_steps=3, backward_micro_batch=0,  # compiles faster
                           data_dir=TINY_DATA_DIR)  # tests/tiny.py: 1,000 digits
    results = run_experiment(cfg, log=lambda m: print(m, file=sys.stderr),
                             show_progress=False).to_json()
    run_accuracies = results["methods"]["noise"]["evaluations"]["0.3"]["accuracies"]
    print(json.dumps({
        "run_experiment_accuracies": run_accuracies,
        "run_experiment_meshes": [None if m is None else m.size for m in meshes],
        "run_experiment_sharded_steps": sharded_steps,
        "losses": losses, "fresh_state_loss": float(fresh["loss"]),
        "step_param_diffs": step_diffs, "param_max_abs_diff": diff,
        "param_scale": scale, "first_update_scale": first_update_scale,
        "batch_stats_max_abs_diff": stats_diff,
        "sharded_batch_devices": len(metrics["loss"].sharding.device_set),
        "mc_single": one.accuracies.tolist(), "mc_sharded": many.accuracies.tolist(),
        "ekl_single": one.ekl, "ekl_sharded": many.ekl,
    }))


if __name__ == "__main__":
    main()
