"""Many independent runs (seeds) of one experiment, aggregated (SPEC §5, Table III).

Seed ``cfg.seed + i`` runs into ``out/seed-<seed>/`` as a complete single-seed
experiment (own init, data order, validation split and noise keys; resumable on
its own). ``out/results.json`` then holds, per method and σ, the per-seed mean
accuracies, their mean ± 95 % CI over seeds, and the number of runs that did not
converge (more than 5 points from the mean over seeds, or diverged).

On this CPU backend the seeds run one after another: a ``vmap`` over a run axis
turns every convolution into a grouped convolution, which XLA's CPU backend runs
several times slower than a loop (see docs/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import numpy as np

from neft_jax.evaluate import count_not_converged, summarize
from neft_jax.experiment import (
    ExperimentConfig,
    environment,
    prepare_out_dir,
    run_experiment,
    write_results,
)


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
            finite = [m for m in means if math.isfinite(m)]
            summary = summarize(finite) if finite else None
            if summary is not None:
                summary["ekl"] = float(np.nanmean(ekls))
            evaluations[label] = {
                "sigma": sigma,
                "seed_means": means,
                "summary": summary,
                "not_converged": count_not_converged(np.asarray(means) / 100,
                                                     tolerance_pct / 100),
                "diverged_seeds": diverged,
            }
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


def run_seeds(cfg: ExperimentConfig, num_seeds: int, log: Callable[[str], None] = print,
              show_progress: bool = True) -> dict:
    """Run seeds ``cfg.seed … cfg.seed + num_seeds − 1`` in sequence and aggregate them."""
    if not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or num_seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {num_seeds!r}")
    prepare_out_dir(cfg)
    started = time.perf_counter()
    per_seed = {}
    for i in range(num_seeds):
        seed = cfg.seed + i
        log(f"seed {seed} ({i + 1}/{num_seeds})")
        sub = seed_config(cfg, seed)
        per_seed[seed] = run_experiment(sub, log=log, show_progress=show_progress)
    results = aggregate_seeds(cfg, per_seed)
    results["wall_seconds"] = time.perf_counter() - started
    write_results(cfg.out, results)
    return results
