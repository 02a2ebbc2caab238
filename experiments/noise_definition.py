"""Which σ does the paper mean? Vanilla models scored under both noise definitions.

Vanilla trains at σ = 0, so its training does not depend on how σ is defined. This
study trains vanilla once per (model, width, seed), then scores the kept (best clean
validation) state with Monte Carlo runs at each σ under ``range`` (the authors'
released ``generate_noise``: std 0.78·σ·max|W|) and ``level`` (eq. (5) as printed:
std 0.26·σ·max|W|), on the same noise keys, and sets both rows beside the paper's
"w/o noise" rows (Table II).

    python3 experiments/noise_definition.py --out runs/noise_definition \
        --cells vgg8:1:20,resnet18:0.25:12 --seeds 0,1 --mc-runs 50

Every cell is resumable (checkpoints every epoch, evaluations saved σ by σ): the same
command continues after a kill. ``--report-only`` writes ``REPORT.md`` and
``report.json`` from what is finished of the cells ``--cells`` and ``--seeds`` name.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time

#: The paper's vanilla ("w/o noise") rows of Table II, accuracy (%) at σ = 0.2–0.8.
PAPER_VANILLA = {"vgg8": {0.2: 98.8, 0.4: 63.54, 0.6: 17.61, 0.8: 10.12},
                 "resnet18": {0.2: 79.84, 0.4: 38.06, 0.6: 13.17, 0.8: 10.01}}
DEFINITIONS = ("range", "level")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One vanilla training: model, width factor, epochs, seed."""

    model: str
    width: float
    epochs: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-w{self.width:g}-e{self.epochs}-seed{self.seed}"


def parse_cells(text: str, seeds: list[int]) -> list[Cell]:
    """``MODEL:WIDTH:EPOCHS,...`` × seeds, seed-major within each model."""
    cells = []
    for item in text.split(","):
        try:
            model, width, epochs = item.split(":")
            spec = (model.strip().lower(), float(width), int(epochs))
        except ValueError:
            raise ValueError(f"--cells: {item!r} is not MODEL:WIDTH:EPOCHS (e.g. vgg8:1:20)") \
                from None
        if spec[0] not in PAPER_VANILLA:
            raise ValueError(f"--cells: model {model!r} is not one of {sorted(PAPER_VANILLA)}")
        cells += [Cell(*spec, seed) for seed in seeds]
    return cells


def cell_config(cell: Cell, out: str, mc_runs: int, sigmas: tuple[float, ...]):
    from neft_jax.harness.config import ExperimentConfig

    return ExperimentConfig.from_profile(
        "quick", model=cell.model, width=cell.width, epochs=cell.epochs, seed=cell.seed,
        methods=("vanilla",), sigma=sigmas[0], extra_sigmas=sigmas[1:], mc_runs=mc_runs,
        out=os.path.join(out, cell.name), resume=True, checkpoint_every=0.0)


