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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence

from paper.plan import TABLE2_SIGMAS  # the paper reproduction study (experiments/paper/)
from paper.published import PAPER_TABLE2

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import Budget
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.data import NUM_CLASSES
from neft_jax.harness.identity import shared_differences
from neft_jax.harness.results import Evaluation, MethodResult, RunResults, write_atomic
from neft_jax.harness.seeds import seed_list
from neft_jax.harness.sweeps import Cell, Worker, check_cells, grid_cells, run_sweep
from neft_jax.methods import REGISTRY

#: Widths of the map and the epoch counts run at each (more epochs for narrow models).
DEFAULT_POINTS = {0.125: (12, 48), 0.25: (12, 36), 0.5: (8, 24), 1.0: (4, 12)}
METHODS = ("vanilla", "noise", "irs", "noise_scaled")
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


def study_points(points: dict[float, Sequence[int]]) -> list[Point]:
    """Every (width, epochs) point, cheapest first."""
    return sorted((Point(float(w), int(e)) for w, es in points.items() for e in es),
                  key=lambda p: cheapest_first(p.width, p.epochs))


def parse_points(text: str) -> dict[float, tuple[int, ...]]:
    """``"0.125:12/48,1:4/12"`` → {0.125: (12, 48), 1.0: (4, 12)}."""
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
        points[width] = epochs
    if not points:
        raise ValueError("--points is empty")
    return points


def run_study(base: ExperimentConfig, points: Sequence[Point], out: str,
              methods: Sequence[str] = METHODS, log: Callable[[str], None] = print,
              show_progress: bool = True, budget: Budget | None = None,
              worker: Worker | None = None) -> dict:
    """Run every unfinished cell of every point (``base.seeds`` seeds from ``base.seed``);
    rewrite the report after each point."""
    data_lib.check_available(base.dataset, base.data_dir)  # before any folder is made
    os.makedirs(out, exist_ok=True)
    budget = budget or Budget(None)
    cells = grid_cells([base.model], [base.dataset], methods, [base.sigma], [None],
                       seed_list(base))
    for point in points:  # every point's finished cells made alike, before any trains
        check_cells(cells, point_config(base, point), os.path.join(out, point.name), worker)
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


#: The report's files, in the order the report line names them (the plots only when
#: there is something to draw).
REPORT_FILES = ("SCALING.md", "scaling.json", "scaling.png", "differences.png")


def write_study_report(base: ExperimentConfig, points: Sequence[Point], out: str,
                       methods: Sequence[str]) -> dict:
    """``SCALING.md``, ``scaling.json``, ``scaling.png`` and (when two methods share a
    seed) ``differences.png`` from every finished cell."""
    other_settings: list[str] = []
    finished = finished_cells(base, points, out, methods, other_settings)
    rows = collect(points, methods, finished)
    differences = paired_differences(points, methods, finished)
    chance = 100.0 / NUM_CLASSES.get(base.dataset, 10)
    report = {"settings": {"model": base.model, "dataset": base.dataset, "sigma": base.sigma,
                           "normalisation": base.normalisation,
                           "device_preset": base.device_preset, "mc_runs": base.mc_runs,
                           "batch_size": base.batch_size, "seeds": seed_list(base),
                           "points": [dataclasses.asdict(p) for p in points]},
              "rows": rows, "differences": differences, "chance": chance,
              "findings": findings(rows, chance, differences)}
    if other_settings:
        report["other_settings"] = other_settings
    write_atomic(os.path.join(out, "scaling.json"), json.dumps(report, indent=1))
    write_atomic(os.path.join(out, "SCALING.md"), format_study(report, methods))
    if rows:
        plot_study(report, methods, os.path.join(out, "scaling.png"))
    if differences:
        plot_differences(report, os.path.join(out, "differences.png"))
    return report


def _paper_reference(model: str, method: str, sigma: float) -> float | None:
    index = next((i for i, s in enumerate(TABLE2_SIGMAS) if math.isclose(s, sigma)), None)
    values = PAPER_TABLE2.get((model, method))
    return None if index is None or values is None else values[index]


