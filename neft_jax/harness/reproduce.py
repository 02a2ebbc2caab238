"""The paper's experiments as one resumable plan (stages: :mod:`neft_jax.harness.plan`).

:func:`run_plan` runs, per model, each unfinished stage into ``out/`` (a sweep or a
multi-seed run that skips finished work when re-launched) and rewrites the report
(:mod:`neft_jax.harness.paper_report`) after each. With a :class:`Budget` it starts
a cell only if its measured time says it ends before the budget, and otherwise
stops cleanly with everything finished saved; the same command continues later.
Stages reuse finished cells of other stages that are the same experiment (Table
III the σ = 0.6 cells of Table II; Table II, the control and the fair baseline
those of ``core``), as relative symlinks, so an output folder can move.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from neft_jax.harness.budget import Budget, BudgetExhausted
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.locking import FolderBusy
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.paper_report import write_report
from neft_jax.harness.plan import (
    ABLATION_SIGMA,
    BUDGET_STAGES,
    CONTROL_ALPHA,
    CORE_METHODS,
    STAGES,
    TABLE2_SIGMAS,
    TABLE3_SIGMA,
    VANILLA_SIGMAS,
    Plan,
    stage_dir,
)
from neft_jax.harness.seeds import run_seeds
from neft_jax.harness.sweeps import ALONE, Worker, grid_cells, run_sweep
from neft_jax.models import MODELS

__all__ = ["BUDGET_STAGES", "STAGES", "TABLE2_SIGMAS", "Plan", "run_plan", "write_report"]


def run_plan(base: ExperimentConfig, plan: Plan, out: str,
             log: Callable[[str], None] = print, show_progress: bool = True,
             budget: Budget | None = None, worker: Worker | None = None) -> dict:
    """Run every unfinished stage of ``plan`` into ``out``; write and return the report.

    With ``budget``, stops before a cell that would not end in time; the report then
    holds what finished and ``report["stopped"]`` says why. With ``worker`` I/N, this
    process takes every N-th cell of each grid stage and every N-th multi-seed run
    (vanilla sweep, Table V variant, α search) of the plan; without it, workers on one
    ``out`` share the work by locks. On a CPU each run measures (or reads from the cache)
    its own model's conv backward micro-batch unless ``base`` sets one.
    """
    os.makedirs(out, exist_ok=True)
    budget = budget or Budget(None)
    stopped = None
    run = _Runner(plan, out, log, show_progress, budget, worker or ALONE)
    try:
        for model in plan.models:
            cfg = dataclasses.replace(base, model=model, resume=True, overwrite=False,
                                      extra_sigmas=(), seeds=1)
            for stage in plan.stages:
                log(f"== {model}: {stage}")
                run.stage(stage, cfg)
                write_report(out, plan, base)
    except BudgetExhausted as reason:
        stopped = str(reason)
        log(f"stopped before the time budget: {stopped}; rerun the same command to continue")
    report = write_report(out, plan, base)
    report["stopped"] = stopped
    return report


def _seeds(cfg: ExperimentConfig, count: int) -> list[int]:
    return list(range(cfg.seed, cfg.seed + count))


@dataclasses.dataclass
class _Runner:
    """Runs the stages of one plan launch; counts its multi-seed runs for the worker split."""

    plan: Plan
    out: str
    log: Callable[[str], None]
    show_progress: bool
    budget: Budget
    worker: Worker
    runs_seen: int = 0

    def sweep(self, cfg, path, methods, sigmas, alphas, seeds) -> None:
        cells = grid_cells([cfg.model], [cfg.dataset], methods, sigmas, alphas, seeds)
        run_sweep(cells, cfg, path, log=self.log, show_progress=self.show_progress,
                  budget=self.budget, worker=self.worker)

    def seeds_run(self, what: str, job: Callable[[], object]) -> None:
        """A multi-seed run (or the α search): this worker's share, skipped when another
        worker holds its folder; started only with time left."""
        position, self.runs_seen = self.runs_seen, self.runs_seen + 1
        if not self.worker.takes(position):
            return
        self.budget.check(what, None)
        try:
            job()
        except FolderBusy:
            self.log(f"{what}: held by another worker, skipped")

    def stage(self, stage: str, cfg: ExperimentConfig) -> None:
        plan, out, model = self.plan, self.out, cfg.model
        path = stage_dir(out, stage, model)
        seeds = _seeds(cfg, plan.seeds)
        core = stage_dir(out, "core", model)
        run = {"log": self.log, "show_progress": self.show_progress}
        if stage == "core":
            self.sweep(cfg, path, CORE_METHODS, plan.core_sigmas, [None, CONTROL_ALPHA], seeds)
        elif stage == "table2":
            _link_cells(core, path,
                        lambda n: "-noise-" in n or "-irs-" in n and "alphadefault" in n)
            self.sweep(cfg, path, ["noise", "irs"], plan.sigmas, [None], seeds)
        elif stage == "table3":
            _link_cells(stage_dir(out, "table2", model), path,
                        lambda n: f"-sigma{TABLE3_SIGMA:g}-" in n)
            self.sweep(cfg, path, ["noise", "irs"], [TABLE3_SIGMA], [None],
                       _seeds(cfg, plan.table3_seeds))
        elif stage == "control":
            _link_cells(core, path, lambda n: f"-irs-sigma{ABLATION_SIGMA:g}-alpha1e-09-" in n)
            self.sweep(cfg, path, ["irs"], [ABLATION_SIGMA], [CONTROL_ALPHA], seeds)
        elif stage == "scaled":
            _link_cells(core, path, lambda n: f"-noise_scaled-sigma{ABLATION_SIGMA:g}-" in n)
            self.sweep(cfg, path, ["noise_scaled"], [ABLATION_SIGMA], [None], seeds)
        elif stage == "ovf":
            self.sweep(cfg, path, ["ovf"], plan.sigmas, [None], seeds)
        elif stage == "vanilla":
            sigmas = sorted(set(VANILLA_SIGMAS) | set(plan.sigmas))
            self.seeds_run(f"stage vanilla of {model}", lambda: run_seeds(dataclasses.replace(
                cfg, methods=("vanilla",), sigma=0.0, extra_sigmas=tuple(sigmas), out=path,
                seeds=plan.seeds), **run))
        elif stage == "table5":
            variants = {f"drop{i}": {"drop_exits": (i,)}
                        for i in range(1, MODELS[model].num_exits + 1)}
            variants["equal"] = {"equal_coefficients": True}
            for name, change in variants.items():
                self.seeds_run(f"stage table5 ({name}) of {model}", lambda change=change,
                               name=name: run_seeds(dataclasses.replace(
                                   cfg, methods=("irs",), sigma=ABLATION_SIGMA,
                                   out=stage_dir(out, "table5", model, name),
                                   seeds=plan.table5_seeds, **change), **run))
        elif stage == "alpha":
            self.seeds_run(f"stage alpha of {model}", lambda: run_experiment(dataclasses.replace(
                cfg, methods=("irs",), sigma=ABLATION_SIGMA, alpha_search=True, out=path),
                **run))


def _link_cells(source: str, target: str, keep: Callable[[str], bool]) -> None:
    """Reuse the cells of ``source`` whose names ``keep`` accepts, as relative symlinks."""
    cells = os.path.join(source, "cells")
    if not os.path.isdir(cells):
        return
    os.makedirs(os.path.join(target, "cells"), exist_ok=True)
    for name in os.listdir(cells):
        link = os.path.join(target, "cells", name)
        if keep(name) and not os.path.lexists(link):
            os.symlink(os.path.relpath(os.path.join(cells, name), os.path.dirname(link)), link)
