"""The paper reproduction's figures: report.png (accuracy against σ beside the paper's)
and alpha_grid.png (the α grid), written by :func:`~paper.report.write_report`."""

from __future__ import annotations

import math
import os

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.reporting import save_figure
from neft_jax.harness.results import RunResults

from .collect import ModelReport
from .plan import ABLATION_SIGMA, Plan, stage_dir
from .published import published_accuracy


def plot_report(report: dict[str, ModelReport], plan: Plan, base: ExperimentConfig,
                path: str) -> None:
    """Accuracy against σ per model: ours (± Student-t 95 % CI over seeds) solid, the paper's
    dashed, its upper bounds ("≤": the best of several runs, not a mean) as open triangles;
    each panel's title names the dataset, width and noise definition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(6 * len(report), 4.4), dpi=110,
                             squeeze=False)
    for ax, (model, data) in zip(axes[0], report.items(), strict=True):
        for i, (method, cells) in enumerate(data.table2.items()):
            source = data.vanilla_sweep if method == "vanilla" else cells
            points = sorted((float(s), c) for s, c in source.items() if c and c.mean is not None)
            if not points:
                continue
            color = f"C{i}"
            ax.errorbar([p[0] for p in points], [p[1].mean for p in points],
                        yerr=[p[1].ci95 or 0 for p in points], marker="o", capsize=3,
                        color=color, label=f"{method} (ours)")
            paper = [(s, published_accuracy(base.dataset, model, method, s))
                     for s in plan.sigmas]
            paper = [(s, *found) for s, found in paper if found is not None]
            if paper:
                ax.plot([p[0] for p in paper], [p[1] for p in paper], "--", color=color,
                        alpha=0.6, label=f"{method} (paper)")
                bounds = [p for p in paper if p[2]]
                if bounds:
                    ax.plot([p[0] for p in bounds], [p[1] for p in bounds], "v", color=color,
                            markerfacecolor="none", label=f"{method} (paper: ≤, a bound)")
        ax.set(title=f"{model} ×{base.width:g}, {base.dataset}, '{base.normalisation}' noise, "
               f"{base.epochs} epochs", xlabel="σ_d", ylabel="Monte Carlo accuracy (%)",
               ylim=(0, 101))
    save_figure(fig, path)


def plot_alpha_grid(out: str, plan: Plan, report: dict[str, ModelReport]) -> None:
    """alpha_grid.png, a row per model: Monte Carlo accuracy against α (each seed, and the
    baselines' means over seeds), and per epoch the feedback term's size and the exits'
    mean training accuracy for each α (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m, data in report.items() if data.alpha_grid]
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 4 * len(models)), dpi=100,
                             squeeze=False)
    for row, model in zip(axes, models, strict=True):
        grid, core = report[model].alpha_grid, report[model].core_by_seed
        acc_ax, ratio_ax, exit_ax = row
        for i, (name, _) in enumerate(grid.over_seeds.items()):
            seeds = [c for c in grid.cells if c.method.split("=")[1] == name]
            acc_ax.plot([float(name)] * len(seeds), [c.mean for c in seeds], "o", color=f"C{i}")
        for j, base in enumerate(("control", "noise", "noise_scaled")):
            means = [c.mean for c in core if c.method == base
                     and math.isclose(c.sigma, ABLATION_SIGMA)]
            if means:
                acc_ax.axhline(sum(means) / len(means), linestyle="--", color=f"C{7 + j % 3}",
                               label=f"{base} (mean of {len(means)})")
        acc_ax.set(xscale="log", xlabel="α", ylabel="Monte Carlo accuracy (%)",
                   title=f"{model}: IRS at σ = {ABLATION_SIGMA:g} against α")
        cells_dir = os.path.join(stage_dir(out, "alpha_grid", model), "cells")
        first_seed = min(c.seed for c in grid.cells) if grid.cells else None
        alphas = list(grid.over_seeds)
        for name in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
            path = os.path.join(cells_dir, name, "results.json")
            if not name.endswith(f"-seed{first_seed}") or not os.path.exists(path):
                continue
            entry = RunResults.load(path).methods["irs"]
            if f"{entry.alpha:g}" not in alphas:  # diverged
                continue
            color, label = f"C{alphas.index(f'{entry.alpha:g}')}", f"α = {entry.alpha:g}"
            history = [h for h in entry.history if "feedback_ratio" in h]
            ratio_ax.plot([h["epoch"] for h in history],
                          [max(h["feedback_ratio"], 1e-12) for h in history],
                          ".-", markersize=3, color=color, label=label)
            history = [h for h in history if h.get("exit_accuracies")]
            exit_ax.plot([h["epoch"] for h in history],
                         [sum(h["exit_accuracies"]) / len(h["exit_accuracies"])
                          for h in history], ".-", markersize=3, color=color, label=label)
        ratio_ax.set(yscale="log", xlabel="epoch", ylabel="RMS(feedback) / RMS(logits)",
                     title=f"feedback term's size (seed {first_seed})")
        exit_ax.set(xlabel="epoch", ylabel="exits' mean training accuracy (%)",
                    title=f"exits (seed {first_seed})")
    save_figure(fig, os.path.join(out, "alpha_grid.png"))
