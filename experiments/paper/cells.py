"""The core stage's and the α grid's cells seed by seed, and the differences between
their methods within each seed, paired over the same Monte Carlo noise instances
(:func:`~paper.collect.collect_report` reads them; ``read`` is its results reader)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

from neft_jax.stats import SeedDifference, across_seeds

from .plan import ABLATION_SIGMA, CORE_METHODS, is_control


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
    ci95: float | None  # None: one Monte Carlo run
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


#: The core stage's differences (a − b within each seed), each NeFT-like method against
#: noise injection, then IRS against the two that share eq. (1)'s logit scaling.
CORE_PAIRS = (("irs", "noise"), ("noise_scaled", "noise"), ("control", "noise"),
              ("irs", "control"), ("irs", "noise_scaled"))


def core_order(item) -> tuple:
    """σ, then the core stage's order of methods (the control after IRS), then seed."""
    (name, sigma, seed), _ = item
    order = (*CORE_METHODS, "control")
    return sigma, order.index(name) if name in order else len(order), name, seed


def core_cells(read, path: str, alpha_grid: bool = False,
                diverged: list[tuple[str, int]] | None = None
                ) -> dict[tuple[str, float, int], CoreCell]:
    """The finished, not diverged cells of a core (or, with ``alpha_grid``, an α grid)
    stage by (name, σ, seed): the name ``control`` for IRS at α = 1e-9, ``irs α=<α>``
    for every IRS cell of an α grid. Diverged cells are left out, and added to
    ``diverged`` as (α, seed) when it is given (one pass over the cells' files)."""
    cells = {}
    for results_path in cell_paths(path):
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
        name = f"irs α={entry.alpha:g}" if alpha_grid else "control" if control else method
        seed = int(settings["seed"])
        cells[(name, sigma, seed)] = _core_cell(name, sigma, seed, entry, evaluation)
    return cells


def vanilla_core_cells(read, path: str, sigmas: Sequence[float]
                       ) -> dict[tuple[str, float, int], CoreCell]:
    """The core stage's vanilla cells at each of ``sigmas``, by (``vanilla``, σ, seed):
    the vanilla stage's finished, not diverged cells (trained clean, scored at every σ)."""
    cells = {}
    for results_path in cell_paths(path):
        results = read.results(results_path)
        if results is None or "vanilla" not in results.methods:
            continue
        entry, seed = results.methods["vanilla"], int(results.settings["seed"])
        for sigma in sigmas:
            evaluation = entry.at(sigma)
            if not entry.diverged and evaluation is not None and evaluation.accuracies:
                cells[("vanilla", sigma, seed)] = _core_cell("vanilla", sigma, seed, entry,
                                                             evaluation)
    return cells


def _core_cell(name: str, sigma: float, seed: int, entry, evaluation) -> CoreCell:
    """A :class:`CoreCell` from a method's results and its evaluation at σ."""
    last = entry.history[-1] if entry.history else {}
    return CoreCell(
        method=name, sigma=sigma, seed=seed, mean=evaluation.mean,
        ci95=evaluation.summary["ci95"], clean=entry.clean_accuracy,
        feedback_ratio=last.get("feedback_ratio"), exit_accuracies=last.get("exit_accuracies"),
        accuracies=evaluation.accuracies, best_val=entry.best_val_accuracy)


#: Each α of the grid against these cells of its seed (σ = 0.4, from the core stage).
ALPHA_BASELINES = ("control", "noise", "noise_scaled")


def alpha_grid(read, path: str,
               core: dict[tuple[str, float, int], CoreCell]) -> AlphaGrid | None:
    """The α grid's finished cells (largest α first), each α over its seeds, and its
    differences with :data:`ALPHA_BASELINES` of the same seed; None before any finished."""
    found_diverged: list[tuple[str, int]] = []
    cells = core_cells(read, path, alpha_grid=True, diverged=found_diverged)
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
    baselines = {k: c for k, c in core.items()
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



def cell_paths(path: str) -> list[str]:
    cells = os.path.join(path, "cells")
    if not os.path.isdir(cells):
        return []
    return [os.path.join(cells, n, "results.json") for n in sorted(os.listdir(cells))
            if os.path.exists(os.path.join(cells, n, "results.json"))]
