"""Many independent runs (seeds) of one experiment, aggregated (method.md §5, Table III).

Seed ``cfg.seed + i`` runs into ``out/seed-<seed>/`` as a complete single-seed
experiment (own init, data order, validation split and noise keys; resumable on
its own). ``out/results.json`` then holds, per method and σ, the per-seed mean
accuracies, their mean ± 95 % CI over seeds, and the number of runs that did not
converge (more than 5 points from the mean over seeds, or no result because the loss
diverged before any epoch was kept; a run that diverged later is judged by its kept epoch).

Two ways to run the seeds (``seed_mode``), with the same files either way:

* ``sequential``: one complete experiment after another.
* ``vmap``: per method, the N trainings are one jitted program ``vmap``-ped over
  a leading run axis of the train state (own init, data order, validation split
  and step keys per seed, as in the sequential run); each seed is then evaluated
  and checkpointed as in the sequential run. On GPUs a small model leaves most
  of the device idle, so stacking runs fills it.
* ``auto`` (default) picks ``sequential`` on CPU, where a ``vmap`` over params
  turns every convolution into a grouped one that XLA's CPU backend runs several
  times slower than a loop (docs/studies/speed_cpu.md); with several local devices (which
  data-parallel training already fills); and for full-width models on a GPU/TPU,
  which one run fills (an H200 trained 8 vmapped VGG-8 seeds at 0.90× the speed
  of one run). It picks ``vmap`` for reduced-width models on one GPU/TPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable

import jax

from neft_jax.evaluate import make_test_set
from neft_jax.harness import data as data_lib
from neft_jax.harness.config import SEED_MODES, ExperimentConfig
from neft_jax.harness.evaluation import train_and_test_record
from neft_jax.harness.identity import fingerprint, identity
from neft_jax.harness.loop import train_runs
from neft_jax.harness.orchestration import (
    check_batch_size,
    prepare_out_dir,
    prune_checkpoints,
    run_experiment,
    start_results,
    with_recorded_micro_batch,
)
from neft_jax.harness.reporting import write_results
from neft_jax.harness.results import Evaluation, MethodResult, RunResults
from neft_jax.harness.runtime import environment
from neft_jax.harness.tuning import with_tuned_micro_batch
from neft_jax.stats import summarize_over_seeds


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The single-seed experiment of ``seed`` inside ``cfg.out``."""
    return dataclasses.replace(cfg, seed=seed, seeds=1,
                               out=os.path.join(cfg.out, f"seed-{seed}"), overwrite=False)


def seed_list(cfg: ExperimentConfig, count: int | None = None) -> list[int]:
    """The seeds of ``cfg``: ``cfg.seed … cfg.seed + n − 1`` with n = ``count`` or ``cfg.seeds``."""
    return [cfg.seed + i for i in range(cfg.seeds if count is None else count)]


def aggregate_seeds(cfg: ExperimentConfig, per_seed: dict[int, RunResults],
                    tolerance_pct: float = 5.0) -> RunResults:
    """Combine single-seed results into mean ± CI over seeds and a non-convergence count."""
    seeds = sorted(per_seed)
    methods = {}
    for method in cfg.methods:
        evaluations = {}
        for sigma in cfg.eval_sigmas:
            means, ekls, diverged = [], [], []
            for seed in seeds:
                entry = per_seed[seed].methods[method]
                evaluation = entry.at(sigma)
                summary = evaluation.summary if evaluation else None
                if entry.diverged or summary is None:
                    diverged.append(seed)
                means.append(summary["mean"] if summary else math.nan)
                ekls.append(summary["ekl"] if summary else math.nan)
            summary, not_converged = summarize_over_seeds(means, ekls, tolerance_pct)
            evaluations[sigma] = Evaluation(sigma=sigma, summary=summary, seed_means=means,
                                            not_converged=not_converged,
                                            diverged_seeds=diverged)
        alphas = {per_seed[s].methods[method].alpha for s in seeds}
        cleans = [per_seed[s].methods[method].clean_accuracy for s in seeds]
        methods[method] = MethodResult(
            alpha=alphas.pop() if len(alphas) == 1 else sorted(alphas), evaluations=evaluations,
            clean_accuracy=None if None in cleans else sum(cleans) / len(cleans))
    settings = {**cfg.to_dict(), "fingerprint": fingerprint(identity(cfg)),
                "eval_sigmas": list(cfg.eval_sigmas), "seeds": seeds,
                "accuracy_unit": "percent", "ekl_unit": "nats",
                "aggregate": "per-seed Monte Carlo means; mean ± Student-t 95 % CI over seeds"}
    return RunResults(settings=settings, environment=environment(), methods=methods,
                      per_seed_results={str(s): os.path.join(f"seed-{s}", "results.json")
                                        for s in seeds})


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


