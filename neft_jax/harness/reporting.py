"""What a finished run shows: the printed table, ``results.csv`` and the plots.

:func:`write_results` writes every file of a run from its :class:`RunResults`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

from neft_jax.harness.results import RunResults, rounded, write_atomic
from neft_jax.methods import FAIR_BASELINE, label, uses_feedback


def write_results(out: str, results: RunResults) -> None:
    """results.json, results.csv, accuracy_vs_sigma.png and, when a method has a feedback
    term, feedback_ratio.png into ``out``."""
    results.save(os.path.join(out, "results.json"))
    write_atomic(os.path.join(out, "results.csv"), results_csv(results))
    plot_accuracy_vs_sigma(results, os.path.join(out, "accuracy_vs_sigma.png"))
    if any("feedback_ratio" in record for entry in results.methods.values()
           for record in entry.history):
        plot_feedback_ratio(results, os.path.join(out, "feedback_ratio.png"))


#: The summary fields of a row (:func:`neft_jax.stats.summarize`): the spread over Monte
#: Carlo runs includes the worst runs (1 % and 5 % quantiles, min), which a chip's yield
#: depends on more than on the mean.
SUMMARY_FIELDS = ("mean", "ci95", "ci99", "std", "ekl", "runs", "min", "q01", "q05", "max")
CSV_FIELDS = ("method", "sigma", "alpha", "over", *SUMMARY_FIELDS, "not_converged",
              "clean_accuracy", "best_epoch", "diverged", "diverged_seeds", "eval_seconds")


def result_rows(results: RunResults) -> list[dict]:
    """One row per method × σ (accuracies in percent; ``over``: what the summary is over, a
    run's Monte Carlo runs or the seeds' means, whose count is ``runs``; ``not_converged``:
    Table III's count over seeds; ``clean_accuracy`` the method's at σ = 0, ``best_epoch``
    the epoch it kept, 1-based; ``diverged``: the run, or any seed, diverged;
    ``diverged_seeds``: how many seeds did, over seeds only)."""
    rows = []
    for method, entry in results.methods.items():
        for sigma, evaluation in entry.evaluations.items():
            summary = evaluation.summary or {}
            rows.append({
                "method": method, "sigma": float(sigma),
                "alpha": entry.alpha if uses_feedback(method) else None,
                "over": "seeds" if results.seeds else "monte_carlo_runs",
                **{k: summary.get(k) for k in SUMMARY_FIELDS},
                "not_converged": evaluation.not_converged,
                "clean_accuracy": entry.clean_accuracy, "best_epoch": entry.best_epoch,
                "diverged": entry.diverged or bool(evaluation.diverged_seeds),
                "diverged_seeds": None if evaluation.diverged_seeds is None
                else len(evaluation.diverged_seeds),
                "eval_seconds": evaluation.eval_seconds,
            })
    return rows


def results_csv(results: RunResults) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rounded(row) for row in result_rows(results))
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def noise_label(settings: dict) -> str:
    """What noise a run's numbers are under, e.g. "'level' noise (eq. 5), RRAM1, trained at
    σ = 0.4" (runs made before the setting existed used 'range')."""
    definition = settings.get("normalisation", "range")
    source = {"level": "eq. 5", "range": "authors' code"}.get(definition, "")
    return (f"'{definition}' noise ({source}), {settings.get('device_preset', 'RRAM1')}, "
            f"trained at σ = {float(settings['sigma']):g}")


def accuracy_error_bars(rows: Sequence[dict]) -> list[list[float]]:
    """``yerr`` (below, above) of rows' mean ± ci95, cut at 0 and 100 % (an accuracy cannot
    leave them, however wide a Student-t interval over 2 seeds is); no ci95: no bar."""
    means = [r["mean"] for r in rows]
    cis = [r["ci95"] or 0.0 for r in rows]
    return [[min(c, m) for m, c in zip(means, cis, strict=True)],
            [min(c, 100.0 - m) for m, c in zip(means, cis, strict=True)]]


