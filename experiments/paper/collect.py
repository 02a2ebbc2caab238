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
from collections.abc import Callable, Sequence

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import shared_differences
from neft_jax.harness.results import RunResults, sigma_key
from neft_jax.harness.runtime import made_with
from neft_jax.harness.sweeps import Cell, aggregate_over_seeds, collect_rows
from neft_jax.models import MODELS
from neft_jax.stats import across_seeds

from .cells import (
    AlphaGrid,
    CoreCell,
    CoreDifference,
    alpha_grid,
    cell_paths,
    core_cells,
    core_differences,
    core_order,
    vanilla_core_cells,
)
from .plan import (
    ABLATION_SIGMA,
    CONTROL_ALPHA,
    VANILLA_SIGMAS,
    Plan,
    is_control,
    stage_dir,
)
from .published import table3_sigma


class _Reader:
    """Reads a plan's finished results; with ``base``, leaves out (and names in
    ``other_settings``) those made with other settings than ``base`` gives every cell
    (:data:`~neft_jax.harness.identity.SHARED_KEYS`), so a report never shows them
    under ``base``'s settings."""

    def __init__(self, base: ExperimentConfig | None):
        self.base = base
        self.other_settings: dict[str, str] = {}
        self.made_with: set[tuple[str, str, str]] = set()  # (code, machine, date) read

    def matches(self, path: str, settings: dict) -> bool:
        if self.base is None:
            return True
        changed = shared_differences(settings, self.base)
        if changed:
            self.other_settings[os.path.dirname(path)] = ", ".join(changed)
        return not changed

    def results(self, results_path: str) -> RunResults | None:
        results = RunResults.load(results_path)
        if not self.matches(results_path, results.settings):
            return None
        self.made_with.add(made_with(results.environment))
        return results

    def sweep_rows(self, path: str) -> list[dict]:
        """One row per finished cell × σ of a (partly) finished sweep directory."""
        cells = []
        for results_path in cell_paths(path):
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
    """One number of a table: mean ± Student-t 95 % CI over ``seeds`` seeds (%), with its EKL
    (nats), its runs not converged, each seed's mean where known and how many more seeds
    diverged before keeping an epoch (no mean: left out of ``seeds``, counted as not
    converged)."""
    mean: float | None
    ci95: float | None
    seeds: int
    ekl: float | None = None
    not_converged: int | None = None
    seed_means: tuple[float, ...] | None = None
    diverged: int = 0


def table_cell(row: dict, seed_means: tuple[float, ...] | None = None) -> TableCell:
    """A :class:`TableCell` from a row of :func:`~neft_jax.harness.sweeps.aggregate_over_seeds`
    (its ``seeds`` less its ``diverged``: the seeds the mean is over)."""
    diverged = row.get("diverged", 0)
    return TableCell(row["mean"], row["ci95"], row["seeds"] - diverged, row.get("ekl"),
                     row.get("not_converged"), seed_means, diverged)


@dataclasses.dataclass(frozen=True)
class AlphaSearch:
    """The five-step α search: validation accuracy per α (None: diverged), the α chosen and
    its test summary at σ (the harness's summary dict)."""
    validation_accuracy: dict[str, float | None]
    chosen: float
    test: dict | None


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
    made_with: tuple[tuple[str, str, str], ...] = ()  # (code, machine, date) of the results

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
                  "alpha_grid": None if self.alpha_grid is None else self.alpha_grid.to_json(),
                  "made_with": [dict(zip(("code", "machine", "date"), m, strict=True))
                                for m in self.made_with]}
        if self.other_settings:
            report["other_settings"] = dict(self.other_settings)
        return report


def _cells_json(cells: dict[str, TableCell | None]) -> dict[str, dict | None]:
    return {key: None if cell is None else dataclasses.asdict(cell)
            for key, cell in cells.items()}



def _from_sweep(table, method, sigma, alpha=None,
                trained_sigma: float | None = None) -> TableCell | None:
    """The cell of ``table`` (over seeds) evaluated at ``sigma`` and trained there (or at
    ``trained_sigma``: vanilla, trained clean)."""
    trained = sigma if trained_sigma is None else trained_sigma
    for row in table:
        if (row["method"] == method and math.isclose(row["sigma"], trained)
                and math.isclose(row["eval_sigma"], sigma)
                and (alpha is None or (row["alpha"] and math.isclose(row["alpha"], alpha)))
                and row["mean"] is not None):
            return table_cell(row)
    return None


def _from_seeds(results: RunResults | None, method, sigma) -> TableCell | None:
    if results is None or method not in results.methods:
        return None
    evaluation = results.methods[method].at(sigma)
    if not evaluation or not evaluation.summary:
        return None
    s = evaluation.summary
    # The interval from the seeds' means, Student-t: results.json files made before 53f7d12
    # stored 1.96·std/√n in the summary.
    finite = [m for m in evaluation.seed_means if m is not None and math.isfinite(m)]
    return TableCell(s["mean"], across_seeds(finite)[1], len(finite), s.get("ekl"),
                     evaluation.not_converged, tuple(evaluation.seed_means),
                     len(evaluation.seed_means) - len(finite))


