"""The paper reproduction's numbers: every finished result of a plan, one :class:`ModelReport`
per model.

:func:`collect_report` reads whatever stages of the plan have finished: Tables II, III
and V, the α search, EKL, the σ = 0 vanilla sweep and, when it ran, the core stage, also
seed by seed with the differences between its methods within each seed, paired over the
same Monte Carlo noise instances. With the command's settings, results made with other
settings are left out and named. :mod:`paper.report` writes them beside the paper's
(``report.json``: :meth:`ModelReport.to_json` per model).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import shared_differences
from neft_jax.harness.results import RunResults, sigma_key
from neft_jax.harness.sweeps import Cell, aggregate_over_seeds, collect_rows
from neft_jax.models import MODELS
from neft_jax.stats import SeedDifference, across_seeds

from .plan import (
    ABLATION_SIGMA,
    CONTROL_ALPHA,
    CORE_METHODS,
    VANILLA_SIGMAS,
    Plan,
    is_control,
    stage_dir,
)
from .published import TABLE3_SIGMA


class _Reader:
    """Reads a plan's finished results; with ``base``, leaves out (and names in
    ``other_settings``) those made with other settings than ``base`` gives every cell
    (:data:`~neft_jax.harness.identity.SHARED_KEYS`), so a report never shows them
    under ``base``'s settings."""

    def __init__(self, base: ExperimentConfig | None):
        self.base = base
        self.other_settings: dict[str, str] = {}

    def matches(self, path: str, settings: dict) -> bool:
        if self.base is None:
            return True
        changed = shared_differences(settings, self.base)
        if changed:
            self.other_settings[os.path.dirname(path)] = ", ".join(changed)
        return not changed

    def results(self, results_path: str) -> RunResults | None:
        results = RunResults.load(results_path)
        return results if self.matches(results_path, results.settings) else None

    def sweep_rows(self, path: str) -> list[dict]:
        """One row per finished cell × σ of a (partly) finished sweep directory."""
        cells = []
        for results_path in _cell_paths(path):
            results = self.results(results_path)
            if results is None:
                continue
            settings = results.settings
            cells.append(Cell(settings["model"], settings["dataset"], settings["methods"][0],
                              float(settings["sigma"]), settings["alpha"],
                              int(settings["seed"])))
        return collect_rows(cells, path)

    def sweep_table(self, path: str) -> list[dict]:
        """Mean ± CI over seeds per cell (seed left out) of a sweep directory."""
        return aggregate_over_seeds(self.sweep_rows(path))

    def seeds_results(self, path: str) -> RunResults | None:
        results_path = os.path.join(path, "results.json")
        if not os.path.exists(results_path):
            return None
        results = self.results(results_path)
        return results if results is not None and results.seeds else None


# The rows below are written to report.json field by field, in this order.
@dataclasses.dataclass(frozen=True)
class TableCell:
    """One number of a table: mean ± 95 % CI over ``seeds`` seeds (%), with its EKL (nats),
    its runs not converged and each seed's mean where known."""
    mean: float | None
    ci95: float | None
    seeds: int
    ekl: float | None = None
    not_converged: int | None = None
    seed_means: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class AlphaSearch:
    """The five-step α search: validation accuracy per α (None: diverged), the α chosen and
    its test summary at σ (the harness's summary dict)."""
    validation_accuracy: dict[str, float | None]
    chosen: float
    test: dict | None


@dataclasses.dataclass(frozen=True)
class CoreCell:
    """A finished, not diverged cell of the core stage or the α grid (``method``
    ``control``: IRS at α = 1e-9; ``irs α=<α>``: a cell of the α grid): its Monte Carlo
    mean ± CI at σ, clean accuracy, best validation accuracy (%), and the last epoch's
    ``feedback_ratio`` (RMS of α·Σ c_i z_i over RMS of z) and ``exit_accuracies`` (%,
    noisy training batches), None where the method has none. ``accuracies`` (every
    run's, paired by run with the other methods of its seed) stays out of report.json."""
    method: str
    sigma: float
    seed: int
    mean: float
    ci95: float
    clean: float | None
    feedback_ratio: float | None
    exit_accuracies: list[float] | None
    accuracies: list[float]
    best_val: float | None = None

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        del data["accuracies"]
        return data


@dataclasses.dataclass(frozen=True)
class CoreDifference:
    """a − b at σ, seed by seed, and over the seeds: ``mean`` ± ``t_ci95`` (Student-t 95 %,
    n − 1 degrees of freedom; None under two seeds)."""
    sigma: float
    a: str
    b: str
    per_seed: tuple[SeedDifference, ...]
    mean: float
    t_ci95: float | None