def run_seeds(cfg: ExperimentConfig, log: Callable[[str], None] = print,
              show_progress: bool = True) -> RunResults:
    """Run seeds ``cfg.seed … cfg.seed + cfg.seeds − 1`` and aggregate them.

    ``cfg.seed_mode`` ``auto`` is resolved with :func:`choose_seed_mode` (see the
    module docstring). The α search always runs sequentially.
    """
    mode, why = choose_seed_mode(cfg.seed_mode, jax.default_backend(), jax.local_device_count(),
                                 cfg.width)
    how = "in one vmapped program per method" if mode == "vmap" else "in sequence"
    log(f"seeds: {cfg.seeds} independent runs ({cfg.seed}…{cfg.seed + cfg.seeds - 1}) {how} "
        f"({why}), each in its own seed-<n>/ folder")
    # The data first: missing data stops the run before a folder is made or a conv is timed.
    check_batch_size(cfg, data_lib.load_dataset(cfg.dataset, cfg.data_dir))
    # Tuned (or the resumed run's) before the folder's settings.json records it.
    cfg = with_tuned_micro_batch(with_recorded_micro_batch(cfg, log), log)
    with contextlib.ExitStack() as locks:
        prepare_out_dir(cfg, locks)
        started = time.perf_counter()
        seeds = seed_list(cfg)
        if mode == "vmap" and not cfg.alpha_search:
            with jax.default_matmul_precision(cfg.matmul_precision):
                per_seed = _run_seeds_vmapped(cfg, seeds, log, show_progress, locks)
        else:
            per_seed = {}
            for i, seed in enumerate(seeds):
                log(f"seed {seed} ({i + 1}/{len(seeds)})")
                per_seed[seed] = run_experiment(seed_config(cfg, seed), log=log,
                                                show_progress=show_progress)
        results = aggregate_seeds(cfg, per_seed)
        results.settings["seed_mode"] = mode
        # Like one seed's, the wall time includes earlier launches: each seed's results
        # hold their own (in sequence they add up; vmapped seeds share one clock).
        earlier = [r.wall_seconds for r in per_seed.values()]
        results.wall_seconds = max(time.perf_counter() - started, max(earlier, default=0.0)
                                   if mode == "vmap" else sum(earlier))
        write_results(cfg.out, results)
        return results


def _run_seeds_vmapped(cfg: ExperimentConfig, seeds: list[int], log, show_progress,
                       locks: contextlib.ExitStack) -> dict[int, RunResults]:
    """Per method: train all seeds in one vmapped program, then evaluate each seed."""
    dataset = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
    test_set = make_test_set(dataset.test_images, dataset.test_labels, cfg.eval_batch_size)
    configs = {seed: seed_config(cfg, seed) for seed in seeds}
    per_seed = {}
    for seed, sub in configs.items():
        previous = prepare_out_dir(dataclasses.replace(sub, resume=True), locks)
        train_idx, val_idx = data_lib.validation_indices(dataset.train_labels,
                                                         cfg.val_fraction, seed)
        per_seed[seed] = start_results(sub, previous, len(train_idx), len(val_idx),
                                       len(dataset.test_labels))
    started = time.perf_counter()
    earlier = {seed: results.wall_seconds for seed, results in per_seed.items()}
    for method in cfg.methods:
        todo = [s for s in seeds if not (method in per_seed[s].methods
                                         and per_seed[s].methods[method].done(cfg.eval_sigmas))]
        if not todo:
            log(f"{method}: already done for every seed, skipped")
            continue
        log(f"{method}: training seeds {todo} together (one vmapped program)")
        alpha = cfg.alpha_for(method)
        outcomes = train_runs([configs[s] for s in todo],
                              dataset, method, alpha, vmapped=True, log=log,
                              show_progress=show_progress)
        for seed, outcome in zip(todo, outcomes, strict=True):
            log(f"seed {seed}:")
            per_seed[seed].methods[method] = train_and_test_record(
                configs[seed], method, outcome, alpha, test_set, log, show_progress)
            per_seed[seed].wall_seconds = earlier[seed] + time.perf_counter() - started
            write_results(configs[seed].out, per_seed[seed])
            prune_checkpoints(configs[seed].checkpoint_dir(method, alpha), cfg.keep_checkpoints)
    return per_seed
