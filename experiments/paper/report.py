"""The paper reproduction's report: REPORT.md, report.json and report.png beside the paper.

:func:`write_report` turns whatever stages of the plan have finished (read by
:func:`~paper.collect.collect_report`) into the tables of the paper (II, III, V), the α
search, EKL, the σ = 0 vanilla sweep and, when it ran, the core stage, with the published
numbers (method.md §6, :mod:`paper.published`) beside ours. The core stage is also shown
seed by seed (clean accuracy; for IRS the feedback term's size and the exits' accuracies
at the last epoch) with the differences between its methods within each seed, paired over
the same Monte Carlo noise instances.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.results import write_atomic

from .cells import AlphaGrid, CoreCell, CoreDifference
from .collect import ModelReport, TableCell, collect_report, table_cell
from .plan import ABLATION_SIGMA, Plan, is_control
from .published import (
    MNIST_DATASETS,
    paper_accuracy,
    paper_noise_note,
    published_ablation,
    published_not_converged,
    table3_sigma,
)


def _feedback_size(ratio: float | None) -> str:
    """The feedback term's RMS over the logits', as a percentage (× from 10× on)."""
    if ratio is None:
        return "–"
    if ratio >= 10:
        return f"{ratio:.0f}×"
    return "< 0.01 %" if ratio < 1e-4 else f"{100 * ratio:.3g} %"


def _exit_sigma(base: ExperimentConfig) -> str:
    return "that of training" if base.exit_sigma is None else f"{base.exit_sigma:g}"


def _lr(base: ExperimentConfig) -> str:
    return "the authors' per model" if base.lr is None else f"{base.lr:g}"


def _plus_minus(ci: float | None) -> str:
    """`` ± 1.23``, or nothing where there is no interval (one Monte Carlo run)."""
    return "" if ci is None else f" ± {ci:.2f}"


def _fmt(cell: TableCell | None) -> str:
    if cell is None or cell.mean is None:
        return "–"
    ci = "" if cell.seeds < 2 or cell.ci95 is None or not math.isfinite(cell.ci95) \
        else f" ± {cell.ci95:.2f}"
    diverged = f"; {cell.diverged} more diverged" if cell.diverged else ""
    return f"{cell.mean:.2f}{ci} (n={cell.seeds}{diverged})"


def format_report(report: dict[str, ModelReport], plan: Plan, base: ExperimentConfig) -> str:
    """Markdown: Tables II, III, V, α search, EKL, σ = 0 vanilla sweep; paper beside ours."""
    lines = ["# NeFT reproduction report", "",
             f"Settings: dataset {base.dataset}, width ×{base.width:g}, epochs {base.epochs}, "
             f"batch {base.batch_size}, {base.mc_runs} Monte Carlo runs per σ, "
             f"{base.device_preset} with '{base.normalisation}' normalisation and "
             f"{base.scale} scale, exit σ {_exit_sigma(base)}, compute {base.compute}, lr "
             f"{_lr(base)} ({base.lr_schedule} schedule), validation {base.val_fraction:g} of "
             f"the training set every {base.val_every} epoch(s) with {base.val_mc_runs} runs, "
             f"seeds from {base.seed}"
             + (f", at most {base.max_train_steps} train steps" if base.max_train_steps else "")
             + ". Cells: mean over seeds of each run's Monte Carlo mean ± "
             "Student-t 95 % CI over seeds (n = seeds). Paper: method.md §6 (full model, the "
             f"whole training set, 200 epochs; {paper_noise_note(base.normalisation)}).", ""]
    dataset = base.dataset
    if dataset not in MNIST_DATASETS:
        lines += [f"The paper's Tables II, V and III's first column are MNIST's; on {dataset} "
                  "only its own published numbers stand beside ours"
                  + (" (Table IV: IRS at σ = 0.1–0.4; Table III's CIFAR-10 column, at σ = 0.4)"
                     if dataset == "cifar10" else " (none)") + ".", ""]
    for model, data in report.items():
        sigmas = [f"{s:g}" for s in plan.sigmas]
        lines += [f"## {model}", ""]
        if data.made_with:
            lines += ["Made with (code, machine, day): " + "; ".join(
                ", ".join(m) for m in data.made_with) + ".", ""]
        left_out = data.other_settings
        if left_out:
            path, changed = next(iter(left_out.items()))
            lines += [f"Left out: {len(left_out)} finished result{'s' * (len(left_out) > 1)} "
                      f"made with other settings than these (made with → these), e.g. {path}: "
                      f"{changed}" + ("; report.json lists them all" if len(left_out) > 1
                                      else "") + ".", ""]
        lines += ["### Table II: accuracy (%) against σ", "",
                  "| method | " + " | ".join(f"σ={s}" for s in sigmas) + " |",
                  "|---|" + "---|" * len(sigmas)]
        for method, cells in data.table2.items():
            lines.append(f"| {method} (ours) | "
                         + " | ".join(_fmt(cells.get(s)) for s in sigmas) + " |")
            paper = [paper_accuracy(dataset, model, method, s) for s in plan.sigmas]
            if any(p != "–" for p in paper):
                lines.append(f"| {method} (paper) | " + " | ".join(paper) + " |")
        lines += _core_lines(dataset, model, data.core)
        lines += _core_seed_lines(dataset, model, data.core_by_seed, data.core_differences)
        lines += ["", f"### EKL (nats) at σ = {ABLATION_SIGMA:g}", "", "| method | EKL |",
                  "|---|---|", *(f"| {m} | {ekl:.3f} |" for m, ekl in _ekl_rows(data))]
        lines += ["", "### Table III: runs (of n) not converged at σ = "
                  f"{table3_sigma(dataset):g}", "",
                  "| method | ours | mean accuracy | paper (of 10) |", "|---|---|---|---|"]
        for method, cell in data.table3.items():
            ours = "–" if not cell else f"{cell.not_converged} of {cell.seeds + cell.diverged}"
            paper = published_not_converged(dataset, model, method, table3_sigma(dataset))
            lines.append(f"| {method} | {ours} | {_fmt(cell)} | "
                         f"{'–' if paper is None else paper} |")
        lines += ["", f"### Table V: IRS exit ablation at σ = {ABLATION_SIGMA:g}", "",
                  "| variant | ours | per seed | paper |", "|---|---|---|---|"]
        for name, cell in data.table5.items():
            per_seed = ", ".join(f"{m:.2f}" for m in cell.seed_means) if cell and cell.seed_means \
                else "–"
            paper = published_ablation(dataset, model, name)
            paper = "–" if paper is None else f"{paper:g}"
            lines.append(f"| {name} | {_fmt(cell)} | {per_seed} | {paper} |")
        alpha = data.alpha_search
        lines += ["", f"### Five-step α search (IRS, σ = {ABLATION_SIGMA:g})", ""]
        if alpha:
            lines += ["| α | validation accuracy (%) |", "|---|---|"]
            for a, acc in alpha.validation_accuracy.items():
                lines.append(f"| {a} | {'diverged' if acc is None else f'{acc:.2f}'} |")
            test = alpha.test
            lines += ["", f"Chosen α = {alpha.chosen:g}"
                      + (f"; test accuracy {test['mean']:.2f}{_plus_minus(test['ci95'])} "
                         "(one seed)." if test else ".")]
        else:
            lines.append("Not run yet.")
        lines += _alpha_grid_lines(data.alpha_grid)
        lines += ["", "### Vanilla trained at σ = 0, evaluated over σ", "",
                  "| σ | accuracy (%) |", "|---|---|"]
        for s, cell in data.vanilla_sweep.items():
            lines.append(f"| {s} | {_fmt(cell)} |")
        lines.append("")
    return "\n".join(lines)


def write_report(out: str, plan: Plan, base: ExperimentConfig,
                 plots: bool = True) -> dict[str, ModelReport]:
    """REPORT.md, report.json, report.png, alpha_grid.png in ``out`` from finished stages."""
    report = collect_report(out, plan, base)
    write_atomic(os.path.join(out, "report.json"),
                 json.dumps({model: {"settings": dataclasses.replace(base, model=model).to_dict(),
                                     **data.to_json()} for model, data in report.items()},
                            indent=1))
    write_atomic(os.path.join(out, "REPORT.md"), format_report(report, plan, base))
    if not plots:
        return report
    from .plots import plot_alpha_grid, plot_report

    plot_report(report, plan, base, os.path.join(out, "report.png"))
    if any(data.alpha_grid for data in report.values()):
        plot_alpha_grid(out, plan, report)
    return report


def _ekl_rows(data: ModelReport) -> list[tuple[str, float]]:
    """(method, EKL over seeds) at the ablation σ: Table II's cells, then the core stage's
    of the methods Table II lacks (the control labelled)."""
    rows = [(method, cell.ekl) for method, cells in data.table2.items()
            if (cell := cells.get(f"{ABLATION_SIGMA:g}")) and cell.ekl is not None]
    # Table II's labels as the core's: "noise_scaled: CE(…)" and "irs α→0 (control)"
    shown = {label.split(":")[0].replace(" α→0 (control)", " (control)") for label, _ in rows}
    core = [(r["method"] + (" (control)" if is_control(r["method"], r["alpha"]) else ""),
             r["ekl"]) for r in data.core if math.isclose(r["sigma"], ABLATION_SIGMA)
            and math.isclose(r["eval_sigma"], ABLATION_SIGMA) and r.get("ekl") is not None]
    return rows + [(label, ekl) for label, ekl in core if label not in shown]


def _core_lines(dataset: str, model: str, rows: list[dict]) -> list[str]:
    """The core stage's cells: method (α) × σ, mean ± 95 % CI over seeds (n = seeds), each
    beside the paper's number (Table II; IV on CIFAR-10)."""
    rows = [r for r in rows if math.isclose(r["sigma"], r["eval_sigma"])]
    if not rows:
        return []
    sigmas = sorted({r["sigma"] for r in rows})
    lines = ["", "### Core cells (most informative first; trained and evaluated at σ; the "
             "paper's number beside ours: Table II, IV on CIFAR-10)", "",
             "| method | " + " | ".join(f"σ={s:g} | paper" for s in sigmas) + " |",
             "|---|" + "---|---|" * len(sigmas)]
    names = sorted({(r["method"], r["alpha"]) for r in rows}, key=str)
    for method, alpha in names:
        control = is_control(method, alpha)
        label = method + (" (α = 1e-9: control)" if control else "")
        cells = []
        for s in sigmas:
            match = [r for r in rows if r["method"] == method and r["alpha"] == alpha
                     and math.isclose(r["sigma"], s)]
            cells.append(_fmt(table_cell(match[0]))
                         if match and match[0]["mean"] is not None else "–")
            cells.append("–" if control else paper_accuracy(dataset, model, method, s))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _core_seed_lines(dataset: str, model: str, cells: Sequence[CoreCell],
                     differences: Sequence[CoreDifference]) -> list[str]:
    """The core cells seed by seed (beside the paper's number), and their differences
    within each seed."""
    if not cells:
        return []
    lines = ["", "#### Seed by seed (Monte Carlo mean ± 95 % CI over the runs; the paper's "
             "Table II (IV on CIFAR-10); clean accuracy; for IRS at the last epoch: feedback "
             "term / logits (RMS), exits' accuracy on the noisy training batches)", "",
             "| method | σ | seed | accuracy (%) | paper (%) | clean (%) | feedback / logits "
             "| exits (%) |", "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        ratio = _feedback_size(c.feedback_ratio)
        exits = "–" if not c.exit_accuracies else ", ".join(
            f"{a:.1f}" for a in c.exit_accuracies)
        clean = "–" if c.clean is None else f"{c.clean:.1f}"
        paper = paper_accuracy(dataset, model, c.method, c.sigma)
        lines.append(f"| {c.method} | {c.sigma:g} | {c.seed} | {c.mean:.2f}"
                     f"{_plus_minus(c.ci95)} | {paper} | {clean} | {ratio} | {exits} |")
    if differences:
        lines += _difference_lines(differences, "`control` is IRS at α = 1e-9")
        lines += _verdict_lines(differences)
    return lines


def _difference_lines(differences: Sequence[CoreDifference], note: str) -> list[str]:
    """a − b within each seed, and over the seeds with a Student-t interval."""
    seeds = sorted({p.seed for d in differences for p in d.per_seed})
    lines = ["", "#### Differences within each seed (points; ± 95 % CI paired over the same "
             "noise instances) and over the seeds (mean of the seeds' differences ± "
             f"Student-t 95 % interval, n − 1 degrees of freedom; {note})", "",
             "| difference | σ | " + " | ".join(f"seed {s}" for s in seeds)
             + " | over seeds |", "|---|---|" + "---|" * (len(seeds) + 1)]
    for d in differences:
        by_seed = {p.seed: p for p in d.per_seed}
        over = (f"{d.mean:+.2f} (one seed)" if d.t_ci95 is None
                else f"{d.mean:+.2f} ± {d.t_ci95:.2f} (n={len(d.per_seed)})")
        lines.append(f"| {d.a} − {d.b} | {d.sigma:g} | " + " | ".join(
            (f"{by_seed[s].difference:+.2f} ± {by_seed[s].ci95:.2f}"
             if by_seed[s].ci95 is not None else f"{by_seed[s].difference:+.2f}")
            if s in by_seed else "–" for s in seeds) + f" | {over} |")
    return lines


def difference_verdict(d: CoreDifference) -> str:
    """One plain sentence on ``d``: in how many seeds a is above b (and beyond the paired
    CI), and whether the Student-t interval over the seeds excludes 0."""
    n = len(d.per_seed)
    above = sum(p.difference > 0 for p in d.per_seed)
    below = sum(p.difference < 0 for p in d.per_seed)
    beyond = sum(p.ci95 is not None and abs(p.difference) > p.ci95 for p in d.per_seed)
    if above + below == 0:
        side, where = "equal to", "in every seed"
    elif n in (above, below):
        side = "above" if above else "below"
        where = ("in the one seed" if n == 1 else "in every seed") + (
            (", beyond its paired CI" if n == 1 else ", beyond each seed's paired CI")
            if beyond == n else f", beyond the paired CI in {beyond} of {n}")
    else:
        side = "above"
        where = f"in {above} of {n} seeds" + (f", below in {below}" if below else "") + (
            f", equal in {n - above - below}" if above + below < n else "")
    if d.t_ci95 is None:
        over = "one seed gives no interval over seeds"
    elif d.t_ci95 == 0:
        over = (f"over the {n} seeds {d.mean:+.2f} with no spread between them: no usable "
                "interval")
    elif abs(d.mean) > d.t_ci95:
        over = (f"over the {n} seeds {d.mean:+.2f} ± {d.t_ci95:.2f}, an interval that "
                "excludes 0")
    else:
        over = (f"over the {n} seeds {d.mean:+.2f} ± {d.t_ci95:.2f}, an interval that "
                "includes 0: not separated")
    return f"At σ = {d.sigma:g}, {d.a} is {side} {d.b} {where}; {over}."


def _verdict_lines(differences: Sequence[CoreDifference]) -> list[str]:
    """Plain sentences for the differences that say whether the feedback helps: IRS (at
    any α) against the α → 0 control and against noise_scaled, eq. (1)'s scaling alone."""
    chosen = [d for d in differences if d.a.startswith("irs") and d.b in ("control",
                                                                          "noise_scaled")]
    if not chosen:
        return []
    return ["", "Does the feedback help? (IRS against the same training without the feedback: "
            "the α → 0 control, and noise_scaled)", ""] + [
                f"* {difference_verdict(d)}" for d in chosen]


def _alpha_grid_lines(grid: AlphaGrid | None) -> list[str]:
    """The α grid: every cell, each α over its seeds, and its differences with the
    control, noise injection and noise_scaled of the same seed."""
    lines = ["", f"### α grid (IRS at every α of the search, σ = {ABLATION_SIGMA:g}, each "
             "evaluated)", ""]
    if grid is None:
        return lines + ["Not run yet."]
    lines += ["| α | seed | accuracy (%) | clean (%) | best validation (%) | feedback / logits "
              "| exits (%) |", "|---|---|---|---|---|---|---|"]
    for c in grid.cells:
        exits = "–" if not c.exit_accuracies else ", ".join(f"{a:.1f}" for a in c.exit_accuracies)
        lines.append(f"| {c.method.split('=')[1]} | {c.seed} | {c.mean:.2f}{_plus_minus(c.ci95)} | "
                     + ("–" if c.clean is None else f"{c.clean:.1f}") + " | "
                     + ("–" if c.best_val is None else f"{c.best_val:.2f}")
                     + f" | {_feedback_size(c.feedback_ratio)} | {exits} |")
    for alpha, seed in grid.diverged:
        lines.append(f"| {alpha} | {seed} | diverged | – | – | – | – |")
    lines += ["", "Over the seeds (mean ± Student-t 95 % interval): " + "; ".join(
        f"α = {a}: {m:.2f}" + ("" if t is None else f" ± {t:.2f}") + f" (n={n})"
        for a, (m, t, n) in grid.over_seeds.items()) + "."]
    if grid.differences:
        lines += _difference_lines(grid.differences, "`control` is IRS at α = 1e-9, the "
                                   "baselines are the core stage's cells of the same seed")
        lines += _verdict_lines(grid.differences)
        lines += ["", which_alpha(grid)]
    return lines


def which_alpha(grid: AlphaGrid) -> str:
    """One sentence: the α with the highest mean over seeds, and the α at which IRS beats
    its α → 0 control in every seed beyond the paired CIs, and over the seeds."""
    best = max(grid.over_seeds, key=lambda a: grid.over_seeds[a][0])
    against = [d for d in grid.differences if d.b == "control"]

    def alphas(chosen) -> str:
        return ", ".join(d.a.split("=", 1)[1] for d in chosen) or "none"

    every_seed = [d for d in against if all(
        p.ci95 is not None and p.difference > p.ci95 for p in d.per_seed)]
    over_seeds = [d for d in against if d.t_ci95 is not None and d.mean > d.t_ci95]
    return (f"Which α? The highest mean over seeds is at α = {best} "
            f"({grid.over_seeds[best][0]:.2f} %). IRS is above its α → 0 control beyond the "
            f"paired CI in every seed at α = {alphas(every_seed)}, and by a Student-t "
            f"interval over the seeds that excludes 0 at α = {alphas(over_seeds)}.")
