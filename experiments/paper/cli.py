"""The paper reproduction's command line, built from the harness's config flags like
``neft-run``'s (:mod:`neft_jax.harness.cli`): ``python experiments/reproduce.py``."""

from __future__ import annotations

import argparse
import os

from neft_jax.harness.cli import (
    CommandParser,
    add_output_arguments,
    add_worker_argument,
    run_cleanly,
    show_progress,
    start_command,
)
from neft_jax.harness.flags import (
    add_config_arguments,
    config_from_args,
    model_names,
    names,
    positive_float,
    positive_int,
    sigma_list,
)

from .plan import BUDGET_STAGES, DEFAULT_STAGES, STAGES, TABLE2_SIGMAS, Plan

#: Config fields the reproduction plan sets itself.
REPRODUCE_EXCLUDES = ("methods", "extra_sigmas", "alpha_search", "resume", "overwrite")
#: Config flags the plan sets per stage: refused in one line rather than half applied.
SET_BY_THE_PLAN = {
    "model": "--model: the plan trains the models of --models",
    "sigma": "--sigma: each stage sets its own σ (Table II's are --sigmas)",
    "alpha": "--alpha: every stage trains IRS/OVF at the authors' α (the alpha and "
             "alpha_grid stages try the others)",
    "resume": "--resume: reproduce.py always continues; rerun the same command",
    "overwrite": "--overwrite: reproduce.py never deletes a run; give another --out",
    "drop_exits": "--drop-exit: the table5 stage trains IRS without each exit itself, and "
                  "every other stage with all of them",
    "equal_coefficients": "--equal-coefficients: the table5 stage trains its equal-"
                          "coefficients variant itself, and every other stage with eq. (1)'s",
}


def reproduce_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="reproduce.py",
        description="Reproduce the paper's Tables II, III and V, the α "
        "search and EKL with one resumable command; OUT/REPORT.md sets ours beside the paper's.")
    add_config_arguments(parser, exclude=REPRODUCE_EXCLUDES,
                         defaults={"seeds": 3, "out": "runs/reproduce"},
                         hidden=tuple(set(SET_BY_THE_PLAN) - set(REPRODUCE_EXCLUDES)),
                         helps={"exit_sigma": "σ of the exits (default: the σ each cell "
                                "trains at)"})
    parser.add_argument("--models", default="vgg8", help="comma-separated (vgg8,resnet18) "
                        "(default: vgg8)")
    parser.add_argument("--stages", default=None,
                        help=f"comma-separated subset of {','.join(STAGES)}, run in this order, "
                        "model by model, or 'all': every stage, as --time-budget takes them "
                        "(default: all but core and alpha_grid; with "
                        f"--time-budget: {','.join(BUDGET_STAGES)}, the paper-scale program's "
                        "steps first across models: paper/plan.py's PRIORITY)")
    parser.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                        help="start a cell only if its measured time says it ends within "
                        "SECONDS of the start; stop cleanly with everything finished saved "
                        "(the same command continues); the first cell of a method runs to "
                        "measure it")
    parser.add_argument("--sigmas", type=sigma_list, default=None,
                        help="Table II σ values (default: 0.2,0.4,0.6,0.8)")
    parser.add_argument("--table3-seeds", type=positive_int, default=10,
                        help="runs of Table III (default: 10)")
    parser.add_argument("--table5-seeds", type=positive_int, default=2,
                        help="seeds of each Table V variant (default: 2)")
    parser.add_argument("--alpha-seeds", type=positive_int, default=2,
                        help="seeds of each α of the alpha_grid stage (default: 2)")
    add_worker_argument(parser)
    parser.add_argument("--rates", metavar="JSONL", default=None,
                        help="bench.py --jsonl output with an --end-to-end row: before "
                        "starting, estimate each training's time from its measured loop rate "
                        "and say how much of the plan fits the --time-budget")
    only = parser.add_mutually_exclusive_group()  # each is a different command
    only.add_argument("--estimate-only", action="store_true",
                        help="print the --rates estimate of the whole plan (its trainings and "
                        "their time) and train nothing")
    only.add_argument("--report-only", action="store_true",
                        help="only rewrite REPORT.md, report.json, report.png from OUT")
    only.add_argument("--check-only", action="store_true",
                        help="only check, in seconds, what the plan checks before it trains "
                        "(the data, and that OUT's cells were made with these settings); "
                        "exit 0 if it would start, 2 if not")
    add_output_arguments(parser)
    for field in ("resume", "overwrite"):  # refused below with what to do instead
        parser.add_argument(f"--{field}", action="store_const", const=True,
                            help=argparse.SUPPRESS)
    return parser


