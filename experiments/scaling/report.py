"""The scaling study's report: ``SCALING.md`` (table and findings), ``scaling.json``,
``scaling.png`` (accuracy against optimiser steps, one panel per method, one line per
width, the paper's full-scale number as a reference line) and ``differences.png`` (the
paired differences between methods, seed by seed and over the seeds), from the
:class:`~scaling.collect.StudyReport` :mod:`scaling.collect` reads from the finished cells.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from paper.published import published_accuracy  # the paper study (experiments/paper/)

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.results import write_atomic
from neft_jax.methods import REGISTRY

from .collect import (
    ABOVE_CHANCE,
    MIN_SEEDS_ACROSS,
    PAIRS,
    Point,
    Row,
    StudyReport,
    cheapest_first,
    collect_study,
)

#: The report's files, in the order the report line names them (the plots only when
#: there is something to draw).
REPORT_FILES = ("SCALING.md", "scaling.json", "scaling.png", "differences.png")


def write_study_report(base: ExperimentConfig, points: Sequence[Point], out: str,
                       methods: Sequence[str]) -> StudyReport:
    """``SCALING.md``, ``scaling.json``, ``scaling.png`` and (when two methods share a
    seed) ``differences.png`` from every finished cell."""
    report = collect_study(base, points, out, methods)
    write_atomic(os.path.join(out, "scaling.json"), json.dumps(report.to_json(), indent=1))
    write_atomic(os.path.join(out, "SCALING.md"), format_study(report, methods))
    if report.rows:
        plot_study(report, methods, os.path.join(out, "scaling.png"))
    if report.differences:
        plot_differences(report, os.path.join(out, "differences.png"))
    return report


def _paper_reference(dataset: str, model: str, method: str, sigma: float) -> float | None:
    """The paper's accuracy (%) for this cell (its bound, for a "≤" entry), if it has one."""
    found = published_accuracy(dataset, model, method, sigma)
    return None if found is None else found[0]


def format_study(report: StudyReport, methods: Sequence[str]) -> str:
    """The study as Markdown: one row per point, one column per method, and findings."""
    s = report.settings
    lines = [f"# Scaling study: {s.model} on {s.dataset} at σ = {s.sigma:g} "
             f"({s.normalisation} noise, {s.device_preset})", "",
             "Cells: Monte Carlo accuracy (%), " + (
                 f"mean ± 95 % CI over {s.mc_runs} runs, one seed ({s.seeds[0]})"
                 if len(s.seeds) == 1 else f"mean ± 95 % CI over seeds {list(s.seeds)} of "
                 f"each seed's mean over {s.mc_runs} runs")
             + f"; vanilla is trained at σ = 0. Chance: {report.chance:g} %. Wall time "
             "per cell in minutes in brackets"
             + ("; a cell with fewer seeds names how many (one seed: ± over its runs)"
                if len(s.seeds) > 1 else "") + ".", ""]
    if s.made_with:
        lines += ["Made with (code, machine, day): "
                  + "; ".join(", ".join(m) for m in s.made_with) + ".", ""]
    lines += ["| width | epochs | optimiser steps | " + " | ".join(methods) + " |",
              "|---|---|---|" + "---|" * len(methods)]
    if report.other_settings:
        left_out = report.other_settings
        lines[-2:-2] = [f"Left out: {len(left_out)} finished cell{'s' * (len(left_out) > 1)} "
                        f"made with other settings (made with → these): {left_out[0]}"
                        + (" and more (scaling.json lists them)" if len(left_out) > 1 else "")
                        + ".", ""]
    by_point: dict[tuple[float, int, int], dict[str, Row]] = {}
    for row in report.rows:
        by_point.setdefault((row.width, row.epochs, row.steps), {})[row.method] = row
    for (width, epochs, steps), cells in sorted(by_point.items()):
        shown = []
        for method in methods:
            row = cells.get(method)
            if row is None or row.mean is None:
                shown.append("–" if row is None else "diverged")
            else:
                partial = row.seeds < len(s.seeds)  # not every seed is in, or has a mean
                spread = "(no interval) " if row.ci95 is None else f"± {row.ci95:.2f} "
                shown.append(f"{row.mean:.2f} {spread}"
                             + (f"({row.seeds} seed{'s' * (row.seeds > 1)}) "
                                if partial else "")
                             + (f"({row.diverged_seeds} diverged) " if row.diverged_seeds
                                else "")
                             + f"[{row.wall_seconds / 60:.1f}]")
        lines.append(f"| ×{width:g} | {epochs} | {steps} | "
                     + " | ".join(shown) + " |")
    paper = [f"{m} {v:g}" for m in methods
             if (v := _paper_reference(s.dataset, s.model, m, s.sigma)) is not None]
    if paper:
        lines += ["", "The paper at full scale (the whole training set, 200 epochs): "
                  + ", ".join(paper) + " %."]

    def where(point: Point | None) -> str:
        return f"at none of the {len(by_point)} finished points" if point is None else (
            f"width ×{point.width:g}, {point.epochs} epochs")

    found = report.findings
    lines += ["", "Smallest point (by width² × epochs) at which:",
              f"- noise injection leaves chance (CI above {report.chance + ABOVE_CHANCE:g} %):"
              f" {where(found.noise_leaves_chance)}",
              f"- IRS is above noise injection beyond the CIs: {where(found.irs_above_noise)}",
              f"- noise_scaled is above noise injection beyond the CIs: "
              f"{where(found.noise_scaled_above_noise)}",
              "- IRS is above noise_scaled beyond the CIs: "
              f"{where(found.irs_above_noise_scaled)}",
              "", _ci_caveat(len(s.seeds)), ""]
    if report.differences:
        lines += format_differences(report, len(by_point))
    return "\n".join(lines)


