"""The scaling study's rows, from its finished cells: one per point × method (accuracy at σ
over the seeds), the paired differences between methods seed by seed, and the findings
(the smallest points at which the methods separate). :mod:`scaling.report` writes them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import shared_differences
from neft_jax.harness.results import Evaluation, MethodResult, RunResults
from neft_jax.harness.seeds import seed_list
from neft_jax.harness.sweeps import Cell

#: The differences the study is about: each NeFT-like method against noise injection,
#: and IRS against the logit-scaled baseline.
PAIRS = (("irs", "noise"), ("noise_scaled", "noise"), ("irs", "noise_scaled"))
#: A method has left chance when its CI's lower end is this many points above chance.
ABOVE_CHANCE = 5.0
#: A difference between methods counts across seeds only from this many seeds on.
MIN_SEEDS_ACROSS = 3


@dataclasses.dataclass(frozen=True)
class Point:
    width: float
    epochs: int

    @property
    def name(self) -> str:
        return f"w{self.width:g}-e{self.epochs}"

    @property
    def cost(self) -> float:
        """Relative training cost (conv FLOPs grow ≈ width²)."""
        return self.width ** 2 * self.epochs


def cheapest_first(width: float, epochs: int) -> tuple[float, float]:
    """Sort key of a point (width, epochs): its :attr:`Point.cost`, then its width."""
    return Point(width, epochs).cost, width


def point_config(base: ExperimentConfig, point: Point) -> ExperimentConfig:
    """The settings the cells of ``point`` are made with."""
    return dataclasses.replace(base, width=point.width, epochs=point.epochs, seeds=1)


#: (point, method) → seed → (results, the method's entry, its evaluation at σ).
Finished = dict[tuple[Point, str], dict[int, tuple[RunResults, MethodResult, Evaluation]]]


def finished_cells(base: ExperimentConfig, points: Sequence[Point], out: str,
                   methods: Sequence[str], other_settings: list[str] | None = None) -> Finished:
    """Every finished cell of the study, each ``results.json`` read once. A cell made with
    other settings than ``base`` gives its point's cells is left out (and named in
    ``other_settings``)."""
    return {(point, method): _finished_cells(base, point, out, method, other_settings)
            for point in points for method in methods}


def _finished_cells(base: ExperimentConfig, point: Point, out: str, method: str,
                    other_settings: list[str] | None = None
                    ) -> dict[int, tuple[RunResults, MethodResult, Evaluation]]:
    """Seed → (results, the method's entry, its evaluation at σ) of every finished cell."""
    found = {}
    expected = point_config(base, point)
    for seed in seed_list(base):
        cell = Cell(base.model, base.dataset, method, float(base.sigma), None, seed)
        path = os.path.join(out, point.name, "cells", cell.name, "results.json")
        if not os.path.exists(path):
            continue
        results = RunResults.load(path)
        changed = shared_differences(results.settings, expected)
        if changed:
            if other_settings is not None:
                other_settings.append(f"{os.path.dirname(path)} ({', '.join(changed)})")
            continue
        entry = results.methods.get(method)
        if entry is not None and entry.at(base.sigma) is not None:
            found[seed] = (results, entry, entry.at(base.sigma))
    return found


def collect(points: Sequence[Point], methods: Sequence[str], finished: Finished) -> list[dict]:
    """One row per point × method with finished cells: accuracy at σ (one seed: mean ±
    CI over Monte Carlo runs; several: mean ± CI over the seeds' means), clean
    accuracy, optimiser steps and wall time per cell."""
    from neft_jax.stats import summarize_over_seeds

    rows = []
    for point in points:
        for method in methods:
            found = list(finished[(point, method)].values())
            if not found:
                continue
            settings = found[0][0].settings
            num_train = settings["num_train"]
            steps = point.epochs * (num_train // min(settings["batch_size"], num_train))
            if settings.get("max_train_steps"):
                steps = min(steps, settings["max_train_steps"])
            if len(found) == 1:
                summary = found[0][2].summary or {}
            else:
                summary, _ = summarize_over_seeds(
                    [e.mean if not m.diverged else None for _, m, e in found],
                    [(e.summary or {}).get("ekl") for _, _, e in found])
                summary = summary or {}
            cleans = [m.clean_accuracy for _, m, _ in found if m.clean_accuracy is not None]
            rows.append({"width": point.width, "epochs": point.epochs, "steps": steps,
                         "method": method, "seeds": len(found), "mean": summary.get("mean"),
                         "ci95": summary.get("ci95"), "std": summary.get("std"),
                         "runs": (found[0][2].summary or {}).get("runs"),
                         "seed_means": [e.mean for _, m, e in found if not m.diverged],
                         "clean": sum(cleans) / len(cleans) if cleans else None,
                         "diverged": any(m.diverged for _, m, _ in found),
                         "wall_seconds": sum(r.wall_seconds for r, _, _ in found) / len(found)})
    return rows


def paired_differences(points: Sequence[Point], methods: Sequence[str],
                       finished: Finished) -> list[dict]:
    """Method a − method b at σ (points), seed by seed, for each pair of :data:`PAIRS`
    whose two methods have finished cells at a common seed.

    Within a seed both methods are scored on the same Monte Carlo noise keys, so each
    seed's difference has a CI paired over the runs (z, as :func:`summarize`). Over
    n ≥ 2 seeds, ``mean`` ± ``t_ci95`` is the mean of the seeds' differences with a
    Student-t 95 % interval (n − 1 degrees of freedom): the spread between trainings.
    """
    import numpy as np
    from scipy.stats import t

    from neft_jax.stats import paired_summary

    rows = []
    for point in points:
        cells = {m: finished[(point, m)] for m in methods}
        for a, b in PAIRS:
            if a not in cells or b not in cells:
                continue
            per_seed = []
            for seed in sorted(set(cells[a]) & set(cells[b])):
                (_, ma, ea), (_, mb, eb) = cells[a][seed], cells[b][seed]
                if ma.diverged or mb.diverged or ea.mean is None or eb.mean is None:
                    continue
                paired = paired_summary(ea.accuracies, eb.accuracies)
                per_seed.append({"seed": seed, "difference": ea.mean - eb.mean,
                                 "ci95": paired["ci95"] if paired else None})
            if not per_seed:
                continue
            differences = np.array([p["difference"] for p in per_seed])
            n = differences.size
            rows.append({"width": point.width, "epochs": point.epochs, "a": a, "b": b,
                         "per_seed": per_seed, "seeds": n, "mean": float(differences.mean()),
                         "t_ci95": float(t.ppf(0.975, n - 1) * differences.std(ddof=1)
                                         / math.sqrt(n)) if n > 1 else None})
    return rows


def separated(a: dict, b: dict) -> bool:
    """Whether two rows' 95 % CIs do not overlap (a above b). Rows over different numbers
    of seeds are not compared: one seed's ± covers its runs only."""
    if a["mean"] is None or b["mean"] is None or a.get("seeds", 1) != b.get("seeds", 1):
        return False
    return a["mean"] - (a["ci95"] or 0) > b["mean"] + (b["ci95"] or 0)


def findings(rows: Sequence[dict], chance: float,
             differences: Sequence[dict] = ()) -> dict:
    """The smallest points (by cost) at which noise injection leaves chance, at which
    IRS and noise_scaled separate from noise injection (None where none does), and, from
    :func:`paired_differences`, at which each pair differs across seeds: the Student-t
    interval over at least :data:`MIN_SEEDS_ACROSS` seeds excludes 0 (``sign`` +1: a
    above b)."""
    by_point: dict[tuple, dict] = {}
    for row in rows:
        by_point.setdefault((row["width"], row["epochs"]), {})[row["method"]] = row
    order = sorted(by_point, key=lambda p: cheapest_first(*p))

    def first(test) -> dict | None:
        for width, epochs in order:
            if test(by_point[(width, epochs)]):
                return {"width": width, "epochs": epochs}
        return None

    def left_chance(m):
        row = m.get("noise")
        return bool(row and row["mean"] is not None
                    and row["mean"] - (row["ci95"] or 0) > chance + ABOVE_CHANCE)

    return {
        "noise_leaves_chance": first(left_chance),
        **{f"{method}_above_noise": first(
            lambda m, method=method: method in m and "noise" in m
            and separated(m[method], m["noise"])) for method in ("irs", "noise_scaled")},
        "irs_above_noise_scaled": first(lambda m: "irs" in m and "noise_scaled" in m
                                        and separated(m["irs"], m["noise_scaled"])),
        "across_seeds": {f"{a}-{b}": _first_difference(differences, a, b) for a, b in PAIRS},
    }


def _first_difference(differences: Sequence[dict], a: str, b: str) -> dict | None:
    """The cheapest point at which a − b's interval over seeds excludes 0, with its sign."""
    for row in sorted((d for d in differences if (d["a"], d["b"]) == (a, b)),
                      key=lambda d: cheapest_first(d["width"], d["epochs"])):
        if row["seeds"] >= MIN_SEEDS_ACROSS and abs(row["mean"]) > row["t_ci95"]:
            return {"width": row["width"], "epochs": row["epochs"],
                    "sign": 1 if row["mean"] > 0 else -1}
    return None