def run_cell(cell: Cell, out: str, mc_runs: int, sigmas: tuple[float, ...], log) -> dict:
    """Train (or resume) the cell's vanilla model; score it under both definitions."""
    import jax

    from neft_jax.evaluate import make_test_set
    from neft_jax.harness import data as data_lib
    from neft_jax.harness.evaluation import SavedEvaluations, evaluate_at_sigmas
    from neft_jax.harness.loop import train_runs
    from neft_jax.harness.runtime import cpu_model
    from neft_jax.harness.tuning import with_tuned_micro_batch

    cfg = cell_config(cell, out, mc_runs, sigmas)
    dataset = data_lib.load_dataset(cfg.dataset, cfg.data_dir)  # missing data: before tuning
    cfg = with_tuned_micro_batch(cfg, log)
    os.makedirs(cfg.out, exist_ok=True)
    test_set = make_test_set(dataset.test_images, dataset.test_labels, cfg.eval_batch_size)
    with jax.default_matmul_precision(cfg.matmul_precision):
        outcome, = train_runs([cfg], dataset, "vanilla", 0.0, log=log, show_progress=False)
        rows = {}
        for definition in DEFINITIONS:
            dcfg = dataclasses.replace(cfg, normalisation=definition)
            saved = SavedEvaluations(
                os.path.join(cfg.out, f"evaluations_{definition}.json"),
                {"best_epoch": outcome.best_epoch, "mc_runs": mc_runs, "seed": cell.seed,
                 "normalisation": definition})
            start = time.perf_counter()
            evaluations = evaluate_at_sigmas(dcfg, outcome.model, outcome.state, test_set,
                                             (0.0, *sigmas), show_progress=False, saved=saved)
            log(f"{cell.name} {definition}: " + ", ".join(
                f"σ={s:g} {e.mean:.2f}" for s, e in evaluations.items())
                + f" ({time.perf_counter() - start:.0f} s)")
            rows[definition] = {f"{s:g}": e.to_json() for s, e in evaluations.items()}
    record = {"cell": dataclasses.asdict(cell), "best_epoch": outcome.best_epoch,
              "best_val_accuracy": outcome.best_val_accuracy,
              "train_seconds": outcome.train_seconds, "mc_runs": mc_runs,
              "clean_test_accuracy": rows["range"]["0"]["summary"]["mean"],
              "evaluations": rows, "machine": cpu_model(), "jax": jax.__version__,
              "date": datetime.date.today().isoformat()}
    with open(os.path.join(cfg.out, "cell.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def load_records(out: str) -> list[dict]:
    records = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        path = os.path.join(out, name, "cell.json")
        if os.path.exists(path):
            with open(path) as f:
                records.append(json.load(f))
    return records


def fit_error(ours: dict[float, float], paper: dict[float, float]) -> float:
    """Root mean square distance (points) between our row and the paper's, over our σ."""
    return (sum((ours[s] - paper[s]) ** 2 for s in ours) / len(ours)) ** 0.5


def report(out: str, sigmas: tuple[float, ...], cells: list[Cell] | None = None) -> str:
    """REPORT.md and report.json: per cell, both definitions' rows beside the paper's; with
    ``cells``, only those (the others finished in ``out``, and cells not scored at every σ
    of ``sigmas``, are named in one line, not tabled)."""
    records, left_out = [], []
    wanted = None if cells is None else {c.name for c in cells}
    for r in load_records(out):
        name = Cell(**r["cell"]).name
        scored = all(f"{s:g}" in r["evaluations"][d] for d in DEFINITIONS for s in sigmas)
        if (wanted is None or name in wanted) and scored:
            records.append(r)
        else:
            left_out.append(name + ("" if scored else " (not scored at every σ)"))
    lines = ["# Which σ the paper means: vanilla under both noise definitions", "",
             "Mean Monte Carlo accuracy (%) ± 95 % CI over the runs, on the same noise keys "
             "for both definitions. `range`: std 0.78·σ·max|W| (authors' released code); "
             "`level`: std 0.26·σ·max|W| (eq. (5) as printed). RMS: root mean square "
             f"distance to the paper's row over σ = {', '.join(f'{s:g}' for s in sigmas)}.",
             ""]
    summary = []
    for model in PAPER_VANILLA:
        mine = [r for r in records if r["cell"]["model"] == model]
        if not mine:
            continue
        head = " | ".join(f"σ={s:g}" for s in sigmas)
        lines += [f"## {model}", "", f"| row | clean | {head} | RMS to paper |",
                  "|---|---|" + "---|" * len(sigmas) + "---|",
                  "| paper (Table II, w/o noise) | — | "
                  + " | ".join(f"{PAPER_VANILLA[model][s]:.2f}" for s in sigmas) + " | 0 |"]
        for r in mine:
            c = r["cell"]
            for definition in DEFINITIONS:
                ev = r["evaluations"][definition]
                means = {s: ev[f"{s:g}"]["summary"]["mean"] for s in sigmas}
                cis = {s: ev[f"{s:g}"]["summary"]["ci95"] for s in sigmas}
                rms = fit_error(means, PAPER_VANILLA[model])
                summary.append({"model": model, "width": c["width"], "epochs": c["epochs"],
                                "seed": c["seed"], "definition": definition,
                                "clean": r["clean_test_accuracy"], "means": means,
                                "ci95": cis, "mc_runs": r["mc_runs"], "rms": rms,
                                "machine": r["machine"], "date": r["date"]})
                lines.append(
                    f"| ×{c['width']:g}, {c['epochs']} ep, seed {c['seed']}, `{definition}`, "
                    f"{r['mc_runs']} runs | "
                    f"{r['clean_test_accuracy']:.1f} | "
                    + " | ".join(f"{means[s]:.2f} ± {cis[s]:.2f}" for s in sigmas)
                    + f" | {rms:.1f} |")
        made = sorted({(r["machine"], r["date"]) for r in mine})
        lines += ["", "Machine and date: " + "; ".join(f"{m}, {d}" for m, d in made)
                  + "; kept epoch chosen by clean validation accuracy.", ""]
    if left_out:
        lines += [f"Not tabled: {len(left_out)} more finished cell"
                  f"{'s' if len(left_out) > 1 else ''} in this folder that --cells and "
                  f"--seeds do not name, or not scored at every σ: {', '.join(left_out)}.",
                  ""]
    if summary:
        verdict = {d: [s["rms"] for s in summary if s["definition"] == d] for d in DEFINITIONS}
        closer = min(DEFINITIONS, key=lambda d: sum(verdict[d]) / len(verdict[d]))
        wins = sum(a["rms"] < b["rms"] for a, b in zip(
            [s for s in summary if s["definition"] == closer],
            [s for s in summary if s["definition"] != closer], strict=True))
        lines += [f"**Closer to the paper's vanilla rows: `{closer}`** in {wins} of "
                  f"{len(verdict[closer])} cells (mean RMS: "
                  + ", ".join(f"`{d}` {sum(v) / len(v):.1f}" for d, v in verdict.items())
                  + " points).", ""]
    text = "\n".join(lines)
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump({"paper": {m: {f"{s:g}": v for s, v in row.items()}
                             for m, row in PAPER_VANILLA.items()},
                   "rows": [{**s, "means": {f"{k:g}": v for k, v in s["means"].items()},
                             "ci95": {f"{k:g}": v for k, v in s["ci95"].items()}}
                            for s in summary]}, f, indent=1)
    return text


def noise_definition_parser():
    """The command line of this study."""
    from neft_jax.harness.cli import CommandParser
    from neft_jax.harness.flags import non_negative_int, positive_int, sigma_list

    def seed_list(text: str) -> list[int]:
        return [non_negative_int(s) for s in text.split(",") if s.strip()]

    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/noise_definition",
                        help="study folder; finished cells there are reused "
                        "(default: runs/noise_definition)")
    parser.add_argument("--cells", default="vgg8:1:20,resnet18:0.25:12",
                        help="MODEL:WIDTH:EPOCHS, comma-separated "
                        "(default: vgg8:1:20,resnet18:0.25:12)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1],
                        help="comma-separated seeds (default: 0,1)")
    parser.add_argument("--mc-runs", type=positive_int, default=50,
                        help="Monte Carlo runs per σ (default: 50)")
    parser.add_argument("--sigmas", type=sigma_list, default=(0.2, 0.4, 0.6, 0.8),
                        help="σ values each vanilla model is scored at, under both noise "
                        "definitions (default: 0.2,0.4,0.6,0.8)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite the report from the finished cells in --out "
                        "that --cells and --seeds name")
    return parser


def main(argv=None) -> int:
    from neft_jax.harness.identity import check_out_folder

    parser = noise_definition_parser()
    args = parser.parse_args(argv)
    sigmas = args.sigmas
    try:
        if not sigmas or not args.seeds:
            raise ValueError("--sigmas and --seeds need at least one value each")
        paper = sorted(PAPER_VANILLA["vgg8"])
        if other := [s for s in sigmas if not any(abs(s - p) < 1e-9 for p in paper)]:
            raise ValueError(f"--sigmas: the report sets each σ beside the paper's vanilla "
                             f"row, which has σ = {', '.join(f'{p:g}' for p in paper)} only; "
                             f"got {', '.join(f'{s:g}' for s in other)}")
        check_out_folder(args.out)
        cells = parse_cells(args.cells, args.seeds)
        for cell in cells:  # every cell's settings checked before the first trains
            cell_config(cell, args.out, args.mc_runs, sigmas)
    except ValueError as error:
        parser.error(str(error))
    if args.report_only and not os.path.isdir(args.out):
        parser.error(f"--report-only: no study in {args.out!r} (give its --out)")

    def log(message: str) -> None:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)

    if not args.report_only:
        for cell in cells:
            log(f"cell {cell.name}")
            run_cell(cell, args.out, args.mc_runs, sigmas, log)
            report(args.out, sigmas, cells)
    print(report(args.out, sigmas, cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
