"""A wall-clock budget for long plans: start a piece of work only if it should end in time.

:class:`Budget` measures from its creation. Estimates come from measured durations:
the wall time of every finished cell of the same method, model, width and length
(recorded in its ``results.json``, from this launch or earlier ones), else the
other methods of that model × width × length scaled by each method's relative
cost, else every measured cell scaled by method, model, width and epochs (so a
reproduction's ResNet-18 cells or a scaling study's wider models are not
estimated at a narrower model's speed), else unknown (the first cell runs: it is
the measurement).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

#: Cost of one training of each method relative to noise injection (three extra
#: forward passes make OVF ≈ 3×; measured on CPU and GPU, docs/studies/speed_gpu.md).
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
        #: Measured wall seconds of finished cells by :func:`cost_key`, shared by every
        #: stage.
        self.durations: dict[str, list[float]] = {}

    def record(self, key: str, seconds: float) -> None:
        """A finished cell's wall time, under its :func:`cost_key` (or method)."""
        self.durations.setdefault(key, []).append(seconds)

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


#: Cost of one training of each model relative to VGG-8 at the same width (one H200 in
#: TF32, noise injection: 40,976 against 26,410 images/s, docs/studies/speed_gpu.md).
MODEL_COST = {"vgg8": 1.0, "resnet18": 1.55}
#: A cell's cost grows as width ** WIDTH_EXPONENT: convs as width², but narrow models are
#: dominated by fixed costs (CPU-2: ×0.125 → ×1 costs 16×, not 64×). 1.5 errs high, so a
#: budget stops early rather than late.
WIDTH_EXPONENT = 1.5


def cost_key(method: str, model: str, width: float, epochs: int) -> str:
    """The key a cell's wall time is recorded under: ``model/w<width>/e<epochs>/method``.
    A bare method name is a key too (one model, width and length)."""
    return f"{model}/w{width:g}/e{epochs}/{method}"


def _parse(key: str) -> tuple[str, str, float]:
    """(group, method, cost of the group) of a key; the group is model/width/epochs."""
    *group, method = key.split("/")
    if not group:
        return "", method, 1.0
    model, width, epochs = group
    scale = MODEL_COST.get(model, 1.0) * float(width[1:]) ** WIDTH_EXPONENT * int(epochs[1:])
    return "/".join(group), method, scale


def estimate_seconds(durations: dict[str, list[float]], key: str) -> float | None:
    """Seconds one cell of ``key`` (a :func:`cost_key` or a method) takes: its measured
    mean; else the mean of the same model × width × epochs per unit of
    :data:`RELATIVE_COST`, times its method's cost; else the mean of every measured cell
    per unit of method, model, width and epoch cost, times its own; else None."""
    if durations.get(key):
        return sum(durations[key]) / len(durations[key])
    group, method, scale = _parse(key)
    same = {k: ds for k, ds in durations.items() if _parse(k)[0] == group}
    units = []
    for k, ds in (same or durations).items():
        _, m, s = _parse(k)
        units += [d / (RELATIVE_COST.get(m, 1.0) * (1.0 if same else s)) for d in ds]
    if not units:
        return None
    return sum(units) / len(units) * RELATIVE_COST.get(method, 1.0) * (1.0 if same else scale)


def estimate_total(durations: dict[str, list[float]], keys: Iterable[str]) -> float:
    """Seconds the cells ``keys`` take by :func:`estimate_seconds` (NaN if none measured)."""
    estimates = [estimate_seconds(durations, k) for k in keys]
    return float("nan") if None in estimates else sum(estimates)


def fits(durations: dict[str, list[float]], keys: Iterable[str], seconds: float) -> int:
    """How many of the cells ``keys`` (in order) fit in ``seconds`` by the estimates."""
    return count_fitting((estimate_seconds(durations, key) for key in keys), seconds)


def count_fitting(estimates: Iterable[float | None], seconds: float | None) -> int:
    """How many of ``estimates`` (in order; None = unknown, which stops the count) add up
    to at most ``seconds`` (None: no limit)."""
    count, used = 0, 0.0
    for estimate in estimates:
        if estimate is None or (seconds is not None and used + estimate > seconds):
            break
        used += estimate
        count += 1
    return count


#: A clean forward pass costs about this share of a train step (forward + backward).
FORWARD_SHARE = 1 / 3


def cell_seconds_from_rate(loop_images_per_s: float, method: str, model: str, epochs: int,
                           train_images: int, evaluated_images: int,
                           rate_model: str = "vgg8") -> float:
    """Rough seconds of one cell from a measured training-loop rate (images/s of
    ``rate_model``'s noise injection, e.g. ``bench.py --end-to-end``): its epochs of
    ``train_images`` scaled by the method's and model's relative cost, plus
    ``evaluated_images`` forward passes (Monte Carlo runs × test images × σ) at
    1 / :data:`FORWARD_SHARE` times the training rate."""
    scale = RELATIVE_COST.get(method, 1.0) * MODEL_COST.get(model, 1.0) \
        / MODEL_COST.get(rate_model, 1.0)
    training = epochs * train_images / loop_images_per_s * scale
    evaluation = evaluated_images * FORWARD_SHARE / loop_images_per_s \
        * MODEL_COST.get(model, 1.0) / MODEL_COST.get(rate_model, 1.0)
    return training + evaluation


def duration(seconds: float) -> str:
    """``40 s``, ``12 min``, ``3 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
