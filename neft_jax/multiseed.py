"""Many independent runs (seeds) of one experiment, aggregated (SPEC §5, Table III).

Seed ``cfg.seed + i`` runs into ``out/seed-<seed>/`` as a complete single-seed
experiment (own init, data order, validation split and noise keys; resumable on
its own). ``out/results.json`` then holds, per method and σ, the per-seed mean
accuracies, their mean ± 95 % CI over seeds, and the number of runs that did not
converge (more than 5 points from the mean over seeds, or diverged).

Two ways to run the seeds (``seed_mode``), with the same files either way:

* ``sequential``: one complete experiment after another.
* ``vmap``: per method, the N trainings are one jitted program ``vmap``-ped over
  a leading run axis of the train state (own init, data order, validation split
  and step keys per seed, as in the sequential run); each seed is then evaluated
  and checkpointed as in the sequential run. On GPUs a small model leaves most
  of the device idle, so stacking runs fills it.
* ``auto`` (default) picks ``sequential`` on CPU, where a ``vmap`` over params
  turns every convolution into a grouped one that XLA's CPU backend runs several
  times slower than a loop (docs/RESULTS.md); with several local devices (which
  data-parallel training already fills); and for full-width models on a GPU/TPU,
  which one run fills (an H200 trained 8 vmapped VGG-8 seeds at 0.90× the speed
  of one run). It picks ``vmap`` for reduced-width models on one GPU/TPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax import data as data_lib
from neft_jax import train as train_lib
from neft_jax.checkpoints import RunCheckpoints
from neft_jax.evaluate import make_test_set, summarize_over_seeds
from neft_jax.experiment import (
    ExperimentConfig,
    RunProgress,
    TrainOutcome,
    add_metrics,
    checkpoint_dir_of,
    environment,
    epoch_means,
    method_done,
    method_entry,
    prepare_out_dir,
    run_experiment,
    start_results,
    train_on_indices_fn,
    validation_accuracy,
    write_results,
)

SEED_MODES = ("auto", "sequential", "vmap")


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The single-seed experiment of ``seed`` inside ``cfg.out``."""
    return dataclasses.replace(cfg, seed=seed, out=os.path.join(cfg.out, f"seed-{seed}"),
                               overwrite=False)


def aggregate_seeds(cfg: ExperimentConfig, per_seed: dict[int, dict],
                    tolerance_pct: float = 5.0) -> dict:
    """Combine single-seed results into mean ± CI over seeds and a non-convergence count."""
    seeds = sorted(per_seed)
    methods = {}
    for method in cfg.methods:
        evaluations = {}
        for sigma in cfg.eval_sigmas:
            label = f"{sigma:g}"
            means, ekls, diverged = [], [], []
            for seed in seeds:
                entry = per_seed[seed]["methods"][method]
                evaluation = entry["evaluations"][label]
                summary = evaluation.get("summary")
                if entry.get("diverged") or summary is None:
                    diverged.append(seed)
                means.append(summary["mean"] if summary else math.nan)
                ekls.append(summary["ekl"] if summary else math.nan)
            summary, not_converged = summarize_over_seeds(means, ekls, tolerance_pct)
            evaluations[label] = {"sigma": sigma, "seed_means": means, "summary": summary,
                                  "not_converged": not_converged, "diverged_seeds": diverged}
        alphas = {per_seed[s]["methods"][method].get("alpha") for s in seeds}
        methods[method] = {"alpha": alphas.pop() if len(alphas) == 1 else sorted(alphas),
                           "evaluations": evaluations}
    return {
        "settings": {**cfg.to_dict(), "eval_sigmas": list(cfg.eval_sigmas), "seeds": seeds,
                     "accuracy_unit": "percent", "ekl_unit": "nats",
                     "aggregate": "per-seed Monte Carlo means; mean ± 95 % CI over seeds"},
        "environment": environment(),
        "methods": methods,
        "per_seed_results": {str(s): os.path.join(f"seed-{s}", "results.json") for s in seeds},
    }


