"""Statistics of Monte Carlo accuracies (method.md §5): summaries, paired differences,
convergence counts and summaries over independent runs.

numpy, and scipy for the Student-t quantile; the accuracies come from the Monte Carlo
engine (:mod:`neft_jax.evaluate`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

#: Normal quantiles of the 95 % and 99 % CI half-widths (method.md §5: 1.96·std/√R, 2.576·std/√R).
Z95, Z99 = 1.96, 2.576
#: Low quantiles of the runs' accuracies in every summary (worst cases, as robustness
#: papers report a k-th percentile): key -> quantile.
QUANTILES = {"q01": 0.01, "q05": 0.05}


def summarize(accuracies: Sequence[float], ekl: float | None = None) -> dict:
    """A dict of run accuracies' statistics, in their units: ``runs``, ``mean``, ``std``
    (ddof = 1), ``ci95`` / ``ci99`` (1.96 / 2.576·std/√R, method.md §5), ``q01`` / ``q05``
    (numpy's linear interpolation), ``min``, ``max``, and ``ekl`` when given. One run has
    no spread: its ``std``, ``ci95`` and ``ci99`` are None (null in JSON, empty in CSV),
    never a zero that reads as certainty."""
    acc = np.asarray(accuracies, np.float64)
    runs = acc.size
    if runs == 0:
        raise ValueError("summarize needs at least one accuracy")
    std = float(np.std(acc, ddof=1)) if runs > 1 else None
    summary = {
        "runs": runs,
        "mean": float(np.mean(acc)),
        "std": std,
        "ci95": None if std is None else Z95 * std / math.sqrt(runs),
        "ci99": None if std is None else Z99 * std / math.sqrt(runs),
        **{name: float(np.quantile(acc, q)) for name, q in QUANTILES.items()},
        "min": float(np.min(acc)),
        "max": float(np.max(acc)),
    }
    if ekl is not None:
        summary["ekl"] = float(ekl)
    return summary


def paired_summary(a: Sequence[float], b: Sequence[float]) -> dict | None:
    """:func:`summarize` of ``a − b`` run by run, for two models scored on the same noise
    keys (run i of each drew the same instance); None unless both have the same number
    of runs, more than one."""
    if not len(a) == len(b) > 1:
        return None
    return summarize(np.subtract(a, b))


def count_not_converged(accuracies: Sequence[float], tolerance: float = 0.05) -> int:
    """Runs whose accuracy is more than ``tolerance`` (in the accuracies' unit: 0.05 for
    fractions) from the mean over the runs (method.md §5); a run exactly ``tolerance`` away
    converged (float rounding of the mean aside).

    Non-finite entries (runs without a result) count as not converged.
    """
    acc = np.asarray(accuracies, np.float64)
    finite = np.isfinite(acc)
    if not finite.any():
        return int(acc.size)
    mean = np.mean(acc[finite])
    limit = tolerance * (1 + 1e-9)  # [90, 100] %: both exactly 5 points from 95
    return int(np.sum(~finite) + np.sum(np.abs(acc[finite] - mean) > limit))


def summarize_over_seeds(seed_means: Sequence[float], seed_ekls: Sequence[float | None],
                         tolerance_pct: float = 5.0) -> tuple[dict | None, int]:
    """Independent runs' Monte Carlo means (%, NaN = diverged) → ``(summary, not_converged)``.

    ``summary`` is :func:`summarize` of the finite means, its CI half-widths Student-t
    (n − 1 degrees of freedom: with 3 runs 4.30·std/√n, not 1.96; with one finite mean
    there is no interval and they are None), with ``ekl`` the mean of the runs' EKL (None when
    every run diverged); ``not_converged`` counts runs more than
    ``tolerance_pct`` points from the mean, or without a mean (method.md §5, Table III).
    """
    means = np.asarray([np.nan if m is None else m for m in seed_means], np.float64)
    finite = means[np.isfinite(means)]
    summary = summarize(finite) if finite.size else None
    if summary is not None and finite.size > 1:  # few runs: Student-t, n − 1 dof
        n = finite.size
        for name, level in (("ci95", 0.975), ("ci99", 0.995)):
            summary[name] = student_t(level, n - 1) * summary["std"] / math.sqrt(n)
    ekls = np.asarray([np.nan if e is None else e for e in seed_ekls], np.float64)
    if summary is not None and np.isfinite(ekls).any():
        summary["ekl"] = float(np.nanmean(ekls))
    return summary, count_not_converged(means, tolerance_pct)


@dataclasses.dataclass(frozen=True)
class SeedDifference:
    """Method a − method b within one seed: the mean difference over the same Monte Carlo
    runs (points) and its 95 % CI (None where it cannot be given, e.g. one run)."""
    seed: int
    difference: float
    ci95: float | None


def across_seeds(differences: Sequence[float]) -> tuple[float, float | None]:
    """Independent trainings' differences a − b (points, one per seed) → ``(mean,
    t_ci95)``: their mean and the half-width of its Student-t 95 % interval (n − 1
    degrees of freedom), None under two seeds. The interval covers the spread between
    trainings, which a Monte Carlo CI within one seed does not."""
    d = np.asarray(differences, np.float64)
    if d.size == 0:
        raise ValueError("across_seeds needs at least one difference")
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return mean, None
    return mean, student_t(0.975, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)


def student_t(level: float, dof: int) -> float:
    """The ``level`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(level, dof))