def reproduce_main(argv=None) -> int:
    """``experiments/reproduce.py``."""
    parser = reproduce_parser()
    args = start_command(parser, argv)
    import jax

    from neft_jax.harness.budget import Budget
    from neft_jax.harness.identity import check_report_has_results

    from .collect import collect_report
    from .reproduce import check_plan, run_plan, write_report

    for field, why in SET_BY_THE_PLAN.items():
        if getattr(args, field) is not None:
            parser.error(why)
    try:
        models = model_names(args.models)
        base, profile_line = config_from_args(args, jax.default_backend(), models=models)
        if args.stages is not None and not names(args.stages):
            raise ValueError("--stages is empty: name stages, or leave it out for the default")
        listed = names(args.stages) if args.stages and args.stages != "all" else None
        stages = listed or (BUDGET_STAGES if args.time_budget or args.stages == "all"
                            else DEFAULT_STAGES)
        budget = Budget(args.time_budget)
        plan = Plan(models=models, stages=stages, seeds=base.seeds,
                    table3_seeds=args.table3_seeds, table5_seeds=args.table5_seeds,
                    alpha_seeds=args.alpha_seeds, sigmas=args.sigmas or TABLE2_SIGMAS,
                    order="priority" if (args.time_budget or args.stages == "all")
                    and not listed else "model")
    except ValueError as error:
        parser.error(str(error))
    if args.estimate_only and not args.rates:
        parser.error("--estimate-only needs --rates (a bench.py --jsonl file with an "
                     "--end-to-end row)")
    if args.report_only and not os.path.isdir(base.out):
        parser.error(f"--report-only: no reproduction in {base.out!r} (give its --out)")
    print(profile_line, flush=True)
    order = "priority order" if plan.order == "priority" else "model by model"
    print(f"reproduce: models {list(plan.models)}, stages {list(plan.stages)}, seeds "
          f"{plan.seeds} (Table III: {plan.table3_seeds}, Table V: {plan.table5_seeds}, α grid: "
          f"{plan.alpha_seeds}), {order} into {base.out}", flush=True)
    def job() -> int:
        if args.rates and not args.report_only:
            try:
                line = plan_estimate(base, plan, args.rates, args.time_budget)
            except ValueError as error:
                if args.estimate_only:  # the estimate was the whole job
                    raise
                line = f"estimate: {error}; no estimate, the first cell is the measurement"
            print(line, flush=True)
        if args.estimate_only:
            return 0
        if args.check_only:
            check_plan(base, plan, base.out)
            print(f"check: the data and {base.out!r} are ready for this plan")
            return 0
        if args.report_only:
            check_report_has_results(*_found_in(collect_report(base.out, plan, base)), base.out)
            write_report(base.out, plan, base)
        else:
            run_plan(base, plan, base.out, show_progress=show_progress(args), budget=budget,
                     worker=args.worker)
        print(f"report: {os.path.join(base.out, 'REPORT.md')}, report.json, report.png")
        return 0

    return run_cleanly(parser.prog, job, "finished work is kept; rerun the same command "
                       "to continue")


def _found_in(report: dict) -> tuple[bool, list[str]]:
    """Whether a collected report holds any finished result, and the results it left out
    (``where: made with → these``)."""
    found = False
    for data in report.values():
        tables = (*data.table2.values(), data.vanilla_sweep, data.table3, data.table5)
        found = found or bool(data.core or data.alpha_search or data.alpha_grid or any(
            cell is not None for cells in tables for cell in cells.values()))
    return found, [f"{path}: {changed}" for data in report.values()
                   for path, changed in data.other_settings.items()]


def plan_estimate(base, plan, rates_path: str, budget_seconds: float | None) -> str:
    """:func:`~paper.estimate.estimate_from_rates` of a bench JSONL file, with the
    dataset's split sizes, of the trainings not finished in ``base.out``; ValueError when
    the file cannot be read."""
    import json

    from neft_jax.harness import data as data_lib

    from .estimate import estimate_from_rates

    try:
        with open(rates_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read --rates {rates_path!r} ({error})") from None
    dataset = data_lib.load_dataset(base.dataset, base.data_dir)
    train, validation = data_lib.validation_indices(dataset.train_labels, base.val_fraction,
                                                    base.seed)
    return estimate_from_rates(base, plan, rows, budget_seconds, len(train), len(validation),
                               len(dataset.test_labels),
                               out=base.out if os.path.isdir(base.out) else None)
