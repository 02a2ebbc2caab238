"""Where the paper's regime starts: a resumable study over model width × training length.

Each point (width, epochs) of the study is a sweep (:mod:`neft_jax.harness.sweeps`)
in ``out/w<width>-e<epochs>/`` over the methods at one σ (vanilla trained at σ = 0
and evaluated at σ), so the study inherits the sweeps' resume, locks, workers and
time budget, and their settings check: every point's cells are checked against this
command's settings before any trains, and the report leaves out (naming them) cells
made with other settings. Points run cheapest first (width × epochs), so a study stopped early
holds the small end of the map. After each point, ``SCALING.md`` (table and
findings), ``scaling.json``, ``scaling.png`` (accuracy against optimiser steps,
one panel per method, one line per width, the paper's full-scale number as a
reference line) and ``differences.png`` (the paired differences between methods,
seed by seed and over the seeds) are rewritten from every finished cell.

Here: the points and the run; :mod:`scaling.collect` reads the rows, :mod:`scaling.report`
writes the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import Budget
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.seeds import seed_list
from neft_jax.harness.sweeps import Worker, check_cell_groups, grid_cells, run_sweep

from .collect import Point, StudyReport, cheapest_first, point_config
from .report import write_study_report

#: Widths of the map and the epoch counts run at each (more epochs for narrow models).
DEFAULT_POINTS = {0.125: (12, 48), 0.25: (12, 36), 0.5: (8, 24), 1.0: (4, 12)}
METHODS = ("vanilla", "noise", "irs", "noise_scaled")


def study_points(points: dict[float, Sequence[int]]) -> list[Point]:
    """Every (width, epochs) point, cheapest first."""
    return sorted((Point(float(w), int(e)) for w, es in points.items() for e in es),
                  key=lambda p: cheapest_first(p.width, p.epochs))


def parse_points(text: str) -> dict[float, tuple[int, ...]]:
    """``"0.125:12/48,1:4/12"`` → {0.125: (12, 48), 1.0: (4, 12)}; a width given twice
    keeps the epochs of both (``0.125:12,0.125:48`` is ``0.125:12/48``)."""
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            width, epochs = item.split(":")
            width, epochs = float(width), tuple(int(e) for e in epochs.split("/"))
        except ValueError:
            raise ValueError(f"--points must look like 0.125:12/48,1:4/12 (width:epochs/...),"
                             f" got {item!r}") from None
        if not (0 < width <= 8 and epochs and all(e >= 1 for e in epochs)):
            raise ValueError(f"--points: width must be in (0, 8] and epochs >= 1, got {item!r}")
        points[width] = tuple(dict.fromkeys(points.get(width, ()) + epochs))
    if not points:
        raise ValueError("--points is empty")
    return points


def run_study(base: ExperimentConfig, points: Sequence[Point], out: str,
              methods: Sequence[str] = METHODS, log: Callable[[str], None] = print,
              show_progress: bool = True, budget: Budget | None = None,
              worker: Worker | None = None) -> StudyReport:
    """Run every unfinished cell of every point (``base.seeds`` seeds from ``base.seed``);
    rewrite the report after each point."""
    data_lib.check_available(base.dataset, base.data_dir)  # before any folder is made
    os.makedirs(out, exist_ok=True)
    budget = budget or Budget(None)
    cells = grid_cells([base.model], [base.dataset], methods, [base.sigma], [None],
                       seed_list(base))
    check_cell_groups([(cells, point_config(base, point), os.path.join(out, point.name))
                       for point in points])  # every point's cells, before any trains
    try:
        for i, point in enumerate(points):
            if i:  # the report of the points so far (the last one's is written below)
                write_study_report(base, points, out, methods)
            log(f"== point {i + 1}/{len(points)}: width ×{point.width:g}, {point.epochs} epochs")
            run_sweep(cells, point_config(base, point), os.path.join(out, point.name), log=log,
                      show_progress=show_progress, budget=budget, worker=worker)
    finally:  # also after an interruption or an exhausted budget
        report = write_study_report(base, points, out, methods)
    return report