def format_study(report: dict, methods: Sequence[str]) -> str:
    """The study as Markdown: one row per point, one column per method, and findings."""
    s = report["settings"]
    lines = [f"# Scaling study: {s['model']} on {s['dataset']} at σ = {s['sigma']:g} "
             f"({s['normalisation']} noise, {s['device_preset']})", "",
             "Cells: Monte Carlo accuracy (%), " + (
                 f"mean ± 95 % CI over {s['mc_runs']} runs, one seed ({s['seeds'][0]})"
                 if len(s["seeds"]) == 1 else f"mean ± 95 % CI over seeds {s['seeds']} of "
                 f"each seed's mean over {s['mc_runs']} runs")
             + f"; vanilla is trained at σ = 0. Chance: {report['chance']:g} %. Wall time "
             "per cell in minutes in brackets"
             + ("; a cell with fewer seeds names how many (one seed: ± over its runs)"
                if len(s["seeds"]) > 1 else "") + ".", "",
             "| width | epochs | optimiser steps | " + " | ".join(methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    if report.get("other_settings"):
        left_out = report["other_settings"]
        lines[-2:-2] = [f"Left out: {len(left_out)} finished cell{'s' * (len(left_out) > 1)} "
                        f"made with other settings (made with → these): {left_out[0]}"
                        + (" and more (scaling.json lists them)" if len(left_out) > 1 else "")
                        + ".", ""]
    by_point: dict[tuple, dict] = {}
    for row in report["rows"]:
        by_point.setdefault((row["width"], row["epochs"], row["steps"]), {})[row["method"]] = row
    for (width, epochs, steps), cells in sorted(by_point.items()):
        shown = []
        for method in methods:
            row = cells.get(method)
            if row is None or row["mean"] is None:
                shown.append("–" if row is None else "diverged")
            else:
                partial = row.get("seeds", 1) < len(s["seeds"])  # not every seed is in
                shown.append(f"{row['mean']:.2f} ± {row['ci95'] or 0:.2f} "
                             + (f"({row['seeds']} seed{'s' * (row['seeds'] > 1)}) "
                                if partial else "")
                             + f"[{row['wall_seconds'] / 60:.1f}]")
        lines.append(f"| ×{width:g} | {epochs} | {steps} | "
                     + " | ".join(shown) + " |")
    paper = [f"{m} {v:g}" for m in methods
             if (v := _paper_reference(s["model"], m, s["sigma"])) is not None]
    if paper:
        lines += ["", "The paper at full scale (60,000 MNIST images, 200 epochs): "
                  + ", ".join(paper) + " %."]
    found = report["findings"]

    def where(key: str) -> str:
        point = found.get(key)
        return f"at none of the {len(by_point)} finished points" if point is None else (
            f"width ×{point['width']:g}, {point['epochs']} epochs")

    lines += ["", "Smallest point (by width² × epochs) at which:",
              f"- noise injection leaves chance (CI above {report['chance'] + ABOVE_CHANCE:g} %):"
              f" {where('noise_leaves_chance')}",
              f"- IRS is above noise injection beyond the CIs: {where('irs_above_noise')}",
              f"- noise_scaled is above noise injection beyond the CIs: "
              f"{where('noise_scaled_above_noise')}",
              f"- IRS is above noise_scaled beyond the CIs: {where('irs_above_noise_scaled')}",
              "", _ci_caveat(len(s["seeds"])), ""]
    if report.get("differences"):
        lines += format_differences(report, len(by_point))
    return "\n".join(lines)


LABELS = {name: method.label for name, method in REGISTRY.items()}


def format_differences(report: dict, finished_points: int) -> list[str]:
    """The paired differences between methods, seed by seed and over the seeds."""
    seeds = report["settings"]["seeds"]
    lines = ["## Differences between methods, seed by seed", "",
             "a − b in points at σ. Within a seed both methods are scored on the same Monte "
             "Carlo noise keys, so each seed's ± is paired over its runs. \"Over seeds\" is "
             "the mean of the seeds' differences ± a Student-t 95 % interval (n − 1 degrees "
             "of freedom): the spread between trainings, which the runs' ± leaves out.", "",
             "| width | epochs | a − b | " + " | ".join(f"seed {seed}" for seed in seeds)
             + " | over seeds |", "|---|---|---|" + "---|" * (len(seeds) + 1)]
    for row in sorted(report["differences"], key=lambda d: (d["width"], d["epochs"])):
        by_seed = {p["seed"]: p for p in row["per_seed"]}
        shown = [("–" if seed not in by_seed else f"{by_seed[seed]['difference']:+.2f}" + (
            f" ± {by_seed[seed]['ci95']:.2f}" if by_seed[seed]["ci95"] is not None else ""))
            for seed in seeds]
        over = ("–" if row["t_ci95"] is None
                else f"{row['mean']:+.2f} ± {row['t_ci95']:.2f} (n = {row['seeds']})")
        lines.append(f"| ×{row['width']:g} | {row['epochs']} | {LABELS[row['a']]} − "
                     f"{LABELS[row['b']]} | " + " | ".join(shown) + f" | {over} |")
    lines += ["", f"Smallest point at which a − b's interval over at least {MIN_SEEDS_ACROSS} "
              "seeds excludes 0:"]
    for key, point in report["findings"].get("across_seeds", {}).items():
        a, b = key.split("-")
        where = (f"at none of the {finished_points} finished points" if point is None
                 else f"width ×{point['width']:g}, {point['epochs']} epochs, "
                      f"{LABELS[a] if point['sign'] > 0 else LABELS[b]} above")
        lines.append(f"- {LABELS[a]} − {LABELS[b]}: {where}")
    return lines + [""]


def _ci_caveat(seeds: int) -> str:
    """What the table's ± leaves out, for one seed or a few."""
    if seeds == 1:
        return ("One seed: each ± covers the Monte Carlo runs of one trained model, not the "
                "spread between training seeds (often several points), so a finding above "
                "needs `--seeds 3 --mc-runs 200` at that point before it is a conclusion.")
    from scipy.stats import t

    from neft_jax.stats import Z95

    wider = t.ppf(0.975, seeds - 1) / Z95
    return (f"± is {Z95:g}·std/√n over the n = {seeds} seeds' means (method.md §5's rule for "
            f"runs); a Student-t interval would be {wider:.1f}× wider.")


def legend_handles(axes) -> dict:
    """Label → the first handle with that label over ``axes``, for one figure legend."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    return handles


def plot_study(report: dict, methods: Sequence[str], path: str) -> None:
    """Accuracy against optimiser steps: a panel per method, a line per width (hollow
    circles: each seed's mean where a point has several), the paper's full-scale number
    dashed, chance dotted. When every point lies below 50 %, a second
    row shows the same panels zoomed to the points' range."""
    from neft_jax.harness.reporting import _pyplot, save_figure

    plt = _pyplot()
    s = report["settings"]
    found = [r for r in report["rows"] if r["method"] in methods and r["mean"] is not None]
    low = [r["mean"] - (r["ci95"] or 0) for r in found] + [report["chance"]]
    high = [r["mean"] + (r["ci95"] or 0) for r in found] + [report["chance"]]
    zoom = (max(0.0, min(low) - 2), max(high) + 2) if max(high) < 50 else None
    rows = 2 if zoom else 1
    fig, axes = plt.subplots(rows, len(methods), figsize=(4 * len(methods), 3.2 * rows + 0.6),
                             dpi=110, squeeze=False, sharey="row")
    widths = sorted({r["width"] for r in found})  # one colour per width in every panel
    for column, method in enumerate(methods):
        points = [r for r in found if r["method"] == method]
        reference = _paper_reference(s["model"], method, s["sigma"])
        for row in range(rows):
            ax = axes[row][column]
            for width in sorted({r["width"] for r in points}):
                line = sorted((r for r in points if r["width"] == width),
                              key=lambda r: r["steps"])
                colour = f"C{widths.index(width)}"
                ax.errorbar([r["steps"] for r in line], [r["mean"] for r in line],
                            yerr=[r["ci95"] or 0 for r in line], marker="o", capsize=3,
                            color=colour, label=f"width ×{width:g}")
                several = [r for r in line if len(r.get("seed_means") or ()) > 1]
                if several:  # each seed's mean, so that the spread between trainings shows
                    ax.scatter([r["steps"] for r in several for _ in r["seed_means"]],
                               [m for r in several for m in r["seed_means"]], s=14,
                               facecolors="none", edgecolors=colour, linewidths=0.8,
                               label="one seed's mean", zorder=3)
            if reference is not None and row == 0:
                ax.axhline(reference, color="k", linestyle="--", linewidth=1,
                           label="the paper (full scale)")
            ax.axhline(report["chance"], color="grey", linestyle=":", linewidth=1,
                       label="chance")
            ax.set(xlabel="optimiser steps" if row == rows - 1 else None, xscale="log",
                   ylim=zoom if row else (0, 100))
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        title = method + (f" (paper: {reference:g} %)" if reference is not None else "")
        axes[0][column].set_title(title)
    axes[0][0].set_ylabel(f"accuracy at σ = {s['sigma']:g} (%)")
    if zoom:
        axes[1][0].set_ylabel("the same, zoomed (%)")
    handles = legend_handles(axes[0])  # every width, whichever panel has it
    if "one seed's mean" in handles:  # in no width's colour: it stands for every width
        handles["one seed's mean"] = plt.Line2D([], [], linestyle="none", marker="o",
                                                markerfacecolor="none", color="grey")
    ordered = sorted(handles, key=lambda label: (not label.startswith("width"), label))
    fig.legend([handles[label] for label in ordered], ordered, loc="lower center",
               ncol=len(ordered), frameon=False)
    save_figure(fig, path, axis_legends=False, bottom_margin=0.4 / fig.get_figheight())


def plot_differences(report: dict, path: str) -> None:
    """The paired differences a − b (points at σ): a panel per pair of :data:`PAIRS`, the
    study's points along x (cheapest first). Each seed's difference is a small marker
    with its CI paired over the runs; the mean over the seeds is a large one with its
    Student-t 95 % interval (where n ≥ 2 seeds). Zero is the dotted line: an interval over
    seeds that misses it is a difference between the methods across trainings."""
    from neft_jax.harness.reporting import _pyplot, save_figure

    plt = _pyplot()
    differences = report["differences"]
    pairs = [pair for pair in PAIRS if any((d["a"], d["b"]) == pair for d in differences)]
    points = sorted({(d["width"], d["epochs"]) for d in differences},
                    key=lambda p: cheapest_first(*p))
    seeds = sorted({p["seed"] for d in differences for p in d["per_seed"]})
    panel_width = max(4.2, 0.6 * len(points) + 1.2)  # room for every point's label
    fig, axes = plt.subplots(1, len(pairs), figsize=(panel_width * len(pairs), 3.8), dpi=110,
                             squeeze=False, sharey=True)
    means = any(d["t_ci95"] is not None for d in differences)
    # the seeds side by side around the point, or left of it with the mean on its right
    left, span = (-0.45, 0.45) if means else (-0.3, 0.6)
    step = span / len(seeds)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        for d in (d for d in differences if (d["a"], d["b"]) == (a, b)):
            x = points.index((d["width"], d["epochs"]))
            for p in d["per_seed"]:
                ax.errorbar(x + left + step * (seeds.index(p["seed"]) + 0.5), p["difference"],
                            yerr=p["ci95"] or 0, marker="o", markersize=4, capsize=2,
                            color=f"C{seeds.index(p['seed']) % 10}",
                            label=f"seed {p['seed']} (± over runs)")
            if d["t_ci95"] is not None:
                ax.errorbar(x + 0.2, d["mean"], yerr=d["t_ci95"], marker="D", markersize=7,
                            capsize=4, linewidth=2, color="k",
                            label="mean over seeds (± Student-t)")
        ax.axhline(0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(points)), [f"×{w:g}\n{e} ep." for w, e in points],
                      fontsize=8)
        ax.set(title=f"{LABELS[a]} − {LABELS[b]}", xlabel="width, epochs",
               xlim=(-0.6, len(points) - 0.4))
    axes[0][0].set_ylabel(f"difference at σ = {report['settings']['sigma']:g} (points)")
    handles = legend_handles(axes[0])
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=len(handles), frameon=False, fontsize=8)
    save_figure(fig, path, axis_legends=False, bottom_margin=0.35 / fig.get_figheight())
