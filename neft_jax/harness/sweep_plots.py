"""A sweep's plots: ``accuracy_vs_sigma.png`` (one panel per model × dataset, one line per
method and α) and, when one method was tried at several α, ``alpha_search.png``; from the rows of
:func:`~neft_jax.harness.sweeps.aggregate_over_seeds`."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from neft_jax.harness.reporting import accuracy_error_bars, save_figure
from neft_jax.methods import method_spec, uses_feedback


def _plot_mean_ci(ax, points: Sequence[dict], x_key: str, label: str) -> None:
    """Mean accuracy ± 95 % CI of table rows against ``x_key`` (bars cut at 0 and 100 %)."""
    points = sorted(points, key=lambda p: p[x_key])
    ax.errorbar([p[x_key] for p in points], [p["mean"] for p in points],
                yerr=accuracy_error_bars(points), marker="o", capsize=3, label=label)


def plot_sweep(table: Sequence[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["dataset"]) for r in table})
    counts = {r["seeds"] - r.get("diverged", 0) for r in table if r["mean"] is not None}
    spread = ("mean ± Student-t 95 % CI over seeds" if counts - {1} else
              "one seed (no interval over seeds)")
    if len(counts) > 1 and 1 in counts:
        spread += "; one-seed cells: no bar"
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), dpi=110,
                             squeeze=False)
    for ax, (model, dataset) in zip(axes[0], panels, strict=True):
        lines = defaultdict(list)
        for r in table:
            clean = not method_spec(r["method"]).perturbs  # one training, scored at each σ
            if (r["model"], r["dataset"]) == (model, dataset) and (
                    clean or r["sigma"] == r["eval_sigma"]):
                label = r["method"] if r["alpha"] in (None, 0, 0.0) else (
                    f"{r['method']} α={r['alpha']:g}")
                lines[label + (" (trained clean)" if clean else "")].append(r)
        for label, points in sorted(lines.items()):
            _plot_mean_ci(ax, [p for p in points if p["mean"] is not None], "eval_sigma", label)
        ax.set(xlabel="σ_d (train = eval, but for methods trained clean)",
               ylabel="Monte Carlo accuracy (%)")
        ax.set_title(f"{model} / {dataset}\n{spread}", fontsize="medium")
    save_figure(fig, os.path.join(out, "accuracy_vs_sigma.png"))

    curves = defaultdict(list)  # one curve per model × dataset × method × σ, over its α
    for r in table:
        if uses_feedback(r["method"]) and r["alpha"] and r["sigma"] == r["eval_sigma"] \
                and r["mean"] is not None:
            curves[(r["model"], r["dataset"], r["method"], r["sigma"])].append(r)
    curves = {k: v for k, v in curves.items() if len({r["alpha"] for r in v}) > 1}
    if curves:  # only where some curve tried several α: one α per method is no search
        fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
        for (model, dataset, method, sigma), points in sorted(curves.items()):
            _plot_mean_ci(ax, points, "alpha", f"{model}/{dataset} {method} σ={sigma:g}")
        ax.set(xscale="log", xlabel="α", ylabel="Monte Carlo accuracy (%)",
               title="α search")
        save_figure(fig, os.path.join(out, "alpha_search.png"))