def choose_seed_mode(requested: str, backend: str, local_devices: int,
                     width: float = 1.0) -> tuple[str, str]:
    """``(mode, reason)``: how the seeds run (model channel-width factor ``width``), and a
    sentence saying why."""
    if requested not in SEED_MODES:
        raise ValueError(f"seed_mode must be one of {SEED_MODES}, got {requested!r}")
    if requested != "auto":
        return requested, "chosen with --seed-mode"
    if backend == "cpu":
        return "sequential", ("auto: on CPU a vmap over params runs every conv as a grouped "
                              "conv, measured slower than a loop; --seed-mode vmap overrides")
    if local_devices > 1:
        return "sequential", (f"auto: {local_devices} local devices are filled by data-parallel "
                              "training; --seed-mode vmap overrides")
    if width >= 1:
        return "sequential", (f"auto: one full-width run fills the {backend} device (8 "
                              "vmapped VGG-8 seeds ran at 0.90× one run's speed on an H200); "
                              "--seed-mode vmap overrides")
    return "vmap", (f"auto: one {backend} device, which one run of a ×{width:g} model leaves "
                    "mostly idle; --seed-mode sequential overrides")


def run_seeds(cfg: ExperimentConfig, num_seeds: int, log: Callable[[str], None] = print,
              show_progress: bool = True, seed_mode: str = "sequential") -> dict:
    """Run seeds ``cfg.seed … cfg.seed + num_seeds − 1`` and aggregate them.

    ``seed_mode`` is ``sequential`` or ``vmap`` (see the module docstring; resolve
    ``auto`` with :func:`choose_seed_mode`). α search always runs sequentially.
    """
    if not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or num_seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {num_seeds!r}")
    if seed_mode not in ("sequential", "vmap"):
        raise ValueError(f"seed_mode must be 'sequential' or 'vmap', got {seed_mode!r}")
    prepare_out_dir(cfg)
    started = time.perf_counter()
    seeds = [cfg.seed + i for i in range(num_seeds)]
    if seed_mode == "vmap" and not cfg.alpha_search:
        with jax.default_matmul_precision(cfg.matmul_precision):
            per_seed = _run_seeds_vmapped(cfg, seeds, log, show_progress)
    else:
        per_seed = {}
        for i, seed in enumerate(seeds):
            log(f"seed {seed} ({i + 1}/{num_seeds})")
            per_seed[seed] = run_experiment(seed_config(cfg, seed), log=log,
                                            show_progress=show_progress)
    results = aggregate_seeds(cfg, per_seed)
    results["settings"]["seed_mode"] = seed_mode
    results["wall_seconds"] = time.perf_counter() - started
    write_results(cfg.out, results)
    return results


# ------------------------------------------------------------- seeds in one vmapped program


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def _run_seeds_vmapped(cfg: ExperimentConfig, seeds: list[int], log, show_progress) -> dict:
    """Per method: train all seeds in one vmapped program, then evaluate each seed."""
    dataset = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
    test_set = make_test_set(dataset.test_images, dataset.test_labels, cfg.eval_batch_size)
    configs = {seed: seed_config(cfg, seed) for seed in seeds}
    per_seed = {}
    for seed, sub in configs.items():
        previous = prepare_out_dir(dataclasses.replace(sub, resume=True))
        train_idx, val_idx = data_lib.validation_indices(dataset.train_labels,
                                                         cfg.val_fraction, seed)
        per_seed[seed] = start_results(sub, previous, len(train_idx), len(val_idx),
                                       len(dataset.test_labels))
    started = time.perf_counter()
    for method in cfg.methods:
        todo = [s for s in seeds
                if not method_done(per_seed[s]["methods"].get(method), cfg.eval_sigmas)]
        if not todo:
            log(f"{method}: already done for every seed, skipped")
            continue
        log(f"{method}: training seeds {todo} together (one vmapped program)")
        outcomes = train_method_vmapped(cfg, dataset, todo, method, cfg.alpha_for(method),
                                        log, show_progress)
        for seed, outcome in zip(todo, outcomes, strict=True):
            log(f"seed {seed}:")
            per_seed[seed]["methods"][method] = method_entry(
                configs[seed], method, outcome, cfg.alpha_for(method), test_set, log,
                show_progress)
            per_seed[seed]["wall_seconds"] = time.perf_counter() - started
            write_results(configs[seed].out, per_seed[seed])
    return per_seed