@dataclasses.dataclass(frozen=True)
class AlphaGrid:
    """The α grid at σ = 0.4: its cells (``method`` ``irs α=<α>``) seed by seed, each α's
    mean ± Student-t interval over seeds (α → (mean, t_ci95, seeds)), and each α's
    differences with the control, noise injection and noise_scaled of the same seed."""
    cells: tuple[CoreCell, ...]
    over_seeds: dict[str, tuple[float, float | None, int]]
    differences: tuple[CoreDifference, ...]
    diverged: tuple[tuple[str, int], ...] = ()  # (α, seed) of the cells that diverged

    def to_json(self) -> dict:
        return {"cells": [c.to_json() for c in self.cells],
                "diverged": [list(d) for d in self.diverged],
                "over_seeds": {a: dict(zip(("mean", "t_ci95", "seeds"), v, strict=True))
                               for a, v in self.over_seeds.items()},
                "differences": [dataclasses.asdict(d) for d in self.differences]}


@dataclasses.dataclass(frozen=True)
class ModelReport:
    """Every finished number of one model of the plan. ``core`` is the core sweep's table
    as the harness aggregates it; ``table2`` is method → σ → cell, the other tables name
    → cell (None: not finished); ``other_settings`` names the results left out (path →
    the settings that differ)."""
    core: list[dict]
    core_by_seed: tuple[CoreCell, ...]
    core_differences: tuple[CoreDifference, ...]
    table2: dict[str, dict[str, TableCell | None]]
    vanilla_sweep: dict[str, TableCell | None]
    table3: dict[str, TableCell | None]
    table5: dict[str, TableCell | None]
    alpha_search: AlphaSearch | None
    alpha_grid: AlphaGrid | None = None
    other_settings: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """This model's entry of report.json, ``other_settings`` only where there are any."""
        report = {"core": self.core,
                  "core_by_seed": [cell.to_json() for cell in self.core_by_seed],
                  "core_differences": [dataclasses.asdict(d) for d in self.core_differences],
                  "table2": {method: _cells_json(cells) for method, cells in self.table2.items()},
                  "vanilla_sweep": _cells_json(self.vanilla_sweep),
                  "table3": _cells_json(self.table3), "table5": _cells_json(self.table5),
                  "alpha_search": None if self.alpha_search is None
                  else dataclasses.asdict(self.alpha_search),
                  "alpha_grid": None if self.alpha_grid is None else self.alpha_grid.to_json()}
        if self.other_settings:
            report["other_settings"] = dict(self.other_settings)
        return report


def _cells_json(cells: dict[str, TableCell | None]) -> dict[str, dict | None]:
    return {key: None if cell is None else dataclasses.asdict(cell)
            for key, cell in cells.items()}



def _from_sweep(table, method, sigma, alpha=None) -> TableCell | None:
    for row in table:
        if (row["method"] == method and math.isclose(row["sigma"], sigma)
                and math.isclose(row["eval_sigma"], sigma)
                and (alpha is None or (row["alpha"] and math.isclose(row["alpha"], alpha)))
                and row["mean"] is not None):
            return TableCell(row["mean"], row["ci95"], row["seeds"], row["ekl"],
                             row["not_converged"])
    return None


def _from_seeds(results: RunResults | None, method, sigma) -> TableCell | None:
    if results is None or method not in results.methods:
        return None
    evaluation = results.methods[method].at(sigma)
    if not evaluation or not evaluation.summary:
        return None
    s = evaluation.summary
    return TableCell(s["mean"], s["ci95"], len(evaluation.seed_means), s.get("ekl"),
                     evaluation.not_converged, tuple(evaluation.seed_means))


