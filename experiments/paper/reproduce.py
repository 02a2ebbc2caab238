"""The paper's experiments as one resumable plan (stages: :mod:`paper.plan`).

:func:`run_plan` runs each unfinished step of the plan (a stage of a model) into ``out/``
(a sweep or a multi-seed run that skips finished work when re-launched), rewrites
REPORT.md and report.json (:mod:`paper.report`) after each and the plots when it ends or
stops. With a :class:`Budget` it starts
a cell only if its measured time says it ends before the budget, and otherwise
stops cleanly with everything finished saved; the same command continues later.
A grid stage reuses the cells another stage of the same model already has, finished
or half-done, whatever order the stages ran in: a cell's name is its experiment (model,
dataset, method, σ, α, seed), so Table III takes Table II's σ = 0.6 cells, Table II, the
control and the fair baseline take ``core``'s, and ``core`` theirs. They are linked as
relative symlinks, so an output folder can move, and only when made with this command's
settings; the cells of every grid stage are also checked before anything trains
(:func:`~neft_jax.harness.sweeps.check_cell_groups`), and the multi-seed runs when they start
(their ``--resume`` check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import (
    Budget,
    BudgetExhausted,
    cost_key,
    estimate_seconds,
)
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.locking import FolderBusy
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.paper import ALPHA_GRID
from neft_jax.harness.seeds import run_seeds, seed_config, seed_list
from neft_jax.harness.sweeps import (
    ALONE,
    Cell,
    Worker,
    cell_done,
    cell_done_as_given,
    check_cell_groups,
    grid_cells,
    made_otherwise,
    run_sweep,
)
from neft_jax.models import MODELS

from .plan import (
    ABLATION_SIGMA,
    BUDGET_STAGES,
    CONTROL_ALPHA,
    CORE_GRID_METHODS,
    STAGES,
    TABLE2_METHODS,
    TABLE2_SIGMAS,
    Plan,
    stage_dir,
    vanilla_sigmas,
)
from .published import table3_sigma
from .report import write_report

__all__ = ["BUDGET_STAGES", "STAGES", "TABLE2_SIGMAS", "Plan", "run_plan", "trainings_of_plan",
           "write_report"]


def run_plan(base: ExperimentConfig, plan: Plan, out: str,
             log: Callable[[str], None] = print, show_progress: bool = True,
             budget: Budget | None = None, worker: Worker | None = None) -> dict:
    """Run every unfinished stage of ``plan`` into ``out``; write and return the report.

    With ``budget``, stops before a cell that would not end in time; the report then
    holds what finished and ``report["stopped"]`` says why. With ``worker`` I/N, this
    process takes every N-th cell of each grid stage and every N-th multi-seed run
    (Table V variant, α search) of the plan; without it, workers on one
    ``out`` share the work by locks. On a CPU each run measures (or reads from the cache)
    its own model's conv backward micro-batch unless ``base`` sets one.
    """
    check_plan(base, plan, out)  # before any folder is made
    os.makedirs(out, exist_ok=True)
    budget = budget or Budget(None)
    stopped = None
    run = _Runner(plan, out, log, show_progress, budget, worker or ALONE)
    try:
        for step in plan.steps():
            at = "" if step.sigma is None else f" at σ = {step.sigma:g}"
            log(f"== {step.model}: {step.stage}{at}")
            run.stage(step.stage, stage_config(base, step.model), step.sigma)
            write_report(out, plan, base, plots=False)  # the plots at the end: ≈ 2 s each time
    except BudgetExhausted as reason:
        stopped = str(reason)
        log(f"stopped before the time budget: {stopped}; rerun the same command to continue")
    except BaseException:  # stopped otherwise (SIGTERM, Ctrl-C, an error): the report so far
        with contextlib.suppress(Exception):
            write_report(out, plan, base)
        raise
    report = write_report(out, plan, base)
    report["stopped"] = stopped
    return report


def check_plan(base: ExperimentConfig, plan: Plan, out: str) -> None:
    """What :func:`run_plan` checks before anything trains, in seconds: the dataset is
    there, the α stage has a held-out split, and every finished or half-done cell in
    ``out`` was made with ``base``'s settings. ValueError (or the data's own error) when
    not."""
    data_lib.check_available(base.dataset, base.data_dir)
    if "alpha" in plan.stages and base.val_fraction == 0:
        raise ValueError("the alpha stage's α search is scored on a held-out split, which "
                         "--val-fraction 0 leaves out: give --val-fraction > 0 or leave the "
                         "stage out of --stages")
    check_cell_groups([(grid_cells([model], [base.dataset], *grid), cfg,
                        stage_dir(out, stage, model))
                       for model in plan.models for step_stage in plan.stages
                       for stage, cfg, grid in stage_grids(step_stage, plan,
                                                           stage_config(base, model))
                       ])  # every grid's cells made alike


def stage_config(base: ExperimentConfig, model: str) -> ExperimentConfig:
    """The settings every stage of ``model`` starts from."""
    return dataclasses.replace(base, model=model, resume=True, overwrite=False,
                               extra_sigmas=(), seeds=1)


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

    def sweep(self, stage, cfg, methods, sigmas, alphas, seeds) -> None:
        cells = grid_cells([cfg.model], [cfg.dataset], methods, sigmas, alphas, seeds)
        link_shared_cells(self.out, stage, cfg, cells)
        if len(cfg.eval_sigmas) > 1:
            self.check_many_sigmas(stage, cfg, cells)
        run_sweep(cells, cfg, stage_dir(self.out, stage, cfg.model), log=self.log,
                  show_progress=self.show_progress, budget=self.budget, worker=self.worker)

    def seeds_run(self, what: str, runner: Callable[..., object],
                  job: ExperimentConfig) -> None:
        """A multi-seed run or the α search (``runner(job)``): this worker's share, skipped
        when another worker holds its folder; started only if its unfinished trainings,
        at the measured time of cells like them, should end in time (with some time
        left while nothing is measured)."""
        position, self.runs_seen = self.runs_seen, self.runs_seen + 1
        if not self.worker.takes(position):
            return
        left = trainings_left(job)
        if left:
            method, = job.methods
            one = estimate_seconds(self.budget.durations,
                                   cost_key(method, job.model, job.width, job.epochs))
            self.budget.check(what, None if one is None else one * left)
        try:
            runner(job, log=self.log, show_progress=self.show_progress)
        except FolderBusy:
            self.log(f"{what}: held by another worker, skipped")

    def check_many_sigmas(self, stage: str, cfg: ExperimentConfig, cells: list[Cell]) -> None:
        """Before the first cell of a grid scored at n σ (the vanilla stage) is measured,
        the cells it is sized from score one σ: one of its cells costs about
        1 + share·(n − 1) of theirs (:func:`evaluation_share`); BudgetExhausted when the
        first unfinished cell of this worker's share would not end in time."""
        path = stage_dir(self.out, stage, cfg.model)
        finished = [cell_done_as_given(os.path.join(path, "cells", c.name), c, cfg)
                    for c in cells]
        todo = [c for i, c in enumerate(cells) if self.worker.takes(i) and not finished[i]]
        if not todo or any(finished):  # a finished cell measures the rest itself
            return
        key = cost_key(todo[0].method, cfg.model, cfg.width, cfg.epochs)
        one = estimate_seconds(self.budget.durations, key)
        if one is not None and not self.budget.durations.get(key):
            one *= 1 + evaluation_share(self.out, cfg.model) * (len(cfg.eval_sigmas) - 1)
            self.budget.check(todo[0].name, one)

    def stage(self, stage: str, cfg: ExperimentConfig, sigma: float | None = None) -> None:
        """Run ``stage`` of ``cfg.model`` (a grid stage only at ``sigma`` when given)."""
        for name, cell_cfg, grid in stage_grids(stage, self.plan, cfg, sigma):
            self.sweep(name, cell_cfg, *grid)
        for what, job in stage_jobs(stage, self.plan, cfg, self.out):
            self.seeds_run(what, run_experiment if job.alpha_search else run_seeds, job)