def train_method_vmapped(cfg: ExperimentConfig, dataset: data_lib.Dataset, seeds: list[int],
                         method: str, alpha: float, log: Callable[[str], None] = print,
                         show_progress: bool = True) -> list[TrainOutcome]:
    """Train ``method`` for every seed in one program vmapped over a run axis.

    Each seed gets what :func:`neft_jax.experiment.train_method` would give it (own
    validation split, init, data order, step and validation keys; its own
    checkpoints in ``out/seed-<n>/checkpoints``), up to float reassociation in
    the batched convolutions. Returns one outcome per seed, in order.
    """
    from tqdm.auto import tqdm

    configs = [seed_config(cfg, seed) for seed in seeds]
    model = cfg.model_for(method, dataset.num_classes)
    splits = [data_lib.validation_indices(dataset.train_labels, cfg.val_fraction, s)
              for s in seeds]
    num_train = len(splits[0][0])
    batch_size = min(cfg.batch_size, num_train)
    steps_per_epoch = num_train // batch_size
    tx = train_lib.create_optimizer(cfg.learning_rate, cfg.epochs * steps_per_epoch)
    roots = [jax.random.split(jax.random.key(seed), 4) for seed in seeds]
    hparams = train_lib.make_hparams(cfg.sigma, cfg.effective_exit_sigma, alpha)
    input_shape = (1, *dataset.train_images.shape[1:])
    device = cfg.device()
    progress = [RunProgress(sub, method, alpha,
                            RunCheckpoints(checkpoint_dir_of(sub, method, alpha)))
                for sub in configs]
    states = [progress[i].resume(
        train_lib.create_train_state(model, roots[i][0], input_shape, tx, hparams), log)
        for i in range(len(seeds))]
    start_epochs = {p.start_epoch for p in progress}
    if len(start_epochs) > 1:  # a kill between two seeds' checkpoint saves
        raise ValueError(f"{method}: the seeds' checkpoints are at different epochs "
                         f"{sorted(start_epochs)}; resume with --seed-mode sequential")
    start_epoch = start_epochs.pop()
    stacked = _stack(states)
    del states
    step_roots = jnp.stack([r[2] for r in roots])
    train_on_indices = train_on_indices_fn(model, method, device, dataset.augment,
                                           cfg.feedback_coefficients(method))

    def vmapped_step(state, images, labels, indices, global_step):
        keys = jax.vmap(train_lib.step_key, in_axes=(0, None))(step_roots, global_step)
        return jax.vmap(train_on_indices, in_axes=(0, None, None, 0, 0))(
            state, images, labels, indices, keys)

    step = jax.jit(vmapped_step, donate_argnums=(0,))
    images = jax.device_put(np.asarray(dataset.train_images))
    labels = jax.device_put(np.asarray(dataset.train_labels))
    val_sets = [make_test_set(dataset.train_images[v], dataset.train_labels[v],
                              cfg.eval_batch_size) for _, v in splits]
    train_index = [jnp.asarray(t) for t, _ in splits]
    start = time.perf_counter()
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if all(p.diverged for p in progress):
            break
        epoch_start = time.perf_counter()
        orders = jnp.stack([
            train_index[i][data_lib.epoch_batches(jax.random.fold_in(roots[i][1], epoch),
                                                  num_train, batch_size)]
            for i in range(len(seeds))], axis=1)  # (steps, seeds, batch) into the full set
        sums = None
        all_finite = jnp.ones(len(seeds), bool)
        steps_done = 0
        bar = tqdm(orders, desc=f"{method} ×{len(seeds)} seeds epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=not show_progress, unit="step")
        for indices in bar:
            if cfg.max_train_steps is not None and global_step >= cfg.max_train_steps:
                break
            stacked, metrics = step(stacked, images, labels, indices, global_step)
            sums = add_metrics(sums, metrics)
            all_finite = all_finite & jnp.isfinite(metrics["loss"])
            global_step += 1
            steps_done += 1
        bar.close()
        if steps_done == 0:
            break
        seconds = time.perf_counter() - epoch_start
        for i, run in enumerate(progress):
            if run.diverged:
                continue
            state = _unstack(stacked, i)
            val_accuracy = validation_accuracy(model, state, val_sets[i], roots[i][3], epoch,
                                               configs[i], method)
            run.end_epoch(epoch, state, epoch_means(_unstack(sums, i), steps_done),
                          bool(all_finite[i]), val_accuracy, seconds,
                          lambda m, s=seeds[i]: log(f"[seed {s}]{m}"))
    seconds = time.perf_counter() - start
    return [run.outcome(model, _unstack(stacked, i), seconds) for i, run in enumerate(progress)]