LABELS = {name: method.label for name, method in REGISTRY.items()}


def format_differences(report: StudyReport, finished_points: int) -> list[str]:
    """The paired differences between methods, seed by seed and over the seeds."""
    seeds = report.settings.seeds
    lines = ["## Differences between methods, seed by seed", "",
             "a − b in points at σ. Within a seed both methods are scored on the same Monte "
             "Carlo noise keys, so each seed's ± is paired over its runs. \"Over seeds\" is "
             "the mean of the seeds' differences ± a Student-t 95 % interval (n − 1 degrees "
             "of freedom): the spread between trainings, which the runs' ± leaves out.", "",
             "| width | epochs | a − b | " + " | ".join(f"seed {seed}" for seed in seeds)
             + " | over seeds |", "|---|---|---|" + "---|" * (len(seeds) + 1)]
    for row in sorted(report.differences, key=lambda d: (d.width, d.epochs)):
        by_seed = {p.seed: p for p in row.per_seed}
        shown = [("–" if seed not in by_seed else f"{by_seed[seed].difference:+.2f}" + (
            f" ± {by_seed[seed].ci95:.2f}" if by_seed[seed].ci95 is not None else ""))
            for seed in seeds]
        over = ("–" if row.t_ci95 is None
                else f"{row.mean:+.2f} ± {row.t_ci95:.2f} (n = {row.seeds})")
        lines.append(f"| ×{row.width:g} | {row.epochs} | {LABELS[row.a]} − "
                     f"{LABELS[row.b]} | " + " | ".join(shown) + f" | {over} |")
    lines += ["", f"Smallest point at which a − b's interval over at least {MIN_SEEDS_ACROSS} "
              "seeds excludes 0:"]
    for (a, b), point in report.findings.across_seeds.items():
        where = (f"at none of the {finished_points} finished points" if point is None
                 else f"width ×{point.width:g}, {point.epochs} epochs, "
                      f"{LABELS[a] if point.sign > 0 else LABELS[b]} above")
        lines.append(f"- {LABELS[a]} − {LABELS[b]}: {where}")
    return lines + [""]


def _ci_caveat(seeds: int) -> str:
    """What the table's ± leaves out, for one seed or a few."""
    if seeds == 1:
        return ("One seed: each ± covers the Monte Carlo runs of one trained model, not the "
                "spread between training seeds (often several points), so a finding above "
                "needs `--seeds 3 --mc-runs 200` at that point before it is a conclusion.")
    from neft_jax.stats import student_t

    quantile = student_t(0.975, seeds - 1)
    return (f"± is the Student-t 95 % interval over the n = {seeds} seeds' means, "
            f"{quantile:.2f}·std/√n (n − 1 degrees of freedom; method.md §5): the spread "
            "between trainings.")