def evaluation_share(out: str, model: str, default: float = 0.5) -> float:
    """The share of a finished cell's wall time that scoring one σ took, for ``model``'s
    cells in ``out`` (their mean; ``default`` before any): a job scored at n σ (the vanilla
    sweep) costs about 1 + share·(n − 1) cells. One H200 at the paper profile: 3–5 %
    (2026-11-28); a CPU at the quick profile far more."""
    import glob
    import json

    shares = []
    # each cell once: a stage links the cells it shares with another
    for path in {os.path.realpath(p) for p in glob.glob(
            os.path.join(out, f"*_{model}", "cells", "*", "results.json"))}:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            with open(path) as f:
                results = json.load(f)
            (entry,) = results["methods"].values()
            scored = [e["eval_seconds"] for e in entry["evaluations"].values()
                      if e.get("eval_seconds")]
            if len(scored) == 1:  # a cell scored at one σ (not the vanilla stage's)
                shares.append(min(1.0, scored[0] / results["wall_seconds"]))
    return sum(shares) / len(shares) if shares else default


def stage_jobs(stage: str, plan: Plan, cfg: ExperimentConfig,
               out: str) -> list[tuple[str, ExperimentConfig]]:
    """(name, config) of each job of a stage that is not a grid: each Table V variant's
    multi-seed run, the α search (``alpha_search``); none else."""
    model, path = cfg.model, stage_dir(out, stage, cfg.model)
    if stage == "table5":
        variants = {f"drop{i}": {"drop_exits": (i,)}
                    for i in range(1, MODELS[model].num_exits + 1)}
        variants["equal"] = {"equal_coefficients": True}
        return [(f"stage table5 ({name}) of {model}", dataclasses.replace(
            cfg, methods=("irs",), sigma=ABLATION_SIGMA, out=stage_dir(out, "table5", model, name),
            seeds=plan.table5_seeds, **change)) for name, change in variants.items()]
    if stage == "alpha":
        return [(f"stage alpha of {model}", dataclasses.replace(
            cfg, methods=("irs",), sigma=ABLATION_SIGMA, alpha_search=True, out=path))]
    return []