def plot_accuracy_vs_sigma(results: RunResults, path: str) -> None:
    """Mean Monte Carlo accuracy (± 95 % CI) against σ, one line per method; with a single σ,
    one bar per method from 0. A dashed line marks chance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    rows = [r for r in result_rows(results) if r["mean"] is not None]
    if len({r["sigma"] for r in rows}) == 1:
        ax.bar([r["method"] for r in rows], [r["mean"] for r in rows],
               yerr=accuracy_error_bars(rows), capsize=4,
               color=[f"C{i}" for i in range(len(rows))])
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"method (σ_d = {rows[0]['sigma']:g})" if rows else "method")
    else:
        for method in results.methods:
            points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["sigma"])
            if points:
                ax.errorbar([r["sigma"] for r in points], [r["mean"] for r in points],
                            yerr=accuracy_error_bars(points), marker="o", capsize=3,
                            label=method)
        ax.set_xlabel("device variation σ_d")
    if results.chance is not None:
        ax.axhline(results.chance, color="grey", linestyle="--", linewidth=1, label="chance")
    settings = results.settings
    ax.set_ylabel("Monte Carlo accuracy (%)")
    spread = (f"{len(results.seeds)} seeds × {settings['mc_runs']} runs; bars: Student-t 95 % "
              "over seeds" if results.seeds else
              f"{settings['mc_runs']} Monte Carlo runs; bars: 95 % CI")
    ax.set_title(f"{settings['model']} on {settings['dataset']}, {noise_label(settings)}\n"
                 f"{spread}, width ×{settings['width']:g}", fontsize=9)
    save_figure(fig, path)


def plot_feedback_ratio(results: RunResults, path: str) -> None:
    """Per epoch: RMS(α·Σ c_i z_i) / RMS(z) of IRS/OVF (log scale), and the training
    accuracy of the backbone and of each IRS exit (%)."""
    plt = _pyplot()
    fig, (ratio_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for method, entry in results.methods.items():
        history = [h for h in entry.history if "feedback_ratio" in h]
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        label = f"{method}, α = {entry.alpha or 0:g}"
        ratio_ax.plot(epochs, [max(h["feedback_ratio"], 1e-12) for h in history], label=label)
        acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label=f"{method} backbone")
        for i, _ in enumerate(history[0].get("exit_accuracies", [])):
            acc_ax.plot(epochs, [h["exit_accuracies"][i] for h in history], ":",
                        label=f"{method} exit {i + 1}")
    below = below_chance_exits(results)
    if below:
        acc_ax.text(0.02, 0.02, "\n".join(
            f"{method} exit {i}: {acc:.1f} % < chance" for method, i, acc in below)
            + "\nbelow chance = the exit anti-predicts: eq. (1) subtracts\nits logits, "
            "so the loss rewards an inverted exit;\nexits are dropped at inference",
            transform=acc_ax.transAxes, fontsize=6, va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    ratio_ax.set(yscale="log", xlabel="epoch", ylabel="RMS(feedback) / RMS(logits)",
                 title="size of eq. (1)'s feedback term")
    acc_ax.set(xlabel="epoch", ylabel="training accuracy at noisy weights (%)",
               title="backbone and exits")
    save_figure(fig, path)


def below_chance_exits(results: RunResults, margin: float = 3.0) -> list[tuple]:
    """``(method, exit number, last-epoch accuracy %)`` of each exit whose training accuracy
    ends more than ``margin`` points below chance (an anti-predicting exit)."""
    chance = results.chance
    if chance is None:
        return []
    found = []
    for method, entry in results.methods.items():
        last = next((h for h in reversed(entry.history) if h.get("exit_accuracies")), None)
        for i, accuracy in enumerate(last["exit_accuracies"] if last else [], start=1):
            if accuracy < chance - margin:
                found.append((method, i, accuracy))
    return found


def save_figure(fig, path: str, axis_legends: bool = True,
                bottom_margin: float = 0.0) -> None:
    """Grid and (unless not ``axis_legends``) a legend on every axis, tight layout above a
    ``bottom_margin`` (a share of the figure's height kept for a figure legend); write
    ``path`` atomically; close."""
    plt = _pyplot()
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        if axis_legends and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, bottom_margin, 1, 1))
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def format_table(results: RunResults) -> str:
    """The paper-style table (method × σ: mean ± 95 % CI [std] (EKL)), a one-line legend with
    the chance level, and the :func:`verdict` under it."""
    from rich.console import Console
    from rich.table import Table

    settings = results.settings
    table = Table()
    table.add_column("method")
    table.add_column("α")
    table.add_column("clean", justify="right")
    for sigma in results.eval_sigmas:
        table.add_column(f"σ={sigma:g}", justify="right")
    for method, entry in results.methods.items():
        cells = []
        for sigma in results.eval_sigmas:
            evaluation = entry.at(sigma)
            if entry.diverged:
                cells.append("diverged")
            elif evaluation is None or evaluation.summary is None:
                cells.append("–")
            else:
                s = evaluation.summary
                off = ("" if evaluation.not_converged is None else
                       f" {evaluation.not_converged}/{len(results.seeds)} off")
                if evaluation.diverged_seeds:  # judged by their kept epoch, or without a mean
                    off += f", {len(evaluation.diverged_seeds)} diverged"
                if results.seeds and 1 < s.get("runs", 0) < len(results.seeds):
                    off += f" (mean of {s['runs']})"
                spread = (f"± {s['ci95']:.2f} \\[{s['std']:.2f}]" if s.get("runs", 2) > 1
                          else "(1 seed: no interval)" if results.seeds else "(1 run: no interval)")
                ekl = "" if s.get("ekl") is None else f" ({s['ekl']:.3f})"
                cells.append(f"{s['mean']:.2f} {spread}{ekl}{off}")
        clean = "–" if entry.clean_accuracy is None else f"{entry.clean_accuracy:.2f}"
        table.add_row(method, f"{entry.alpha or 0:g}" if uses_feedback(method) else "", clean,
                      *cells)
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(table)
    over = (f"the mean over the {len(results.seeds)} seeds (fewer where a seed has no result: "
            "'mean of k') of each seed's Monte Carlo mean ± its Student-t 95 % CI over seeds"
            if results.seeds else
            f"mean ± 95 % CI over {settings['mc_runs']} Monte Carlo "
            f"run{'s' * (settings['mc_runs'] != 1)}")
    chance = results.chance
    off = ("; k/n off: seeds more than 5 points from the mean over seeds, or without a "
           "result (Table III's not converged); 'diverged': seeds whose loss blew up, judged "
           "by the epoch they kept, or without a result if they kept none" if results.seeds
           else "")
    legend = (f"cells: {over} [std] (EKL, nats){off}; clean: accuracy without noise (σ = 0)"
              + (f"; chance: {chance:.1f} %" if chance else ""))
    title = f"Monte Carlo accuracy (%) under {noise_label(settings)}\n"
    below = below_chance_exits(results)
    note = ("Note: " + "; ".join(f"{m} exit {i} ends at {a:.1f} %" for m, i, a in below)
            + " training accuracy, below chance: such an exit anti-predicts (eq. (1) "
            "subtracts its logits, so the loss rewards an inverted exit). Exits are "
            "dropped at inference; feedback_ratio.png shows them per epoch.\n") if below else ""
    return (title + console.file.getvalue() + legend + "\n" + note + verdict(results)
            + "\n")


#: Methods this close to chance (percentage points) at the run's σ "learned nothing".
NEAR_CHANCE_POINTS = 3.0


def verdict(results: RunResults) -> str:
    """One plain sentence: which methods differ beyond their 95 % CIs at the run's σ, or,
    when every method is near chance, that nothing survived the noise and what to change."""
    sigma = float(results.settings["sigma"])
    scored = {m: e.at(sigma).summary for m, e in results.methods.items()
              if not e.diverged and e.at(sigma) is not None and e.at(sigma).summary}
    if not scored:
        return f"Verdict: no method has a result at σ = {sigma:g}."
    chance = results.chance
    if chance is not None and all(abs(s["mean"] - chance) <= NEAR_CHANCE_POINTS
                                  for s in scored.values()):
        settings = results.settings
        cut = settings.get("max_train_steps")
        tries = ["a wider model (--width)", f"more than {cut} training steps (--max-train-steps)"
                 if cut else "more epochs (--epochs)"]
        if sigma > 0:
            tries.append("a smaller --sigma")
        if settings["normalisation"] != "level":
            tries.append("--normalisation level")
        what = "that survives this noise" if sigma > 0 else "(even without noise)"
        return (f"Verdict: every method is within {NEAR_CHANCE_POINTS:g} points of chance "
                f"({chance:.0f} %) at σ = {sigma:g}: the model learned nothing "
                f"{what} (width ×{settings['width']:g}, {settings['epochs']} "
                f"epoch{'' if settings['epochs'] == 1 else 's'}, "
                f"'{settings['normalisation']}' noise). Try {', '.join(tries[:-1])} or "
                f"{tries[-1]}.")
    ranked = sorted(scored, key=lambda m: -scored[m]["mean"])
    best = ranked[0]
    unit = "seed" if results.seeds else "run"

    def has_interval(m):  # one value (one run, or one seed with a result) has none
        return scored[m].get("runs", 2) > 1

    def beats(a, b):
        return (has_interval(a) and has_interval(b) and scored[a]["mean"] - scored[a]["ci95"]
                > scored[b]["mean"] + scored[b]["ci95"])

    against = feedback_against_baseline(results, sigma)
    end = "." + (f"\n{against}" if against else "")
    if not has_interval(best):
        return (f"Verdict: at σ = {sigma:g}, {best} scores highest ({scored[best]['mean']:.1f} "
                f"%, one {unit}: no interval), so no method is shown to beat another" + end)
    beaten = [m for m in ranked[1:] if beats(best, m)]
    tied = [m for m in ranked[1:] if m not in beaten and has_interval(m)]
    alone = [m for m in ranked[1:] if not has_interval(m)]
    sentence = (f"Verdict: at σ = {sigma:g}, {best} scores highest "
                f"({scored[best]['mean']:.1f} ± {scored[best]['ci95']:.1f} %)")
    if beaten:
        sentence += f" and beats {', '.join(beaten)} beyond their 95 % CIs"
    if tied:
        sentence += (("; " if beaten else ", but ") + f"{', '.join(tied)} "
                     f"{'is' if len(tied) == 1 else 'are'} within its CI")
    if alone:
        sentence += f"; {', '.join(alone)} (one {unit}: no interval) not compared"
    return sentence + end


#: The fair baseline that IRS/OVF are judged against (eq. (1)'s scaling, no feedback).
BASELINE = FAIR_BASELINE


def feedback_against_baseline(results: RunResults, sigma: float) -> str | None:
    """One plain sentence per feedback method: does it beat ``noise_scaled`` at ``sigma``?

    With both scored on the same Monte Carlo keys (a single run), the comparison is the
    paired difference run by run and its 95 % CI, worded as scores on these noise instances
    of one training each (not as a win); for an aggregate over seeds, the difference seed by
    seed over the seeds both have a result for, with its Student-t 95 % interval; no
    interval, and no outcome, from one value. None when ``noise_scaled`` or every feedback
    method is missing."""
    import math

    from neft_jax.stats import across_seeds, paired_summary

    def scored(method):
        entry = results.methods.get(method)
        evaluation = entry.at(sigma) if entry and not entry.diverged else None
        return evaluation if evaluation is not None and evaluation.summary else None

    base = scored(BASELINE)
    methods = [m for m in results.methods if uses_feedback(m) and scored(m)]
    if base is None or not methods:
        return None
    parts, one_training = [], False
    for method in methods:
        mine = scored(method)
        if results.seeds:  # paired by seed: the same seeds (and noise keys) on both sides
            both = [a - b for a, b in zip(mine.seed_means or (), base.seed_means or (),
                                          strict=False)
                    if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
            if not both:
                continue
            diff, ci = across_seeds(both)
            how = (f"{diff:+.1f} ± {ci:.1f} points over the {len(both)} seeds both have, "
                   "paired by seed, Student-t" if ci is not None
                   else f"{diff:+.1f} points in the one seed both have: no interval")
            words = ("does not differ from", "beats", "loses to")
        elif (paired := paired_summary(mine.accuracies, base.accuracies)) is not None:
            diff, ci = paired["mean"], paired["ci95"]  # one training each: the CI holds
            how = f"{diff:+.1f} ± {ci:.1f} points, paired over {paired['runs']} noise instances"
            words, one_training = ("is level with", "scores above", "scores below"), True
        else:  # no runs to pair: the two means' CIs, where each has one
            diff = mine.summary["mean"] - base.summary["mean"]
            spread = min(mine.summary.get("runs", 2), base.summary.get("runs", 2)) > 1
            ci = mine.summary["ci95"] + base.summary["ci95"] if spread else None
            how = (f"{diff:+.1f} points, 95 % CIs {'apart' if abs(diff) > ci else 'overlapping'}"
                   if spread else f"{diff:+.1f} points in one noise instance: no interval")
            words = ("does not differ from", "beats", "loses to")
        outcome = ("is compared with" if ci is None else words[0] if abs(diff) <= ci
                   else words[1] if diff > 0 else words[2])
        parts.append(f"{label(method)} {outcome} {BASELINE} ({how})")
    if not parts:
        return None
    caveat = (" These intervals hold each method's one training fixed, so they cannot tell "
              "the methods apart as trainings: --seeds 3 does." if one_training else "")
    return ("Against the fair baseline (noise injection with eq. (1)'s logit scaling, no "
            "feedback): " + "; ".join(parts) + "." + caveat)