def collect_report(out: str, plan: Plan,
                   base: ExperimentConfig | None = None) -> dict[str, ModelReport]:
    """Every finished number of the plan, per model (percent, nats). With
    ``base``, results made with other settings than ``base`` gives them are left out and
    listed under ``other_settings`` (path → the settings that differ)."""
    report = {}
    for model in plan.models:
        read = _Reader(base)
        table2 = read.sweep_table(stage_dir(out, "table2", model))
        vanilla_dir = stage_dir(out, "vanilla", model)
        vanilla_rows = [r for r in read.sweep_rows(vanilla_dir) if r["method"] == "vanilla"]
        vanilla = _vanilla_stage(read, vanilla_dir, vanilla_rows)
        control = read.sweep_table(stage_dir(out, "control", model))
        scaled = read.sweep_table(stage_dir(out, "scaled", model))
        ovf = read.sweep_table(stage_dir(out, "ovf", model))
        rows = {
            "vanilla": {sigma_key(s): vanilla(s) for s in plan.sigmas},
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
        table5["all exits"] = _paired_all_exits(read, out, model, _variant_seeds(
            read, [stage_dir(out, "table5", model, name)
                   for name in (*(f"drop{i}" for i in range(1, MODELS[model].num_exits + 1)),
                                "equal")]))
        alpha_path = os.path.join(stage_dir(out, "alpha", model), "results.json")
        alpha = None
        alpha_results = read.results(alpha_path) if os.path.exists(alpha_path) else None
        if alpha_results is not None:
            entry = alpha_results.methods.get("irs")
            if entry and entry.alpha_search is not None:
                test = entry.at(ABLATION_SIGMA)
                alpha = AlphaSearch(entry.alpha_search, entry.alpha,
                                    test.summary if test else None)
        core_dir = stage_dir(out, "core", model)
        core, found = read.sweep_table(core_dir), core_cells(read, core_dir)
        if os.path.isdir(core_dir):  # vanilla, trained clean: the vanilla stage's cells
            core, found = _with_vanilla_stage(read, vanilla_dir, vanilla_rows, core, found,
                                              plan.core_sigmas)
        report[model] = ModelReport(
            core=core,
            core_by_seed=tuple(cell for _, cell in sorted(found.items(), key=core_order)),
            core_differences=core_differences(found),
            alpha_grid=alpha_grid(read, stage_dir(out, "alpha_grid", model), found),
            table2=rows,
            vanilla_sweep={sigma_key(s): vanilla(s) for s in VANILLA_SIGMAS},
            table3={m: _from_sweep(table3, m, table3_sigma(base.dataset if base else "mnist"))
                    for m in ("noise", "irs")},
            table5=table5,
            alpha_search=alpha,
            other_settings=dict(sorted(read.other_settings.items())),
            made_with=tuple(sorted(read.made_with)))
    return report


def _vanilla_stage(read: _Reader, path: str,
                   rows: list[dict]) -> Callable[[float], TableCell | None]:
    """σ → the vanilla stage's cell over seeds (None: not finished): its cells' ``rows``,
    each trained clean and scored at every σ, or a plan's before 2026-12-07, one
    multi-seed run."""
    if not rows:
        old = read.seeds_results(path)
        return lambda s: _from_seeds(old, "vanilla", s)
    table = aggregate_over_seeds(rows)

    def at(sigma: float) -> TableCell | None:
        cell = _from_sweep(table, "vanilla", sigma, trained_sigma=0.0)
        means = tuple(r["mean"] for r in sorted(rows, key=lambda r: r["seed"])
                      if math.isclose(r["eval_sigma"], sigma) and r["mean"] is not None)
        return cell and dataclasses.replace(cell, seed_means=means)
    return at


def _with_vanilla_stage(read: _Reader, path: str, rows: list[dict], core: list[dict],
                        found: dict, core_sigmas: Sequence[float]) -> tuple[list[dict], dict]:
    """The core stage's table and cells with vanilla from the vanilla stage's cells (at
    each core σ: its rows over seeds, its cells seed by seed). Where that stage has none,
    a plan's before 2026-12-07 core-stage vanilla cells stay: never a mix of the two."""
    sigmas = sorted({s for _, s, _ in found} | set(core_sigmas))
    vanilla = vanilla_core_cells(read, path, sigmas)
    if not vanilla:
        return core, found
    at_core = [{**row, "sigma": row["eval_sigma"]} for row in aggregate_over_seeds(rows)
               if any(math.isclose(row["eval_sigma"], s) for s in sigmas)]
    return ([r for r in core if r["method"] != "vanilla"] + at_core,
            {**{k: c for k, c in found.items() if k[0] != "vanilla"}, **vanilla})


def _variant_seeds(read: _Reader, paths: Sequence[str]) -> set[int]:
    """The seeds of the Table V variants finished in ``paths``."""
    found = (read.seeds_results(path) for path in paths)
    return {seed for results in found if results is not None for seed in results.seeds}


def _paired_all_exits(read: _Reader, out: str, model: str,
                      seeds: set[int]) -> TableCell | None:
    """IRS with all exits at σ = 0.4 over the seeds of the ablation runs (``seeds``; paired:
    the same seeds and noise keys): the table5 stage's own cells, or where an older plan
    trained none, Table II's."""
    by_seed = {}
    for stage in ("table5", "table2", "core"):
        for r in read.sweep_rows(stage_dir(out, stage, model)):
            if (r["method"] == "irs" and not is_control(r["method"], r["alpha"])
                    and math.isclose(r["sigma"], ABLATION_SIGMA)
                    and math.isclose(r["eval_sigma"], ABLATION_SIGMA)
                    and (not seeds or r["seed"] in seeds)):
                by_seed.setdefault(r["seed"], r)
    rows = [by_seed[s] for s in sorted(by_seed)]
    if not rows:
        return None
    return table_cell(aggregate_over_seeds(rows)[0], tuple(r["mean"] for r in rows))
