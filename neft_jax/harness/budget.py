"""A wall-clock budget for long plans: start a piece of work only if it should end in time.

:class:`Budget` measures from its creation. Estimates come from measured durations:
the wall time of every finished cell of the same method (recorded in its
``results.json``, from this launch or earlier ones), else the mean over all
methods scaled by the method's relative cost, else unknown (the first cell
runs: it is the measurement).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

#: Cost of one training of each method relative to noise injection (three extra
#: forward passes make OVF ≈ 3×; measured on CPU and GPU, docs/RESULTS.md).
RELATIVE_COST = {"vanilla": 0.9, "noise": 1.0, "noise_scaled": 1.0, "irs": 1.15, "ovf": 3.0}


class BudgetExhausted(RuntimeError):
    """The next piece of work would not end before the budget."""


class Budget:
    """``seconds`` of wall time from now; None = unlimited."""

    def __init__(self, seconds: float | None):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"time budget must be > 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self.start = time.monotonic()
        #: Measured wall seconds of finished cells by method, shared by every stage.
        self.durations: dict[str, list[float]] = {}

    def record(self, method: str, seconds: float) -> None:
        self.durations.setdefault(method, []).append(seconds)

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (time.monotonic() - self.start)

    def check(self, what: str, estimate: float | None) -> None:
        """Raise :class:`BudgetExhausted` unless ``what`` (``estimate`` s, None = unknown)
        should end before the budget; an unknown estimate needs some time left."""
        left = self.remaining()
        if left <= 0 or (estimate is not None and estimate > left):
            need = "unknown" if estimate is None else f"≈ {estimate:.0f} s"
            raise BudgetExhausted(f"{what} needs {need}, {max(left, 0):.0f} s of the "
                                  f"{self.seconds:.0f} s budget are left")


def estimate_seconds(durations: dict[str, list[float]], method: str) -> float | None:
    """Seconds one cell of ``method`` takes: its measured mean, else the overall mean per
    unit of :data:`RELATIVE_COST` times its cost, else None."""
    if durations.get(method):
        return sum(durations[method]) / len(durations[method])
    units = [d / RELATIVE_COST.get(m, 1.0) for m, ds in durations.items() for d in ds]
    if not units:
        return None
    return sum(units) / len(units) * RELATIVE_COST.get(method, 1.0)


def estimate_total(durations: dict[str, list[float]], methods: Iterable[str]) -> float:
    """Seconds the cells ``methods`` take by :func:`estimate_seconds` (NaN if none measured)."""
    estimates = [estimate_seconds(durations, m) for m in methods]
    return float("nan") if None in estimates else sum(estimates)


def fits(durations: dict[str, list[float]], methods: Iterable[str], seconds: float) -> int:
    """How many of the cells ``methods`` (in order) fit in ``seconds`` by the estimates."""
    count, used = 0, 0.0
    for method in methods:
        estimate = estimate_seconds(durations, method)
        if estimate is None or used + estimate > seconds:
            break
        used += estimate
        count += 1
    return count
