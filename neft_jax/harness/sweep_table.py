"""A sweep's combined table: one row per finished cell × σ it was scored at
(:func:`collect_rows`), the same over seeds (:func:`aggregate_over_seeds`), written as
``sweep.json`` (with the settings every cell shares) and ``sweep.csv`` after each cell
(:func:`write_combined`), and printed when the sweep ends (:func:`format_sweep_table`).
``cells`` are :class:`~neft_jax.harness.sweeps.Cell`; their runs lie in ``out/cells/<name>/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Sequence

from neft_jax.harness.identity import fingerprint, identity_of_settings, without_seed
from neft_jax.harness.results import RunResults, write_atomic
from neft_jax.harness.runtime import made_with
from neft_jax.stats import summarize_over_seeds
from neft_jax.train import uses_feedback


def finished_results(cells: Sequence, out: str) -> list[tuple]:
    """``(cell, its RunResults)`` for every cell with a ``results.json``, each read once."""
    paths = [(cell, os.path.join(out, "cells", cell.name, "results.json")) for cell in cells]
    return [(cell, RunResults.load(path)) for cell, path in paths if os.path.exists(path)]


def collect_rows(cells: Sequence, out: str) -> list[dict]:
    """One row per finished cell × evaluated σ; ``settings`` is the fingerprint of the
    cell's settings but its seed (:mod:`neft_jax.harness.identity`), so that only cells
    made alike are averaged over seeds."""
    return rows_of(finished_results(cells, out))


def rows_of(finished: Sequence[tuple]) -> list[dict]:
    """:func:`collect_rows` of cells already read (:func:`finished_results`)."""
    rows = []
    for cell, results in finished:
        entry = results.methods.get(cell.method)
        if not entry:
            continue
        settings = fingerprint(without_seed(identity_of_settings(results.settings)))
        code, machine, date = made_with(results.environment)
        for sigma, evaluation in entry.evaluations.items():
            summary = evaluation.summary or {}
            rows.append({
                **dataclasses.asdict(cell),  # α only where the method has one, as results.csv
                "alpha": entry.alpha if uses_feedback(cell.method) else None,
                "eval_sigma": float(sigma), "diverged": entry.diverged,
                **{k: summary.get(k) for k in ("mean", "ci95", "std", "ekl", "runs", "min",
                                               "q01", "q05")},
                "settings": settings, "normalisation": results.settings.get("normalisation"),
                "code": code, "machine": machine, "date": date,
            })
    return rows


def shared_settings(finished: Sequence[tuple]) -> dict:
    """The settings (``results.json``'s) every cell of ``finished`` (:func:`finished_results`)
    shares; those that differ between cells (σ, method, seed, …) are left out: each row's
    cell folder has them."""
    shared = None
    for _, results in finished:
        settings = results.settings
        shared = dict(settings) if shared is None else {
            k: v for k, v in shared.items() if k in settings and settings[k] == v}
    return shared or {}


def aggregate_over_seeds(rows: Sequence[dict]) -> list[dict]:
    """Mean ± 95 % CI over seeds and non-converged count per cell without its seed (and per
    ``settings`` fingerprint, where rows have one: cells made with other settings are never
    averaged together). ``seeds`` counts the cell's seeds, ``diverged`` those without a mean
    (diverged before keeping an epoch): the mean is over the other ``seeds − diverged``."""
    groups = defaultdict(list)
    for row in rows:
        key = (row["model"], row["dataset"], row["method"], row["sigma"], row["alpha"],
               row["eval_sigma"], row.get("settings"))
        groups[key].append(row)
    table = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        # A cell that diverged after keeping an epoch is judged by that epoch (method.md §5,
        # as run.py --seeds does); one without a kept epoch has no mean.
        means = [float("nan") if m["mean"] is None else m["mean"] for m in members]
        summary, not_converged = summarize_over_seeds(means, [m["ekl"] for m in members])
        summary = summary or {}
        one = summary.get("runs", 0) < 2  # a spread over one finite seed is undefined
        table.append({
            **dict(zip(("model", "dataset", "method", "sigma", "alpha", "eval_sigma"), key[:-1],
                       strict=True)),
            "seeds": len(members), "diverged": sum(m["mean"] is None for m in members),
            "mean": summary.get("mean"),
            "ci95": None if one else summary.get("ci95"),
            "std_over_seeds": None if one else summary.get("std"), "ekl": summary.get("ekl"),
            "not_converged": not_converged,
            **({"settings": key[-1]} if key[-1] is not None else {}),
        })
    return table


def write_combined(cells: Sequence, out: str, plots: bool = True) -> list[dict]:
    """sweep.json, sweep.csv and (with ``plots``) the plots from every finished cell."""
    import csv
    import io

    finished = finished_results(cells, out)  # after every cell: each file read once
    rows = rows_of(finished)
    table = aggregate_over_seeds(rows)
    write_atomic(os.path.join(out, "sweep.json"), json.dumps(
        {"settings": shared_settings(finished), "cells": rows, "over_seeds": table}, indent=1))
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
        writer.writeheader()
        # 7 significant digits, not 6 decimals: the control's α = 1e-9 must not read as 0.
        writer.writerows({k: float(f"{v:.7g}") if isinstance(v, float) else v
                          for k, v in row.items()} for row in table)
    write_atomic(os.path.join(out, "sweep.csv"), buffer.getvalue())
    if table and plots:
        from neft_jax.harness.sweep_plots import plot_sweep

        plot_sweep(table, out)
    return table


def format_sweep_table(table: Sequence[dict]) -> str:
    """The rows of :func:`~neft_jax.harness.sweeps.aggregate_over_seeds` as text: one line per
    cell without its seed and σ scored at, mean Monte Carlo accuracy (%) ± its Student-t 95 %
    interval over seeds (none over one seed), and how many seeds diverged or are off."""
    import io

    from rich.console import Console
    from rich.table import Table

    out = Table()
    for name in ("model", "dataset", "method", "α", "σ train", "σ eval", "seeds"):
        out.add_column(name)
    out.add_column("accuracy (%)", justify="right")
    for r in sorted(table, key=lambda r: (r["model"], r["dataset"], r["method"],
                                          r["alpha"] or 0, r["sigma"], r["eval_sigma"])):
        if r["mean"] is None:
            score = "diverged"
        else:
            score = f"{r['mean']:.2f}" + ("" if r["ci95"] is None else f" ± {r['ci95']:.2f}")
            if r.get("diverged"):
                score += f" ({r['diverged']} diverged)"
            if r.get("not_converged"):
                score += f" ({r['not_converged']} off by > 5 points)"
        out.add_row(r["model"], r["dataset"], r["method"],
                    "" if r["alpha"] is None else f"{r['alpha']:g}", f"{r['sigma']:g}",
                    f"{r['eval_sigma']:g}", str(r["seeds"]), score)
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(out)
    return console.file.getvalue().rstrip()