def legend_handles(axes) -> dict:
    """Label → the first handle with that label over ``axes``, for one figure legend."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    return handles


def plot_study(report: StudyReport, methods: Sequence[str], path: str) -> None:
    """Accuracy against optimiser steps: a panel per method, a line per width (hollow
    circles: each seed's mean where a point has several), the paper's full-scale number
    dashed, chance dotted. When every point lies below 50 %, a second
    row shows the same panels zoomed to the points' range."""
    from neft_jax.harness.reporting import _pyplot, save_figure

    plt = _pyplot()
    s = report.settings
    found = [r for r in report.rows if r.method in methods and r.mean is not None]
    low = [r.mean - (r.ci95 or 0) for r in found] + [report.chance]
    high = [r.mean + (r.ci95 or 0) for r in found] + [report.chance]
    zoom = (max(0.0, min(low) - 2), max(high) + 2) if max(high) < 50 else None
    rows = 2 if zoom else 1
    fig, axes = plt.subplots(rows, len(methods), figsize=(4 * len(methods), 3.2 * rows + 0.6),
                             dpi=110, squeeze=False, sharey="row")
    widths = sorted({r.width for r in found})  # one colour per width in every panel
    for column, method in enumerate(methods):
        points = [r for r in found if r.method == method]
        reference = _paper_reference(s.dataset, s.model, method, s.sigma)
        for row in range(rows):
            ax = axes[row][column]
            for width in sorted({r.width for r in points}):
                line = sorted((r for r in points if r.width == width),
                              key=lambda r: r.steps)
                colour = f"C{widths.index(width)}"
                ax.errorbar([r.steps for r in line], [r.mean for r in line],
                            yerr=[r.ci95 or 0 for r in line], marker="o", capsize=3,
                            color=colour, label=f"width ×{width:g}")
                several = [r for r in line if len(r.seed_means) > 1]
                if several:  # each seed's mean, so that the spread between trainings shows
                    ax.scatter([r.steps for r in several for _ in r.seed_means],
                               [m for r in several for m in r.seed_means], s=14,
                               facecolors="none", edgecolors=colour, linewidths=0.8,
                               label="one seed's mean", zorder=3)
            if reference is not None and row == 0:
                ax.axhline(reference, color="k", linestyle="--", linewidth=1,
                           label="the paper (full scale)")
            ax.axhline(report.chance, color="grey", linestyle=":", linewidth=1,
                       label="chance")
            ax.set(xlabel="optimiser steps" if row == rows - 1 else None, xscale="log",
                   ylim=zoom if row else (0, 100))
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        title = method + (f" (paper: {reference:g} %)" if reference is not None else "")
        axes[0][column].set_title(title)
    axes[0][0].set_ylabel(f"accuracy at σ = {s.sigma:g} (%)")
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


def plot_differences(report: StudyReport, path: str) -> None:
    """The paired differences a − b (points at σ): a panel per pair of :data:`PAIRS`, the
    study's points along x (cheapest first). Each seed's difference is a small marker
    with its CI paired over the runs; the mean over the seeds is a large one with its
    Student-t 95 % interval (where n ≥ 2 seeds). Zero is the dotted line: an interval over
    seeds that misses it is a difference between the methods across trainings."""
    from neft_jax.harness.reporting import _pyplot, save_figure

    plt = _pyplot()
    differences = report.differences
    pairs = [pair for pair in PAIRS if any((d.a, d.b) == pair for d in differences)]
    points = sorted({(d.width, d.epochs) for d in differences},
                    key=lambda p: cheapest_first(*p))
    seeds = sorted({p.seed for d in differences for p in d.per_seed})
    panel_width = max(4.2, 0.6 * len(points) + 1.2)  # room for every point's label
    fig, axes = plt.subplots(1, len(pairs), figsize=(panel_width * len(pairs), 3.8), dpi=110,
                             squeeze=False, sharey=True)
    means = any(d.t_ci95 is not None for d in differences)
    # the seeds side by side around the point, or left of it with the mean on its right
    left, span = (-0.45, 0.45) if means else (-0.3, 0.6)
    step = span / len(seeds)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        for d in (d for d in differences if (d.a, d.b) == (a, b)):
            x = points.index((d.width, d.epochs))
            for p in d.per_seed:
                ax.errorbar(x + left + step * (seeds.index(p.seed) + 0.5), p.difference,
                            yerr=p.ci95 or 0, marker="o", markersize=4, capsize=2,
                            color=f"C{seeds.index(p.seed) % 10}",
                            label=f"seed {p.seed} (± over runs)")
            if d.t_ci95 is not None:
                ax.errorbar(x + 0.2, d.mean, yerr=d.t_ci95, marker="D", markersize=7,
                            capsize=4, linewidth=2, color="k",
                            label="mean over seeds (± Student-t)")
        ax.axhline(0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(points)), [f"×{w:g}\n{e} ep." for w, e in points],
                      fontsize=8)
        ax.set(title=f"{LABELS[a]} − {LABELS[b]}", xlabel="width, epochs",
               xlim=(-0.6, len(points) - 0.4))
    axes[0][0].set_ylabel(f"difference at σ = {report.settings.sigma:g} (points)")
    handles = legend_handles(axes[0])
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=len(handles), frameon=False, fontsize=8)
    save_figure(fig, path, axis_legends=False, bottom_margin=0.35 / fig.get_figheight())
