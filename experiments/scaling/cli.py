"""The scaling study's command line, built from the harness's config flags like
``neft-run``'s (:mod:`neft_jax.harness.cli`): ``python experiments/scaling.py``."""

from __future__ import annotations

import argparse
import os

from neft_jax.harness.cli import (
    CommandParser,
    add_config_arguments,
    add_output_arguments,
    add_worker_argument,
    config_from_args,
    positive_float,
    run_cleanly,
    show_progress,
    start_command,
)
from neft_jax.harness.identity import check_report_has_results

from .collect import collect_study
from .report import REPORT_FILES, format_study, write_study_report
from .study import DEFAULT_POINTS, METHODS, parse_points, run_study, study_points

#: Config fields the scaling study sets itself (width and epochs come from --points).
SCALING_EXCLUDES = ("width", "epochs", "extra_sigmas", "alpha_search", "resume", "overwrite",
                    "seed_mode")


def print_report_files(out: str) -> None:
    """One line naming the scaling report's files that exist in ``out``."""
    names = [n for n in REPORT_FILES if os.path.exists(os.path.join(out, n))]
    print(f"report: {os.path.join(out, names[0]) if names else out}"
          + "".join(f", {n}" for n in names[1:]))


def scaling_parser() -> argparse.ArgumentParser:
    points = ",".join(f"{w:g}:" + "/".join(map(str, es)) for w, es in DEFAULT_POINTS.items())
    parser = CommandParser(
        prog="scaling.py",
        description="Where the paper's regime starts: every method at "
        "one σ over model width × training length, resumable; OUT/SCALING.md holds the table "
        "and the smallest point where the methods separate, OUT/scaling.png the plot, "
        "OUT/differences.png the differences between methods paired within each seed.")
    add_config_arguments(parser, exclude=SCALING_EXCLUDES,
                         defaults={"mc_runs": 50, "out": "runs/scaling",
                                   "methods": METHODS})
    parser.add_argument("--points", default=points,
                        help=f"width:epochs/epochs,... (default: {points})")
    parser.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                        help="start a cell only if its measured time says it ends within "
                        "SECONDS; stop cleanly otherwise (the same command continues)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write OUT/SCALING.md, scaling.json, scaling.png and "
                        "differences.png from the cells of --points finished so far")
    add_worker_argument(parser)
    add_output_arguments(parser)
    return parser


def scaling_main(argv=None) -> int:
    """``experiments/scaling.py``."""
    parser = scaling_parser()
    args = start_command(parser, argv)
    import jax

    from neft_jax.harness.budget import Budget, BudgetExhausted

    try:
        base, profile_line = config_from_args(args, jax.default_backend())
        points = study_points(parse_points(args.points))
        budget = Budget(args.time_budget)
    except ValueError as error:
        parser.error(str(error))
    if args.report_only:
        if not os.path.isdir(base.out):
            parser.error(f"--report-only: no study in {base.out!r}")
        try:
            found = collect_study(base, points, base.out, base.methods)
            check_report_has_results(any(row.mean is not None for row in found.rows),
                                     found.other_settings, base.out)
        except ValueError as error:
            parser.error(str(error))
        report = write_study_report(base, points, base.out, base.methods)
        print(format_study(report, base.methods))
        print_report_files(base.out)
        return 0
    print(f"scaling study: {len(points)} points of width × epochs (cheapest first), methods "
          f"{list(base.methods)} at σ = {base.sigma:g} ({base.normalisation} noise, "
          f"{base.device_preset}), {base.model} on {base.dataset}, batch {base.batch_size}, "
          f"lr {base.learning_rate:g}, compute {base.compute}, {base.mc_runs} Monte Carlo runs, "
          f"seeds {base.seed}…{base.seed + base.seeds - 1}, into {base.out}", flush=True)

    def job() -> int:
        try:
            run_study(base, points, base.out, methods=base.methods,
                      show_progress=show_progress(args), budget=budget,
                      worker=args.worker)
        except BudgetExhausted as reason:
            print(f"stopped before the time budget: {reason}; rerun the same command to "
                  "continue", flush=True)
        print_report_files(base.out)
        return 0

    return run_cleanly(parser.prog, job, "finished cells are kept; rerun the same command "
                       "to continue")