def collect_report(out: str, plan: Plan,
                   base: ExperimentConfig | None = None) -> dict[str, ModelReport]:
    """Every finished number of the plan, per model (percent, nats). With
    ``base``, results made with other settings than ``base`` gives them are left out and
    listed under ``other_settings`` (path → the settings that differ)."""
    report = {}
    for model in plan.models:
        read = _Reader(base)
        table2 = read.sweep_table(stage_dir(out, "table2", model))
        vanilla = read.seeds_results(stage_dir(out, "vanilla", model))
        control = read.sweep_table(stage_dir(out, "control", model))
        scaled = read.sweep_table(stage_dir(out, "scaled", model))
        ovf = read.sweep_table(stage_dir(out, "ovf", model))
        rows = {
            "vanilla": {sigma_key(s): _from_seeds(vanilla, "vanilla", s) for s in plan.sigmas},
            "noise": {sigma_key(s): _from_sweep(table2, "noise", s) for s in plan.sigmas},
            "noise_scaled: CE(z/(s+1))": {sigma_key(s): _from_sweep(table2, "noise_scaled", s)
                                          or (_from_sweep(scaled, "noise_scaled", s)
                                              if math.isclose(s, ABLATION_SIGMA) else None)
                                          for s in plan.sigmas},
            "irs": {sigma_key(s): _from_sweep(table2, "irs", s) for s in plan.sigmas},
            "irs α→0 (control)": {sigma_key(ABLATION_SIGMA): _from_sweep(
                control, "irs", ABLATION_SIGMA, CONTROL_ALPHA)},
            "ovf": {sigma_key(s): _from_sweep(ovf, "ovf", s) for s in plan.sigmas},
        }
        table3 = read.sweep_table(stage_dir(out, "table3", model))
        table5 = {}
        for i in range(1, MODELS[model].num_exits + 1):
            table5[f"without exit {i}"] = _from_seeds(
                read.seeds_results(stage_dir(out, "table5", model, f"drop{i}")), "irs",
                ABLATION_SIGMA)
        table5["equal coefficients"] = _from_seeds(
            read.seeds_results(stage_dir(out, "table5", model, "equal")), "irs",
            ABLATION_SIGMA)
        table5["all exits"] = _paired_all_exits(read, out, model, table5)
        alpha_path = os.path.join(stage_dir(out, "alpha", model), "results.json")
        alpha = None
        alpha_results = read.results(alpha_path) if os.path.exists(alpha_path) else None
        if alpha_results is not None:
            entry = alpha_results.methods.get("irs")
            if entry and entry.alpha_search is not None:
                test = entry.at(ABLATION_SIGMA)
                alpha = AlphaSearch(entry.alpha_search, entry.alpha,
                                    test.summary if test else None)
        core_cells = _core_cells(read, stage_dir(out, "core", model))
        report[model] = ModelReport(
            core=read.sweep_table(stage_dir(out, "core", model)),
            core_by_seed=tuple(cell for _, cell in sorted(core_cells.items(), key=_core_order)),
            core_differences=core_differences(core_cells),
            alpha_grid=_alpha_grid(read, stage_dir(out, "alpha_grid", model), core_cells),
            table2=rows,
            vanilla_sweep={sigma_key(s): _from_seeds(vanilla, "vanilla", s)
                           for s in VANILLA_SIGMAS},
            table3={m: _from_sweep(table3, m, TABLE3_SIGMA) for m in ("noise", "irs")},
            table5=table5,
            alpha_search=alpha,
            other_settings=dict(sorted(read.other_settings.items())))
    return report


#: The core stage's differences (a − b within each seed), each NeFT-like method against
#: noise injection, then IRS against the two that share eq. (1)'s logit scaling.
CORE_PAIRS = (("irs", "noise"), ("noise_scaled", "noise"), ("control", "noise"),
              ("irs", "control"), ("irs", "noise_scaled"))


def _core_order(item) -> tuple:
    """σ, then the core stage's order of methods (the control after IRS), then seed."""
    (name, sigma, seed), _ = item
    order = (*CORE_METHODS, "control")
    return sigma, order.index(name) if name in order else len(order), name, seed


def _core_cells(read: _Reader, path: str, alpha_grid: bool = False,
                diverged: list[tuple[str, int]] | None = None
                ) -> dict[tuple[str, float, int], CoreCell]:
    """The finished, not diverged cells of a core (or, with ``alpha_grid``, an α grid)
    stage by (name, σ, seed): the name ``control`` for IRS at α = 1e-9, ``irs α=<α>``
    for every IRS cell of an α grid. Diverged cells are left out, and added to
    ``diverged`` as (α, seed) when it is given (one pass over the cells' files)."""
    cells = {}
    for results_path in _cell_paths(path):
        results = read.results(results_path)
        if results is None:
            continue
        settings = results.settings
        (method, entry), = results.methods.items()
        alpha, sigma = settings["alpha"], float(settings["sigma"])
        evaluation = entry.at(sigma)
        if entry.diverged and diverged is not None:
            diverged.append((f"{entry.alpha:g}", int(settings["seed"])))
        if entry.diverged or evaluation is None or not evaluation.accuracies:
            continue
        control = is_control(method, alpha)
        last = entry.history[-1] if entry.history else {}
        name = f"irs α={entry.alpha:g}" if alpha_grid else "control" if control else method
        seed = int(settings["seed"])
        cells[(name, sigma, seed)] = CoreCell(
            method=name, sigma=sigma, seed=seed, mean=evaluation.mean,
            ci95=evaluation.summary["ci95"], clean=entry.clean_accuracy,
            feedback_ratio=last.get("feedback_ratio"),
            exit_accuracies=last.get("exit_accuracies"), accuracies=evaluation.accuracies,
            best_val=entry.best_val_accuracy)
    return cells