def trainings_left(job: ExperimentConfig) -> int:
    """Trainings of a one-method job not finished in its folder: one per α of the search
    (all or none: the search keeps no partial result), else one per unfinished seed
    (``run_seeds`` keeps each seed in ``seed-<n>/``)."""
    method, = job.methods
    if job.alpha_search:
        return 0 if cell_done(job.out, method) else len(ALPHA_GRID)
    return sum(not cell_done(seed_config(job, seed).out, method) for seed in seed_list(job))


def grid_of_stage(stage: str, plan: Plan, cfg: ExperimentConfig,
                  sigma: float | None = None) -> tuple | None:
    """(methods, σ, α, seeds) of a stage that is a grid of cells (the core stage only at
    ``sigma`` when given); None for the others."""
    seeds = seed_list(cfg, plan.seeds)
    core_sigmas = plan.core_sigmas if sigma is None else [sigma]
    if stage == "table5":  # "all exits" at the variants' seeds Table II and core do not train
        beyond = seed_list(cfg, plan.table5_seeds)[plan.seeds:]
        return (["irs"], [ABLATION_SIGMA], [None], beyond) if beyond else None
    return {
        "core": (CORE_GRID_METHODS, core_sigmas, [None, CONTROL_ALPHA], seeds),
        # trained clean: one cell per seed, scored at every σ (stage_grids gives its σ)
        "vanilla": (["vanilla"], [0.0], [None], seeds),
        "table2": (TABLE2_METHODS, plan.sigmas, [None], seeds),
        "table3": (["noise", "irs"], [table3_sigma(cfg.dataset)], [None],
                   seed_list(cfg, plan.table3_seeds)),
        "control": (["irs"], [ABLATION_SIGMA], [CONTROL_ALPHA], seeds),
        "scaled": (["noise_scaled"], [ABLATION_SIGMA], [None], seeds),
        "ovf": (["ovf"], plan.sigmas, [None], seeds),
        # the authors' α among them is the core stage's cell: grid_cells names it alphadefault
        "alpha_grid": (["irs"], [ABLATION_SIGMA], list(ALPHA_GRID),
                       seed_list(cfg, plan.alpha_seeds)),
    }.get(stage)


