"""Resumable grids of experiments: model × dataset × method × σ × α × seed.

Each cell is one single-method, single-seed experiment in ``out/cells/<cell-name>/``. A
cell whose ``results.json`` is complete is skipped, so a sweep that was killed or
re-launched never redoes a finished one; a half-finished cell resumes. Both happen
only when the cell was made with this command's settings (its ``settings.json``,
:mod:`neft_jax.harness.identity`); a launch with other settings on the same ``out`` is
refused before any cell runs, naming the settings that differ.

Many workers (processes on one machine, or the tasks of a cluster array job on a
shared filesystem) can run the same sweep on one ``out``: each cell is locked by
the worker training it and the others skip it, and with :class:`Worker` ``I/N``
a worker takes only every N-th cell (a static split). After every cell the combined
table is rewritten (``sweep.csv``, ``sweep.json``); the plots, ``accuracy_vs_sigma.png``
(mean over seeds, per method, per model × dataset) and, when the grid has several α,
``alpha_search.png``, when the sweep ends or stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import Budget, cost_key, estimate_seconds, estimate_total, fits
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import (
    SettingsChanged,
    check_same,
    stored_identity,
)
from neft_jax.harness.locking import FolderBusy
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.results import RunResults
from neft_jax.harness.sweep_table import (  # noqa: F401  (part of this module's API)
    aggregate_over_seeds,
    collect_rows,
    write_combined,
)
from neft_jax.train import method_spec, uses_feedback


@dataclasses.dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    method: str
    sigma: float
    alpha: float | None
    seed: int

    @property
    def name(self) -> str:
        alpha = "default" if self.alpha is None else f"{self.alpha:g}"
        if not uses_feedback(self.method):
            alpha = "none"
        return (f"{self.model}-{self.dataset}-{self.method}-sigma{self.sigma:g}"
                f"-alpha{alpha}-seed{self.seed}")


@dataclasses.dataclass(frozen=True)
class Worker:
    """Worker ``index`` of ``count`` (1-based): takes the cells at positions ≡ index−1 mod
    count of a grid (every cell when count is 1)."""

    index: int = 1
    count: int = 1

    def __post_init__(self):
        if not 1 <= self.index <= self.count:
            raise ValueError(f"--worker must be I/N with 1 <= I <= N, got "
                             f"{self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Worker:
        """``"I/N"`` → Worker(I, N)."""
        try:
            index, count = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ValueError(f"--worker must be I/N (e.g. 2/8), got {text!r}") from None
        return cls(index, count)

    def takes(self, position: int) -> bool:
        return position % self.count == self.index - 1


#: The one worker of a sweep that is not split.
ALONE = Worker()


def grid_cells(models: Sequence[str], datasets: Sequence[str], methods: Sequence[str],
               sigmas: Sequence[float], alphas: Sequence[float | None],
               seeds: Sequence[int]) -> list[Cell]:
    """Every cell of the grid; α only multiplies IRS/OVF cells, and an α listed twice (the
    authors' α also given as ``default``, None) makes one cell, the first listed. The
    authors' α, however given, is the cell ``alphadefault``, so that sweeps find it.

    Seeds are the outermost loop, so a sweep stopped early has complete tables
    (every model × dataset × σ × method) for its first seeds.
    """
    from neft_jax.harness.paper import default_alpha

    cells = []
    for seed, model, dataset, sigma, method in itertools.product(seeds, models, datasets,
                                                                 sigmas, methods):
        if not uses_feedback(method):
            cells.append(Cell(model, dataset, method, float(sigma), None, int(seed)))
            continue
        taken, authors = set(), default_alpha(model, dataset, method)
        for alpha in alphas:
            value = authors if alpha is None else alpha
            if value in taken:
                continue
            taken.add(value)
            same = math.isclose(value, authors, rel_tol=1e-12)  # one name: one cell folder
            cells.append(Cell(model, dataset, method, float(sigma), None if same else alpha,
                              int(seed)))
    named: dict[str, Cell] = {}
    for cell in cells:  # a name is a folder: two cells must never share one
        other = named.setdefault(cell.name, cell)
        if other != cell:
            raise ValueError(f"two cells of the grid would share the folder {cell.name} "
                             f"(σ {other.sigma!r} and {cell.sigma!r}, α {other.alpha!r} and "
                             f"{cell.alpha!r}): give values that differ in 6 significant digits")
    return cells


def train_clean_once(cells: Sequence[Cell]) -> tuple[list[Cell], list[Cell], list[float]]:
    """A grid's cells as ``(noisy, clean, sigmas)``: the cells of methods trained at noise,
    as they are; for a method trained clean (vanilla), whose training is the same at every
    σ, one cell at σ = 0 per model × dataset × seed in place of one per σ; and the grid's
    σ, at which each clean cell is then scored (``extra_sigmas``)."""
    noisy = [c for c in cells if method_spec(c.method).perturbs]
    clean = list(dict.fromkeys(dataclasses.replace(c, sigma=0.0) for c in cells
                               if not method_spec(c.method).perturbs))
    sigmas = sorted({c.sigma for c in cells if not method_spec(c.method).perturbs})
    return noisy, clean, sigmas


def cell_config(base: ExperimentConfig, cell: Cell, path: str) -> ExperimentConfig:
    """The single-method, single-seed experiment of ``cell`` in folder ``path``."""
    return dataclasses.replace(
        base, model=cell.model, dataset=cell.dataset, methods=(cell.method,),
        sigma=cell.sigma, alpha=cell.alpha, seed=cell.seed, seeds=1, out=path,
        resume=True, overwrite=False)  # another worker may create the folder at any time


#: What to do about cells made with other settings.
OTHER_SETTINGS_REMEDY = ("use another --out, or delete the cells made with the old settings "
                         "to train them again")


def check_cells(cells: Sequence[Cell], base: ExperimentConfig, out: str) -> None:
    """Every existing cell (of the whole grid: another worker's share is tabled too) must
    have been made with the settings this command gives it (:func:`made_otherwise`), so
    that a finished cell is reused, a half-done one resumed, and one made by another worker
    tabled, only when they match."""
    check_cell_groups([(cells, base, out)])


def check_cell_groups(groups: Iterable[tuple[Sequence[Cell], ExperimentConfig, str]]) -> None:
    """:func:`check_cells` over grids ``(cells, base, out)`` (a study's stages or points):
    :class:`~neft_jax.harness.identity.SettingsChanged`, one line naming the first cell made
    otherwise, the settings that differ (old → new) and how many other cells of every grid
    differ too (a cell linked into several grids counted once)."""
    changed: dict[str, SettingsChanged] = {}
    for cells, base, out in groups:
        for cell in cells:
            path = os.path.join(out, "cells", cell.name)
            if not os.path.isdir(path) or os.path.realpath(path) in changed:
                continue
            error = made_otherwise(path, base, cell)
            if error is not None:
                changed[os.path.realpath(path)] = error
    if changed:
        first, more = next(iter(changed.values())), len(changed) - 1
        raise SettingsChanged(str(first) + (
            f" ({more} more cell{'s differ' if more > 1 else ' differs'} too)" if more else ""))


def made_otherwise(path: str, base: ExperimentConfig, cell: Cell) -> SettingsChanged | None:
    """How the cell in ``path`` differs from the settings ``base`` gives ``cell`` (its
    ``settings.json``, else ``results.json``); None when they match or it has none yet."""
    found = stored_identity(path)
    if found is None:
        return None
    try:
        check_same(found[0], cell_config(base, cell, path), path, OTHER_SETTINGS_REMEDY)
    except SettingsChanged as error:
        return error
    return None


def _check_other_workers_cell(path: str, base: ExperimentConfig, cell: Cell) -> None:
    """A cell another worker finished or holds must be made with this command's settings:
    workers started with other settings on one ``out`` are refused, not tabled together."""
    error = made_otherwise(path, base, cell)
    if error is not None:
        raise SettingsChanged(f"another worker on this --out runs other settings: {error}")


def cell_done(path: str, method: str, sigmas: Sequence[float] = ()) -> bool:
    """Whether ``method`` in ``path`` is final (diverged, or scored at every σ its results
    list and every σ of ``sigmas``: a grid whose σ grew scores the new ones)."""
    results_path = os.path.join(path, "results.json")
    if not os.path.exists(results_path):
        return False
    results = RunResults.load(results_path)
    return method in results.methods and results.methods[method].done(
        {*results.eval_sigmas, *sigmas})


def cell_done_as_given(path: str, cell: Cell, base: ExperimentConfig) -> bool:
    """Whether ``cell`` in ``path`` is final at every σ ``base`` scores it at."""
    return cell_done(path, cell.method, cell_config(base, cell, path).eval_sigmas)


def run_sweep(cells: Sequence[Cell], base: ExperimentConfig, out: str,
              log: Callable[[str], None] = print, show_progress: bool = True,
              budget: Budget | None = None, worker: Worker | None = None,
              tabled: Sequence[Cell] | None = None, numbered_from: int = 0) -> list[dict]:
    """Run every unfinished cell (of ``worker``'s share; None: all); rewrite the combined
    table (sweep.json, sweep.csv) of ``tabled`` (default: ``cells``; a grid run in parts
    with different settings tables all of them; its log numbers this part's cells from
    ``numbered_from`` + 1 of them all) after each, and its plots when the sweep ends or
    stops (≈ 1 s of drawing, too much to repeat after every cell); return its rows.

    After each trained cell it logs the time left, estimated from this launch's cells.
    With ``budget``, a cell starts only if its method's measured time (finished cells of
    this or earlier launches) says it ends in time, else :class:`BudgetExhausted`.
    """
    worker = worker or ALONE
    for dataset in dict.fromkeys(cell.dataset for cell in cells):  # before any folder is made
        data_lib.check_available(dataset, base.data_dir)
    check_cells(cells, base, out)
    os.makedirs(os.path.join(out, "cells"), exist_ok=True)

    def done(cell: Cell) -> bool:
        return cell_done_as_given(os.path.join(out, "cells", cell.name), cell, base)

    todo = [c for i, c in enumerate(cells) if worker.takes(i) and not done(c)]
    budget = budget or Budget(None)
    measured = budget.durations
    launched: dict[str, list[float]] = defaultdict(list)  # this launch's cells only

    def key(cell: Cell) -> str:
        return cost_key(cell.method, cell.model, base.width, base.epochs)

    if budget.seconds is not None:  # only a real budget needs the earlier cells' times
        for cell, seconds in measured_seconds([c for c in cells if c not in todo], out):
            budget.record(key(cell), seconds)
    if budget.seconds is not None and todo:
        fit = fits(measured, [key(c) for c in todo], budget.remaining())
        log(f"time budget: {budget.remaining():.0f} s left; by the measured cell times "
            f"{fit} of the {len(todo)} cells left fit" if measured else
            f"time budget: {budget.remaining():.0f} s left; no cell measured yet")
    try:
        for i, cell in enumerate(cells):
            where = f"[{numbered_from + i + 1}/{len(tabled or cells)}] {cell.name}"
            path = os.path.join(out, "cells", cell.name)
            if not worker.takes(i):
                continue
            if cell not in todo:
                log(f"{where}: done before, skipped")
                continue
            if done(cell):  # finished by another worker since this launch began
                _check_other_workers_cell(path, base, cell)
                log(f"{where}: done by another worker, skipped")
                todo.remove(cell)
                continue
            budget.check(cell.name, estimate_seconds(measured, key(cell)))
            log(where)
            start = time.perf_counter()
            try:
                run_experiment(cell_config(base, cell, path), log=log, show_progress=show_progress)
            except FolderBusy:  # another worker holds this cell: it trains it, we go on
                _check_other_workers_cell(path, base, cell)
                log(f"{where}: held by another worker, skipped")
                todo.remove(cell)
                continue
            seconds = time.perf_counter() - start
            launched[key(cell)].append(seconds)
            budget.record(key(cell), seconds)
            todo.remove(cell)
            left = estimate_total(launched, [key(c) for c in todo])
            fit = (f"; {fits(measured, [key(c) for c in todo], budget.remaining())} of them fit "
                   f"in the {max(budget.remaining(), 0):.0f} s of budget left"
                   if budget.seconds is not None else "")
            log(f"{where}: {seconds:.0f} s"
                + (f"; about {max(left / 60, 1):.0f} min left for {len(todo)} more"
                   f" cell{'s' if len(todo) > 1 else ''}{fit}" if todo else ""))
            write_combined(tabled or cells, out, plots=False)
    except BaseException:
        if launched:  # the plots of what this launch finished, on any stop (best effort)
            with contextlib.suppress(Exception):
                write_combined(tabled or cells, out)
        raise
    check_cells(cells, base, out)  # what other workers made since, before it is tabled
    unfinished = [c.name for c in cells if not done(c)]
    if unfinished:  # held by workers that may still run, or that were stopped
        log(f"{len(cells) - len(unfinished)} of {len(cells)} cells finished; not yet: "
            f"{', '.join(unfinished[:3])}{', …' if len(unfinished) > 3 else ''} (held by "
            "another worker, or not this --worker's share): when those workers are done, "
            "run the same command again to finish any that were stopped")
    return write_combined(tabled or cells, out)


def measured_seconds(cells: Sequence[Cell], out: str) -> list[tuple[Cell, float]]:
    """Wall seconds of each finished cell (its ``results.json``)."""
    seconds = []
    for cell in cells:
        path = os.path.join(out, "cells", cell.name, "results.json")
        if os.path.exists(path):
            wall = RunResults.load(path).wall_seconds
            if wall:
                seconds.append((cell, wall))
    return seconds
