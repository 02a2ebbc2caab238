"""The scaling study's rows, from its finished cells: one per point × method (accuracy at σ
over the seeds), the paired differences between methods seed by seed, and the findings
(the smallest points at which the methods separate), together a :class:`StudyReport`.
:mod:`scaling.report` writes it; :meth:`StudyReport.to_json` is ``scaling.json``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.data import NUM_CLASSES
from neft_jax.harness.identity import shared_differences
from neft_jax.harness.results import Evaluation, MethodResult, RunResults
from neft_jax.harness.runtime import made_with
from neft_jax.harness.seeds import seed_list
from neft_jax.harness.sweeps import Cell
from neft_jax.stats import SeedDifference

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


# The rows below are written to scaling.json field by field, in this order.
@dataclasses.dataclass(frozen=True)
class Row:
    """One point × method: accuracy at σ (one seed: mean ± CI over its Monte Carlo runs;
    several: over the seeds' means), clean accuracy and wall time per cell."""
    width: float
    epochs: int
    steps: int  # optimiser steps
    method: str
    seeds: int
    mean: float | None
    ci95: float | None
    std: float | None
    runs: int | None  # Monte Carlo runs of the first seed
    seed_means: tuple[float, ...]  # each seed's mean, seeds without one left out
    clean: float | None
    diverged: bool
    wall_seconds: float
    diverged_seeds: int = 0  # seeds whose loss blew up (judged by their kept epoch, if any)


@dataclasses.dataclass(frozen=True)
class Difference:
    """Method a − method b at one point, seed by seed and over the seeds (``mean`` ±
    ``t_ci95``, a Student-t interval; None under two seeds)."""
    width: float
    epochs: int
    a: str
    b: str
    per_seed: tuple[SeedDifference, ...]
    seeds: int
    mean: float
    t_ci95: float | None


@dataclasses.dataclass(frozen=True)
class Crossing:
    """The point at which a − b's interval over seeds excludes 0 (``sign`` +1: a above)."""
    width: float
    epochs: int
    sign: int


@dataclasses.dataclass(frozen=True)
class Findings:
    """The cheapest points at which the methods separate (None: at no finished point)."""
    noise_leaves_chance: Point | None
    irs_above_noise: Point | None
    noise_scaled_above_noise: Point | None
    irs_above_noise_scaled: Point | None
    across_seeds: dict[tuple[str, str], Crossing | None]  # (a, b) of PAIRS →

    def to_json(self) -> dict:
        found = dataclasses.asdict(self)
        found["across_seeds"] = {f"{a}-{b}": crossing
                                 for (a, b), crossing in found["across_seeds"].items()}
        return found


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """The settings the report is for (every point's cells are made with them)."""
    model: str
    dataset: str
    sigma: float
    normalisation: str
    device_preset: str
    mc_runs: int
    batch_size: int
    seeds: tuple[int, ...]
    points: tuple[Point, ...]
    #: (code, machine, day) of the finished cells read (:func:`~neft_jax.harness.runtime.made_with`)
    made_with: tuple[tuple[str, str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class StudyReport:
    """Everything the report shows; ``other_settings`` names the finished cells left out
    because they were made with other settings."""
    settings: StudySettings
    rows: tuple[Row, ...]
    differences: tuple[Difference, ...]
    chance: float
    findings: Findings
    other_settings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """``scaling.json``: the same fields, ``other_settings`` only where there are any."""
        report = {"settings": dataclasses.asdict(self.settings),
                  "rows": [dataclasses.asdict(row) for row in self.rows],
                  "differences": [dataclasses.asdict(d) for d in self.differences],
                  "chance": self.chance, "findings": self.findings.to_json()}
        if self.other_settings:
            report["other_settings"] = list(self.other_settings)
        return report


def collect_study(base: ExperimentConfig, points: Sequence[Point], out: str,
                  methods: Sequence[str]) -> StudyReport:
    """The report's rows, differences and findings from every finished cell."""
    other_settings: list[str] = []
    finished = finished_cells(base, points, out, methods, other_settings)
    rows = collect(points, methods, finished)
    differences = paired_differences(points, methods, finished)
    chance = 100.0 / NUM_CLASSES.get(base.dataset, 10)
    settings = StudySettings(
        model=base.model, dataset=base.dataset, sigma=base.sigma,
        normalisation=base.normalisation, device_preset=base.device_preset,
        mc_runs=base.mc_runs, batch_size=base.batch_size, seeds=tuple(seed_list(base)),
        points=tuple(points), made_with=tuple(sorted(
            {made_with(r.environment) for cells in finished.values()
             for r, _, _ in cells.values()})))
    return StudyReport(settings, rows, differences, chance,
                       findings(rows, chance, differences), tuple(other_settings))

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


def collect(points: Sequence[Point], methods: Sequence[str],
            finished: Finished) -> tuple[Row, ...]:
    """One row per point × method with finished cells: accuracy at σ (one seed: mean ±
    CI over Monte Carlo runs; several: mean ± Student-t CI over the seeds' means, none from
    one), clean accuracy, optimiser steps and wall time per cell. A seed that diverged
    after keeping an epoch is judged by that epoch (method.md §5); one that kept none has
    no mean: ``seeds`` counts the seeds with a mean."""
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
            means = [e.mean for _, _, e in found]
            if len(found) == 1:
                summary = found[0][2].summary or {}
            else:
                summary, _ = summarize_over_seeds(
                    means, [(e.summary or {}).get("ekl") for _, _, e in found])
                summary = summary or {}
                if sum(m is not None for m in means) < 2:  # one seed's mean: no spread
                    summary = {**summary, "ci95": None, "std": None}
            cleans = [m.clean_accuracy for _, m, _ in found if m.clean_accuracy is not None]
            rows.append(Row(
                width=point.width, epochs=point.epochs, steps=steps, method=method,
                seeds=sum(m is not None for m in means), mean=summary.get("mean"),
                ci95=summary.get("ci95"), std=summary.get("std"),
                runs=(found[0][2].summary or {}).get("runs"),
                seed_means=tuple(m for m in means if m is not None),
                clean=sum(cleans) / len(cleans) if cleans else None,
                diverged=any(m.diverged for _, m, _ in found),
                wall_seconds=sum(r.wall_seconds for r, _, _ in found) / len(found),
                diverged_seeds=sum(m.diverged for _, m, _ in found)))
    return tuple(rows)


def paired_differences(points: Sequence[Point], methods: Sequence[str],
                       finished: Finished) -> tuple[Difference, ...]:
    """Method a − method b at σ (points), seed by seed, for each pair of :data:`PAIRS`
    whose two methods have finished cells at a common seed.

    Within a seed both methods are scored on the same Monte Carlo noise keys, so each
    seed's difference has a CI paired over the runs (z, as :func:`summarize`). Over
    n ≥ 2 seeds, ``mean`` ± ``t_ci95`` is the mean of the seeds' differences with a
    Student-t 95 % interval (n − 1 degrees of freedom): the spread between trainings.
    """
    from neft_jax.stats import across_seeds, paired_summary

    rows = []
    for point in points:
        cells = {m: finished[(point, m)] for m in methods}
        for a, b in PAIRS:
            if a not in cells or b not in cells:
                continue
            per_seed = []
            for seed in sorted(set(cells[a]) & set(cells[b])):
                (_, _, ea), (_, _, eb) = cells[a][seed], cells[b][seed]
                if ea.mean is None or eb.mean is None:  # diverged with no kept epoch
                    continue
                paired = paired_summary(ea.accuracies, eb.accuracies)
                per_seed.append(SeedDifference(seed, ea.mean - eb.mean,
                                               paired["ci95"] if paired else None))
            if not per_seed:
                continue
            mean, t_ci95 = across_seeds([p.difference for p in per_seed])
            rows.append(Difference(
                width=point.width, epochs=point.epochs, a=a, b=b, per_seed=tuple(per_seed),
                seeds=len(per_seed), mean=mean, t_ci95=t_ci95))
    return tuple(rows)


def separated(a: Row, b: Row) -> bool:
    """Whether two rows' 95 % CIs do not overlap (a above b). Rows over different numbers
    of seeds are not compared: one seed's ± covers its runs only."""
    if a.mean is None or b.mean is None or a.seeds != b.seeds or a.ci95 is None \
            or b.ci95 is None:
        return False
    return a.mean - a.ci95 > b.mean + b.ci95


def findings(rows: Sequence[Row], chance: float,
             differences: Sequence[Difference] = ()) -> Findings:
    """The smallest points (by cost) at which noise injection leaves chance, at which
    IRS and noise_scaled separate from noise injection (None where none does), and, from
    :func:`paired_differences`, at which each pair differs across seeds: the Student-t
    interval over at least :data:`MIN_SEEDS_ACROSS` seeds excludes 0 (``sign`` +1: a
    above b)."""
    by_point: dict[tuple[float, int], dict[str, Row]] = {}
    for row in rows:
        by_point.setdefault((row.width, row.epochs), {})[row.method] = row
    order = sorted(by_point, key=lambda p: cheapest_first(*p))

    def first(a: str, b: str | None = None) -> Point | None:
        """The cheapest point at which ``a`` leaves chance (``b`` None) or is above ``b``."""
        for width, epochs in order:
            m = by_point[(width, epochs)]
            if b is None and a in m:
                row = m[a]
                if row.mean is not None and row.mean - (row.ci95 or 0) > chance + ABOVE_CHANCE:
                    return Point(width, epochs)
            elif b is not None and a in m and b in m and separated(m[a], m[b]):
                return Point(width, epochs)
        return None

    return Findings(
        noise_leaves_chance=first("noise"), irs_above_noise=first("irs", "noise"),
        noise_scaled_above_noise=first("noise_scaled", "noise"),
        irs_above_noise_scaled=first("irs", "noise_scaled"),
        across_seeds={(a, b): _first_difference(differences, a, b) for a, b in PAIRS})


def _first_difference(differences: Sequence[Difference], a: str, b: str) -> Crossing | None:
    """The cheapest point at which a − b's interval over seeds excludes 0, with its sign."""
    for row in sorted((d for d in differences if (d.a, d.b) == (a, b)),
                      key=lambda d: cheapest_first(d.width, d.epochs)):
        if row.seeds >= MIN_SEEDS_ACROSS and abs(row.mean) > row.t_ci95:
            return Crossing(row.width, row.epochs, 1 if row.mean > 0 else -1)
    return None