#: Each α of the grid against these cells of its seed (σ = 0.4, from the core stage).
ALPHA_BASELINES = ("control", "noise", "noise_scaled")


def _alpha_grid(read: _Reader, path: str,
                core_cells: dict[tuple[str, float, int], CoreCell]) -> AlphaGrid | None:
    """The α grid's finished cells (largest α first), each α over its seeds, and its
    differences with :data:`ALPHA_BASELINES` of the same seed; None before any finished."""
    found_diverged: list[tuple[str, int]] = []
    cells = _core_cells(read, path, alpha_grid=True, diverged=found_diverged)
    diverged = tuple(sorted(found_diverged))
    if not cells and not diverged:
        return None
    alphas = sorted({name for name, _, _ in cells}, key=lambda n: -float(n.split("=")[1]))
    ordered = tuple(cells[key] for key in sorted(
        cells, key=lambda k: (alphas.index(k[0]), k[2])))
    over_seeds = {}
    for name in alphas:
        means = [c.mean for c in ordered if c.method == name]
        over_seeds[name.split("=")[1]] = (*across_seeds(means), len(means))
    baselines = {k: c for k, c in core_cells.items()
                 if k[0] in ALPHA_BASELINES and math.isclose(k[1], ABLATION_SIGMA)}
    pairs = tuple((name, base) for name in alphas for base in ALPHA_BASELINES)
    return AlphaGrid(ordered, over_seeds, core_differences({**cells, **baselines}, pairs),
                     diverged)


def core_differences(cells: dict[tuple[str, float, int], CoreCell],
                     pairs: Sequence[tuple[str, str]] = CORE_PAIRS
                     ) -> tuple[CoreDifference, ...]:
    """For each σ and pair of ``pairs`` with cells at a common seed: a − b per seed, mean
    ± 95 % CI paired over the Monte Carlo runs (both cells of a seed are scored on the
    same noise keys), and the seeds' mean with its Student-t interval."""
    from neft_jax.stats import paired_summary

    rows = []
    for sigma in sorted({s for _, s, _ in cells}):
        for a, b in pairs:
            per_seed = []
            for seed in sorted({seed for _, _, seed in cells}):
                x, y = cells.get((a, sigma, seed)), cells.get((b, sigma, seed))
                d = x and y and paired_summary(x.accuracies, y.accuracies)
                if d:
                    per_seed.append(SeedDifference(seed, d["mean"], d["ci95"]))
            if per_seed:
                mean, t_ci95 = across_seeds([p.difference for p in per_seed])
                rows.append(CoreDifference(sigma, a, b, tuple(per_seed), mean, t_ci95))
    return tuple(rows)


def _paired_all_exits(read: _Reader, out, model, table5) -> TableCell | None:
    """IRS with all exits at σ = 0.4 over the same seeds as the ablation runs (paired)."""
    seeds = next((len(v.seed_means) for v in table5.values() if v), None)
    rows = [r for r in read.sweep_rows(stage_dir(out, "table2", model))
            if r["method"] == "irs" and math.isclose(r["sigma"], ABLATION_SIGMA)
            and math.isclose(r["eval_sigma"], ABLATION_SIGMA)]
    rows = sorted(rows, key=lambda r: r["seed"])[:seeds] if seeds else rows
    if not rows:
        return None
    table = aggregate_over_seeds(rows)
    return TableCell(table[0]["mean"], table[0]["ci95"], len(rows), table[0]["ekl"],
                     seed_means=tuple(r["mean"] for r in rows))


def _cell_paths(path: str) -> list[str]:
    cells = os.path.join(path, "cells")
    if not os.path.isdir(cells):
        return []
    return [os.path.join(cells, n, "results.json") for n in sorted(os.listdir(cells))
            if os.path.exists(os.path.join(cells, n, "results.json"))]
