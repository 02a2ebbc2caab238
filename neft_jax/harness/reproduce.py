"""The paper's experiments as one resumable plan, and a report beside the published numbers.

:func:`run_plan` runs, per model, the stages of :data:`STAGES` into ``out/`` (each a
sweep or multi-seed run that skips finished work when re-launched):

==========  =====================================================================
stage       what it runs (σ in the device model of ``base``)
==========  =====================================================================
table2      noise injection and IRS trained and evaluated at each σ of Table II
table3      noise injection and IRS at σ = 0.6, ``table3_seeds`` runs (Table III)
vanilla     vanilla trained at σ = 0 and evaluated over σ ∈ {0, 0.05, …, 0.4, 0.6, 0.8}
table5      IRS at σ = 0.4 without each exit, and with equal coefficients (Table V)
control     IRS at σ = 0.4 with α = 1e-9: eq. (1)'s scaling without the feedback
scaled      ``noise_scaled`` at σ = 0.4: noise injection on CE(z/(s+1)), the fair baseline
alpha       IRS's five-step α search at σ = 0.4 (one seed)
ovf         OVF trained and evaluated at each σ of Table II
==========  =====================================================================

:func:`write_report` turns whatever has finished into ``REPORT.md``,
``report.json`` and ``report.png``, with the paper's numbers (SPEC §6) beside ours.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.paper import (
    PAPER_TABLE2,
    PAPER_TABLE2_UPPER_BOUNDS,
    PAPER_TABLE3,
    PAPER_TABLE5,
)
from neft_jax.harness.reporting import save_figure
from neft_jax.harness.results import RunResults, sigma_key, write_atomic
from neft_jax.harness.seeds import run_seeds
from neft_jax.harness.sweeps import (
    Cell,
    aggregate_over_seeds,
    collect_rows,
    grid_cells,
    run_sweep,
)
from neft_jax.models import MODELS

STAGES = ("table2", "table3", "vanilla", "table5", "control", "scaled", "alpha", "ovf")
TABLE2_SIGMAS = (0.2, 0.4, 0.6, 0.8)
TABLE3_SIGMA = 0.6
ABLATION_SIGMA = 0.4
VANILLA_SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.6, 0.8)
CONTROL_ALPHA = 1e-9

@dataclasses.dataclass(frozen=True)
class Plan:
    """Which stages, models and seed counts :func:`run_plan` runs."""

    models: tuple[str, ...] = ("vgg8",)
    stages: tuple[str, ...] = STAGES
    seeds: int = 3
    table3_seeds: int = 10
    table5_seeds: int = 2
    sigmas: tuple[float, ...] = TABLE2_SIGMAS

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages must be names from {list(STAGES)}, got {self.stages!r}")
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be names from {sorted(MODELS)}, got {self.models!r}")
        for name in ("seeds", "table3_seeds", "table5_seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def stage_dir(out: str, stage: str, model: str, variant: str = "") -> str:
    names = {"table2": "table2", "table3": "table3", "vanilla": "vanilla_sweep",
             "table5": "table5", "control": "control", "scaled": "noise_scaled", "ovf": "ovf",
             "alpha": "alpha_search"}
    name = f"{names[stage]}_{model}" + (f"_{variant}" if variant else "")
    return os.path.join(out, name + ("_irs" if stage == "alpha" else ""))


def _seeds(cfg: ExperimentConfig, count: int) -> list[int]:
    return list(range(cfg.seed, cfg.seed + count))


def run_plan(base: ExperimentConfig, plan: Plan, out: str,
             log: Callable[[str], None] = print, show_progress: bool = True) -> dict:
    """Run every unfinished stage of ``plan`` into ``out``; write and return the report."""
    os.makedirs(out, exist_ok=True)
    for model in plan.models:
        cfg = dataclasses.replace(base, model=model, resume=True, overwrite=False,
                                  extra_sigmas=(), seeds=1)
        for stage in plan.stages:
            log(f"== {model}: {stage}")
            _run_stage(stage, cfg, plan, out, log, show_progress)
            write_report(out, plan, base)
    return write_report(out, plan, base)


def _sweep(cfg, out, methods, sigmas, alphas, seeds, log, show_progress):
    cells = grid_cells([cfg.model], [cfg.dataset], methods, sigmas, alphas, seeds)
    run_sweep(cells, cfg, out, log=log, show_progress=show_progress)


def _run_stage(stage, cfg, plan, out, log, show_progress):
    model = cfg.model
    path = stage_dir(out, stage, model)
    if stage == "table2":
        _sweep(cfg, path, ["noise", "irs"], plan.sigmas, [None], _seeds(cfg, plan.seeds), log,
               show_progress)
    elif stage == "table3":
        _link_finished_cells(stage_dir(out, "table2", model), path, TABLE3_SIGMA)
        _sweep(cfg, path, ["noise", "irs"], [TABLE3_SIGMA], [None],
               _seeds(cfg, plan.table3_seeds), log, show_progress)
    elif stage == "vanilla":
        sigmas = sorted(set(VANILLA_SIGMAS) | set(plan.sigmas))
        run_seeds(dataclasses.replace(cfg, methods=("vanilla",), sigma=0.0,
                                      extra_sigmas=tuple(sigmas), out=path, seeds=plan.seeds),
                  log=log, show_progress=show_progress)
    elif stage == "table5":
        variants = {f"drop{i}": {"drop_exits": (i,)} for i in range(1, MODELS[model].num_exits + 1)}
        variants["equal"] = {"equal_coefficients": True}
        for name, change in variants.items():
            run_seeds(dataclasses.replace(cfg, methods=("irs",), sigma=ABLATION_SIGMA,
                                          out=stage_dir(out, "table5", model, name),
                                          seeds=plan.table5_seeds, **change),
                      log=log, show_progress=show_progress)
    elif stage == "control":
        _sweep(cfg, path, ["irs"], [ABLATION_SIGMA], [CONTROL_ALPHA], _seeds(cfg, plan.seeds),
               log, show_progress)
    elif stage == "scaled":
        _sweep(cfg, path, ["noise_scaled"], [ABLATION_SIGMA], [None], _seeds(cfg, plan.seeds),
               log, show_progress)
    elif stage == "ovf":
        _sweep(cfg, path, ["ovf"], plan.sigmas, [None], _seeds(cfg, plan.seeds), log,
               show_progress)
    elif stage == "alpha":
        run_experiment(dataclasses.replace(cfg, methods=("irs",), sigma=ABLATION_SIGMA,
                                           alpha_search=True, out=path), log=log,
                       show_progress=show_progress)


def _link_finished_cells(source: str, target: str, sigma: float) -> None:
    """Reuse Table II's cells at ``sigma`` as Table III's first seeds (symlinks)."""
    cells = os.path.join(source, "cells")
    if not os.path.isdir(cells):
        return
    os.makedirs(os.path.join(target, "cells"), exist_ok=True)
    for name in os.listdir(cells):
        link = os.path.join(target, "cells", name)
        if f"-sigma{sigma:g}-" in name and not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(cells, name)), link)


# ------------------------------------------------------------------------------ report


def _sweep_rows(path: str) -> list[dict]:
    """One row per finished cell × σ of a (partly) finished sweep directory."""
    cells = []
    for results_path in _cell_paths(path):
        settings = RunResults.load(results_path).settings
        cells.append(Cell(settings["model"], settings["dataset"], settings["methods"][0],
                          float(settings["sigma"]), settings["alpha"], int(settings["seed"])))
    return collect_rows(cells, path)


def _sweep_table(path: str) -> list[dict]:
    """Mean ± CI over seeds per cell (seed left out) of a sweep directory."""
    return aggregate_over_seeds(_sweep_rows(path))


def _seeds_results(path: str) -> RunResults | None:
    results_path = os.path.join(path, "results.json")
    if not os.path.exists(results_path):
        return None
    results = RunResults.load(results_path)
    return results if results.seeds else None


def _cell(mean, ci95, seeds, ekl=None, not_converged=None, seed_means=None) -> dict:
    return {"mean": mean, "ci95": ci95, "seeds": seeds, "ekl": ekl,
            "not_converged": not_converged, "seed_means": seed_means}


def _from_sweep(table, method, sigma, alpha=None) -> dict | None:
    for row in table:
        if (row["method"] == method and math.isclose(row["sigma"], sigma)
                and math.isclose(row["eval_sigma"], sigma)
                and (alpha is None or (row["alpha"] and math.isclose(row["alpha"], alpha)))
                and row["mean"] is not None):
            return _cell(row["mean"], row["ci95"], row["seeds"], row["ekl"],
                         row["not_converged"])
    return None


def _from_seeds(results: RunResults | None, method, sigma) -> dict | None:
    if results is None or method not in results.methods:
        return None
    evaluation = results.methods[method].at(sigma)
    if not evaluation or not evaluation.summary:
        return None
    s = evaluation.summary
    return _cell(s["mean"], s["ci95"], len(evaluation.seed_means), s.get("ekl"),
                 evaluation.not_converged, evaluation.seed_means)


def collect_report(out: str, plan: Plan) -> dict:
    """Every finished number of the plan, per model, in one dict (percent, nats)."""
    report = {}
    for model in plan.models:
        table2 = _sweep_table(stage_dir(out, "table2", model))
        vanilla = _seeds_results(stage_dir(out, "vanilla", model))
        control = _sweep_table(stage_dir(out, "control", model))
        scaled = _sweep_table(stage_dir(out, "scaled", model))
        ovf = _sweep_table(stage_dir(out, "ovf", model))
        rows = {
            "vanilla": {sigma_key(s): _from_seeds(vanilla, "vanilla", s) for s in plan.sigmas},
            "noise": {sigma_key(s): _from_sweep(table2, "noise", s) for s in plan.sigmas},
            "irs": {sigma_key(s): _from_sweep(table2, "irs", s) for s in plan.sigmas},
            "irs α→0 (control)": {sigma_key(ABLATION_SIGMA): _from_sweep(
                control, "irs", ABLATION_SIGMA, CONTROL_ALPHA)},
            "noise_scaled: CE(z/(s+1))": {sigma_key(ABLATION_SIGMA): _from_sweep(
                scaled, "noise_scaled", ABLATION_SIGMA)},
            "ovf": {sigma_key(s): _from_sweep(ovf, "ovf", s) for s in plan.sigmas},
        }
        table3 = _sweep_table(stage_dir(out, "table3", model))
        table5 = {}
        for i in range(1, MODELS[model].num_exits + 1):
            table5[f"without exit {i}"] = _from_seeds(
                _seeds_results(stage_dir(out, "table5", model, f"drop{i}")), "irs",
                ABLATION_SIGMA)
        table5["equal coefficients"] = _from_seeds(
            _seeds_results(stage_dir(out, "table5", model, "equal")), "irs", ABLATION_SIGMA)
        table5["all exits"] = _paired_all_exits(out, model, table5)
        alpha_path = os.path.join(stage_dir(out, "alpha", model), "results.json")
        alpha = None
        if os.path.exists(alpha_path):
            entry = RunResults.load(alpha_path).methods.get("irs")
            if entry and entry.alpha_search is not None:
                test = entry.at(ABLATION_SIGMA)
                alpha = {"validation_accuracy": entry.alpha_search, "chosen": entry.alpha,
                         "test": test.summary if test else None}
        report[model] = {
            "table2": rows,
            "vanilla_sweep": {sigma_key(s): _from_seeds(vanilla, "vanilla", s)
                              for s in VANILLA_SIGMAS},
            "table3": {m: _from_sweep(table3, m, TABLE3_SIGMA) for m in ("noise", "irs")},
            "table5": table5,
            "alpha_search": alpha,
        }
    return report


def _paired_all_exits(out, model, table5) -> dict | None:
    """IRS with all exits at σ = 0.4 over the same seeds as the ablation runs (paired)."""
    seeds = next((len(v["seed_means"]) for v in table5.values() if v), None)
    rows = [r for r in _sweep_rows(stage_dir(out, "table2", model))
            if r["method"] == "irs" and math.isclose(r["sigma"], ABLATION_SIGMA)
            and math.isclose(r["eval_sigma"], ABLATION_SIGMA)]
    rows = sorted(rows, key=lambda r: r["seed"])[:seeds] if seeds else rows
    if not rows:
        return None
    table = aggregate_over_seeds(rows)
    return _cell(table[0]["mean"], table[0]["ci95"], len(rows), table[0]["ekl"],
                 seed_means=[r["mean"] for r in rows])


def _cell_paths(path: str) -> list[str]:
    cells = os.path.join(path, "cells")
    if not os.path.isdir(cells):
        return []
    return [os.path.join(cells, n, "results.json") for n in sorted(os.listdir(cells))
            if os.path.exists(os.path.join(cells, n, "results.json"))]


def _fmt(cell: dict | None) -> str:
    if not cell or cell["mean"] is None:
        return "–"
    ci = "" if cell["seeds"] < 2 or cell["ci95"] is None or not math.isfinite(cell["ci95"]) \
        else f" ± {cell['ci95']:.2f}"
    return f"{cell['mean']:.2f}{ci} (n={cell['seeds']})"


def format_report(report: dict, plan: Plan, base: ExperimentConfig) -> str:
    """Markdown: Tables II, III, V, α search, EKL, σ = 0 vanilla sweep; paper beside ours."""
    lines = ["# NeFT reproduction report", "",
             f"Settings: dataset {base.dataset}, width ×{base.width:g}, {base.epochs} epochs, "
             f"batch {base.batch_size}, {base.mc_runs} Monte Carlo runs per σ, "
             f"{base.device_preset} with '{base.normalisation}' normalisation, compute "
             f"{base.compute}. Cells: mean over seeds of each run's Monte Carlo mean "
             "± 95 % CI over seeds (n = seeds). Paper: SPEC §6 (full model, MNIST, "
             "200 epochs).", ""]
    for model, data in report.items():
        sigmas = [f"{s:g}" for s in plan.sigmas]
        lines += [f"## {model}", "", "### Table II: accuracy (%) against σ", "",
                  "| method | " + " | ".join(f"σ={s}" for s in sigmas) + " |",
                  "|---|" + "---|" * len(sigmas)]
        for method, cells in data["table2"].items():
            lines.append(f"| {method} (ours) | "
                         + " | ".join(_fmt(cells.get(s)) for s in sigmas) + " |")
            paper = PAPER_TABLE2.get((model, method))
            if paper and tuple(plan.sigmas) == TABLE2_SIGMAS:
                bounds = PAPER_TABLE2_UPPER_BOUNDS.get((model, method), ())
                lines.append(f"| {method} (paper) | " + " | ".join(
                    ("≤" if i in bounds else "") + f"{p:g}" for i, p in enumerate(paper)) + " |")
        lines += ["", f"### EKL (nats) at σ = {ABLATION_SIGMA:g}", "", "| method | EKL |",
                  "|---|---|"]
        for method, cells in data["table2"].items():
            cell = cells.get(f"{ABLATION_SIGMA:g}")
            if cell and cell.get("ekl") is not None:
                lines.append(f"| {method} | {cell['ekl']:.3f} |")
        lines += ["", f"### Table III: runs (of n) not converged at σ = {TABLE3_SIGMA:g}", "",
                  "| method | ours | mean accuracy | paper (of 10) |", "|---|---|---|---|"]
        for method, cell in data["table3"].items():
            ours = "–" if not cell else f"{cell['not_converged']} of {cell['seeds']}"
            lines.append(f"| {method} | {ours} | {_fmt(cell)} | "
                         f"{PAPER_TABLE3.get((model, method), '–')} |")
        lines += ["", f"### Table V: IRS exit ablation at σ = {ABLATION_SIGMA:g}", "",
                  "| variant | ours | per seed | paper |", "|---|---|---|---|"]
        for name, cell in data["table5"].items():
            per_seed = ", ".join(f"{m:.2f}" for m in cell["seed_means"]) if cell and cell.get(
                "seed_means") else "–"
            paper = PAPER_TABLE5.get(name, "–") if model == "vgg8" else "–"
            lines.append(f"| {name} | {_fmt(cell)} | {per_seed} | {paper} |")
        alpha = data["alpha_search"]
        lines += ["", f"### Five-step α search (IRS, σ = {ABLATION_SIGMA:g})", ""]
        if alpha:
            lines += ["| α | validation accuracy (%) |", "|---|---|"]
            for a, acc in alpha["validation_accuracy"].items():
                lines.append(f"| {a} | {'diverged' if acc is None else f'{acc:.2f}'} |")
            test = alpha["test"]
            lines += ["", f"Chosen α = {alpha['chosen']:g}"
                      + (f"; test accuracy {test['mean']:.2f} ± {test['ci95']:.2f} (one seed)."
                         if test else ".")]
        else:
            lines.append("Not run yet.")
        lines += ["", "### Vanilla trained at σ = 0, evaluated over σ", "",
                  "| σ | accuracy (%) |", "|---|---|"]
        for s, cell in data["vanilla_sweep"].items():
            lines.append(f"| {s} | {_fmt(cell)} |")
        lines.append("")
    return "\n".join(lines)


def plot_report(report: dict, plan: Plan, path: str) -> None:
    """Accuracy against σ per model: ours (± 95 % CI over seeds) solid, the paper's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(6 * len(report), 4.2), dpi=110,
                             squeeze=False)
    for ax, (model, data) in zip(axes[0], report.items(), strict=True):
        for i, (method, cells) in enumerate(data["table2"].items()):
            source = data["vanilla_sweep"] if method == "vanilla" else cells
            points = sorted((float(s), c) for s, c in source.items() if c and c["mean"] is not None)
            if not points:
                continue
            color = f"C{i}"
            ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                        yerr=[p[1]["ci95"] or 0 for p in points], marker="o", capsize=3,
                        color=color, label=f"{method} (ours)")
            paper = PAPER_TABLE2.get((model, method))
            if paper:
                ax.plot(TABLE2_SIGMAS, paper, "--", color=color, alpha=0.6,
                        label=f"{method} (paper)")
        ax.set(title=model, xlabel="σ_d", ylabel="Monte Carlo accuracy (%)", ylim=(0, 101))
    save_figure(fig, path)


def write_report(out: str, plan: Plan, base: ExperimentConfig) -> dict:
    """REPORT.md, report.json and report.png in ``out`` from every finished stage."""
    report = collect_report(out, plan)
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=1))
    write_atomic(os.path.join(out, "REPORT.md"), format_report(report, plan, base))
    plot_report(report, plan, os.path.join(out, "report.png"))
    return report