def stage_grids(stage: str, plan: Plan, cfg: ExperimentConfig, sigma: float | None = None
                ) -> list[tuple[str, ExperimentConfig, tuple]]:
    """(stage, its cells' settings, grid) of each grid a step of ``stage`` runs: its own
    (:func:`grid_of_stage`), and for the core stage also the vanilla stage's, whose cells
    are the core's vanilla numbers. The vanilla stage's cells are scored at
    :func:`~paper.plan.vanilla_sigmas`."""
    grids = []
    for name in (stage, "vanilla") if stage == "core" else (stage,):
        grid = grid_of_stage(name, plan, cfg, sigma)
        if grid is not None:
            cell_cfg = dataclasses.replace(cfg, extra_sigmas=vanilla_sigmas(plan)) \
                if name == "vanilla" else cfg
            grids.append((name, cell_cfg, grid))
    return grids


def trainings_of_plan(base: ExperimentConfig, plan: Plan, out: str | None = None
                      ) -> list[tuple[str, str, int]]:
    """Every training of ``plan`` in the order :func:`run_plan` takes them, each once (a
    cell two stages share counted once): (model, method, σ evaluated). With ``out``, only
    those not yet finished there."""
    trainings, seen = [], set()
    for step in plan.steps():
        model, stage = step.model, step.stage
        cfg = stage_config(base, model)
        for _, cell_cfg, grid in stage_grids(stage, plan, cfg, step.sigma):
            for cell in grid_cells([model], [cfg.dataset], *grid):
                if cell.name not in seen and not (
                        out and _finished_in_a_stage(out, cell, cell_cfg)):
                    trainings.append((model, cell.method, len(cell_cfg.eval_sigmas)))
                seen.add(cell.name)
        for _, job in stage_jobs(stage, plan, cfg, out or base.out):
            left = trainings_left(job) if out else (
                len(ALPHA_GRID) if job.alpha_search else job.seeds)
            if job.alpha_search:  # the search scores its chosen α only
                trainings += [(model, "irs", 0)] * (left - 1) + [(model, "irs", 1)] * (left > 0)
            else:
                trainings += [(model, job.methods[0], len(job.eval_sigmas))] * left
    return trainings


def _finished_in_a_stage(out: str, cell: Cell, cfg: ExperimentConfig) -> bool:
    """Whether any stage folder of ``out`` holds ``cell`` finished as ``cfg`` gives it: made
    with its settings and scored at its σ (what :func:`link_shared_cells` would reuse)."""
    return any(cell_done_as_given(path, cell, cfg) and made_otherwise(path, cfg, cell) is None
               for path in _in_each_stage(out, cell))


def _in_each_stage(out: str, cell: Cell, but: str | None = None) -> list[str]:
    """Where each stage of ``out`` but ``but`` keeps ``cell`` (whether or not it is there);
    for a vanilla cell also where plans before 2026-12-07 ran the vanilla stage's seed
    (``seed-<n>/``: the same experiment, which a cell links to)."""
    paths = [os.path.join(stage_dir(out, stage, cell.model), "cells", cell.name)
             for stage in STAGES if stage != but]
    if cell.method == "vanilla" and cell.sigma == 0:
        paths.append(os.path.join(stage_dir(out, "vanilla", cell.model), f"seed-{cell.seed}"))
    return paths


def link_shared_cells(out: str, stage: str, cfg: ExperimentConfig,
                      cells: list[Cell]) -> None:
    """Link into ``stage``'s folder each of its ``cells`` that another stage of ``cfg.model``
    has as a folder of its own (finished or half-done; the sweep then skips or resumes it),
    as a relative symlink; only a cell made with ``cfg``'s settings (or not yet started)."""
    target = os.path.join(stage_dir(out, stage, cfg.model), "cells")
    for cell in cells:
        link = os.path.join(target, cell.name)
        if os.path.lexists(link):
            continue
        source = next((path for path in _in_each_stage(out, cell, but=stage)
                       if os.path.isdir(path) and not os.path.islink(path)
                       and made_otherwise(path, cfg, cell) is None), None)
        if source is not None:
            os.makedirs(target, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another worker linked it first
                os.symlink(os.path.relpath(source, target), link)

