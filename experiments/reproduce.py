"""Reproduce the paper's Tables II, III and V, the α search and EKL with one command.

    python experiments/reproduce.py --out runs/reproduce                 # VGG-8, quick on CPU
    python experiments/reproduce.py --models vgg8,resnet18 --profile paper --out runs/paper
    python experiments/reproduce.py --stages table2,table3 --out runs/reproduce
    python experiments/reproduce.py --report-only --out runs/reproduce   # tables from what ran

Every stage skips finished work, so re-running the same command after a crash or
on a later day continues where it stopped. OUT/REPORT.md holds the tables beside
the paper's numbers, OUT/report.json the numbers and OUT/report.png the plot.
All of run.py's flags (profile, epochs, width, normalisation, device preset, ...)
apply to every stage; --seeds is the seed count of Table II and the other stages.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import run as run_cli  # noqa: E402

from neft_jax.reproduce import STAGES  # noqa: E402


def build_parser():
    parser = run_cli.build_parser()
    parser.description = __doc__.splitlines()[0]
    parser.set_defaults(seeds=3, out="runs/reproduce")
    parser.add_argument("--models", default="vgg8", help="comma-separated (vgg8,resnet18)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--sigmas", type=run_cli._floats, default=None,
                        help="Table II σ values (default 0.2,0.4,0.6,0.8)")
    parser.add_argument("--table3-seeds", type=run_cli._positive_int, default=10)
    parser.add_argument("--table5-seeds", type=run_cli._positive_int, default=2)
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite REPORT.md, report.json, report.png from OUT")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import jax

    from neft_jax.data import DatasetUnavailableError
    from neft_jax.reproduce import TABLE2_SIGMAS, Plan, run_plan, write_report

    try:
        base, profile_line = run_cli.config_from_args(args, jax.default_backend())
        plan = Plan(models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
                    stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
                    seeds=args.seeds, table3_seeds=args.table3_seeds,
                    table5_seeds=args.table5_seeds, sigmas=args.sigmas or TABLE2_SIGMAS)
    except ValueError as error:
        parser.error(str(error))
    print(profile_line, flush=True)
    print(f"reproduce: models {list(plan.models)}, stages {list(plan.stages)}, {plan.seeds} "
          f"seeds (Table III: {plan.table3_seeds}, Table V: {plan.table5_seeds}) into "
          f"{args.out}", flush=True)
    try:
        if args.report_only:
            write_report(args.out, plan, base)
        else:
            run_plan(base, plan, args.out, show_progress=not args.no_progress)
    except (ValueError, DatasetUnavailableError) as error:
        print(f"reproduce.py: error: {error}", file=sys.stderr)
        return 2
    print(f"report: {os.path.join(args.out, 'REPORT.md')}, report.json, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
