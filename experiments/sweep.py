"""A resumable grid of experiments: model × dataset × method × σ × α × seeds.

    python experiments/sweep.py --models vgg8 --methods noise,irs --sigmas 0.2,0.4 \\
        --alphas 1,0.1,0.01 --seeds 3 --out runs/sweep1
    python experiments/sweep.py --config sweep.toml --out runs/sweep1   # same keys as flags

Re-running the same command after a crash skips every finished cell. All of
run.py's flags (profile, epochs, width, device preset, ...) apply to every cell.
The combined table goes to OUT/sweep.csv and OUT/sweep.json, plots to OUT/*.png.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import run as run_cli  # noqa: E402

GRID_KEYS = ("models", "datasets", "methods", "sigmas", "alphas", "seeds")


def _alphas(text: str) -> tuple:
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if item == "default":
            values.append(None)
        elif item:
            values.append(run_cli._positive_float(item))
    return tuple(values)


def build_parser():
    parser = run_cli.build_parser()
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--config", default=None,
                        help="TOML or JSON file with grid keys " + ", ".join(GRID_KEYS))
    parser.add_argument("--models", default=None, help="comma-separated (default --model)")
    parser.add_argument("--datasets", default=None, help="comma-separated (default --dataset)")
    parser.add_argument("--sigmas", type=run_cli._floats, default=None,
                        help="training = evaluation σ values (default --sigma)")
    parser.add_argument("--alphas", type=_alphas, default=(None,),
                        help="α values for IRS/OVF; 'default' = the authors' α")
    return parser


def load_grid_file(path: str) -> dict:
    if path.endswith(".toml"):
        import tomllib

        with open(path, "rb") as f:
            return tomllib.load(f)
    import json

    with open(path) as f:
        return json.load(f)


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import jax

    from neft_jax.data import DatasetUnavailableError
    from neft_jax.sweep import grid_cells, run_sweep

    grid = {
        "models": args.models or args.model, "datasets": args.datasets or args.dataset,
        "methods": args.methods, "sigmas": args.sigmas or (args.sigma,),
        "alphas": args.alphas, "seeds": args.seeds,
    }
    if args.config:
        try:
            extra = load_grid_file(args.config)
        except (OSError, ValueError) as error:
            parser.error(f"--config: cannot read {args.config!r}: {error}")
        unknown = set(extra) - set(GRID_KEYS)
        if unknown:
            parser.error(f"--config: unknown keys {sorted(unknown)}; allowed: {list(GRID_KEYS)}")
        grid.update(extra)
    if args.out is None:
        parser.error("--out is required for a sweep (it is where finished cells are found)")
    seeds = grid["seeds"]
    seed_list = list(range(args.seed, args.seed + seeds)) if isinstance(seeds, int) else [
        int(s) for s in _as_list(seeds)]
    alphas = [None if a in (None, "default") else float(a) for a in _as_list(grid["alphas"])]
    try:
        base, profile_line = run_cli.config_from_args(args, jax.default_backend())
        cells = grid_cells(_as_list(grid["models"]), _as_list(grid["datasets"]),
                           _as_list(grid["methods"]), [float(s) for s in _as_list(grid["sigmas"])],
                           alphas, seed_list)
        for cell in cells:  # validate every cell before the first one runs
            base.__class__(**{**base.to_dict(), "model": cell.model, "dataset": cell.dataset,
                              "methods": (cell.method,), "sigma": cell.sigma,
                              "alpha": cell.alpha, "seed": cell.seed})
    except ValueError as error:
        parser.error(str(error))
    print(profile_line, flush=True)
    print(f"sweep: {len(cells)} cells into {args.out}", flush=True)
    try:
        table = run_sweep(cells, base, args.out, show_progress=not args.no_progress)
    except (ValueError, DatasetUnavailableError) as error:
        print(f"sweep.py: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(table)} rows: {os.path.join(args.out, 'sweep.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
