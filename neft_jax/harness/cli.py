"""The command lines (``neft-run``, ``neft-sweep``; ``experiments/run.py``, ``sweep.py``).

Every option of the two commands comes from a field of
:class:`~neft_jax.harness.config.ExperimentConfig` (its help text is the field's
metadata, its default the field's), plus each command's own grid flags; the studies'
commands (``experiments/reproduce.py``, ``scaling.py``) are built from the same pieces.
Flags whose default depends on the profile show both profiles' values. Options a
command does not use are not offered, so argparse rejects them. A bad flag is one line,
``PROG: error: ...`` (:class:`CommandParser`); the usage block is only in ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from neft_jax.harness.config import MAIN_COMMAND_CPU_PROFILE, PROFILES, ExperimentConfig
from neft_jax.harness.flags import (  # noqa: F401  (config_from_args: part of this API)
    add_config_arguments,
    alpha_value,
    as_list,
    check_flags_apply,
    config_from_args,
    grid_values,
    method_names,
    model_names,
    name_list,
    positive_float,
    read_grid_file,
    seed_value,
    sigma_list,
)
from neft_jax.harness.identity import folder_entries, is_seed_folder
from neft_jax.harness.runtime import (  # noqa: F401  (quiet_library_logs: part of this API)
    Stopped,
    disk_full,
    quiet_library_logs,
    start_command,
    stop_signals,
)
from neft_jax.methods import REGISTRY as METHOD_REGISTRY


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: MESSAGE (see --help)``,
    and exit status 2, without the usage block (which lists every flag: ``--help`` shows
    it). Flags are taken only as spelt out (``--alpha`` is not ``--alphas``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def command_name(installed: str, script: str) -> str:
    """The name the user typed: ``script`` (``experiments/run.py``) or ``installed``
    (``neft-run``), so that an error line names the command that was run."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return typed if typed in (installed, script) else installed


def run_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=command_name("neft-run", "run.py"),
        description=f"Train {' / '.join(m.label for m in METHOD_REGISTRY.values())} and "
        "print the paper's Monte Carlo table.", epilog=profiles_epilog())
    add_config_arguments(parser)
    add_output_arguments(parser)
    return parser


def profiles_epilog() -> str:
    """The profiles (``--profile``) described, for a command's ``--help``."""
    return "profiles: " + " ".join(f"{p.name}: {p.doc}" for p in PROFILES.values())


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--no-progress and --verbose, which every command has."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true",
                        help="show the checkpoint library's (orbax/absl) log messages too")
    parser.add_argument("--retune", action="store_true",
                        help="measure this CPU's conv backward micro-batch again instead of "
                        "using the cached choice")


def worker_spec(text: str):
    from neft_jax.harness.sweeps import Worker

    try:
        return Worker.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--worker ")) from None


def add_worker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", type=worker_spec, default=None, metavar="I/N",
                        help="static split: this process takes every N-th cell, starting "
                        "with the I-th (1-based); start N processes on the same --out, e.g. "
                        "as a cluster array job (default: all cells; workers without "
                        "--worker on one --out share cells by locks)")


def show_progress(args) -> bool:
    """Progress bars unless --no-progress, and only on a terminal: in a log file the
    one-line epoch summaries are the progress."""
    return not args.no_progress and sys.stderr.isatty()


def fail(prog: str, error: Exception) -> int:
    """One line on stderr; exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def run_cleanly(prog: str, job, hint) -> int:
    """Run ``job()``; a bad setting, missing data or an unusable file is one line and status
    2, a full disk one line and status 1; SIGINT and SIGTERM stop with one line (``hint``,
    a string or a function giving one when the stop comes, says what is saved and how to
    continue) and status 130 / 143.
    Finished epochs are checkpointed and finished methods written before each returns."""
    from neft_jax.harness.data import DatasetUnavailableError

    try:
        with stop_signals():
            return job()
    except Exception as error:
        where = disk_full(error)
        if where is not None:
            print(f"{prog}: error: disk full" + (f" writing {where}" if where else "")
                  + f"; free some space ({_text(hint)})", file=sys.stderr)
            return 1
        if isinstance(error, (ValueError, DatasetUnavailableError)):
            return fail(prog, error)
        raise
    except KeyboardInterrupt as stop:
        name = "SIGTERM" if isinstance(stop, Stopped) else "SIGINT"
        where = "".join(f" {note}" for note in getattr(stop, "__notes__", ())[:1])
        print(f"{prog}: stopped by {name}{where}; {_text(hint)}", file=sys.stderr)
        return 143 if isinstance(stop, Stopped) else 130


def _text(hint) -> str:
    return hint() if callable(hint) else hint


def finished_methods(out: str) -> list[str]:
    """Methods finished in ``out``: those in its ``results.json``, or, for several seeds,
    in every ``seed-<n>/results.json`` (as ``method (seeds a, b)`` where not all have it)."""
    from neft_jax.harness.results import RunResults

    def methods(folder: str) -> list[str]:
        try:
            return list(RunResults.load(os.path.join(folder, "results.json")).methods)
        except ValueError:
            return []

    if os.path.exists(os.path.join(out, "results.json")):
        return methods(out)
    seeds = sorted(filter(is_seed_folder, folder_entries(out)), key=lambda name: int(name[5:]))
    by_method: dict[str, list[str]] = {}
    for seed in seeds:
        for method in methods(os.path.join(out, seed)):
            by_method.setdefault(method, []).append(seed[5:])
    return [method if len(found) == len(seeds) else f"{method} (seed{'s' * (len(found) > 1)} "
            f"{', '.join(found)})" for method, found in by_method.items()]


def run_hint(out: str) -> str:
    """What a stopped run has saved in ``out`` (finished methods; the stop's own note says
    which epochs of the method it stopped in) and how to continue."""
    done = finished_methods(out)
    saved = (f"finished methods saved in {out}: {', '.join(done)}" if done
             else f"no method finished yet in {out}")
    return f"{saved}; rerun the same command with --resume --out {out} to continue"


def devices_line(batch_size: int, vmapped_seeds: bool = False) -> str:
    """``devices: …``: how many local devices, and what is split over them (training only
    when they divide the batch and the seeds are not vmapped into one program)."""
    import jax

    devices, backend = jax.local_device_count(), jax.default_backend()
    if devices == 1:
        return f"devices: 1 × {backend}"
    if vmapped_seeds:
        return (f"devices: {devices} × {backend} (Monte Carlo keys split over devices; TRAINING "
                "ON ONE DEVICE: the vmapped seeds are one program; --seed-mode sequential "
                "splits each seed's batch over them)")
    if batch_size % devices:
        below = batch_size - batch_size % devices
        sizes = f"{below} or {below + devices}" if below else f"{devices}"
        return (f"devices: {devices} × {backend} (Monte Carlo keys split over devices; "
                f"TRAINING ON ONE DEVICE: batch {batch_size} is not a multiple of {devices}, "
                f"--batch-size {sizes} trains on all)")
    return (f"devices: {devices} × {backend} (data-parallel training, Monte Carlo keys split "
            "over devices)")


def run_main(argv=None) -> int:
    """``neft-run`` / ``experiments/run.py``."""
    parser = run_parser()
    args = start_command(parser, argv)
    import jax

    from neft_jax.harness.orchestration import (
        RESUME_AND_OVERWRITE,
        holds_resumable_run,
        run_experiment,
    )
    from neft_jax.harness.reporting import format_table
    from neft_jax.harness.seeds import choose_seed_mode, run_seeds
    if args.resume and args.out is None:
        parser.error("--resume needs --out: the folder of the run to continue (a run started "
                     "without --out printed it in its 'output:' line)")
    try:
        cfg, profile_line = config_from_args(args, jax.default_backend(),
                                             cpu_profile=MAIN_COMMAND_CPU_PROFILE)
        check_flags_apply(cfg)
    except ValueError as error:
        parser.error(str(error))
    print(profile_line, flush=True)
    print(devices_line(cfg.batch_size, cfg.seeds > 1 and choose_seed_mode(
        cfg.seed_mode, jax.default_backend(), jax.local_device_count(), cfg.width)[0] == "vmap"),
        flush=True)
    print(f"output: {cfg.out}", flush=True)
    if cfg.resume and cfg.overwrite:
        return fail(parser.prog, ValueError(RESUME_AND_OVERWRITE.format(out=cfg.out)))
    if cfg.resume and not holds_resumable_run(cfg.out):
        return fail(parser.prog, ValueError(f"--resume: {cfg.out!r} holds no run to resume (no "
                                         "results.json or checkpoints); check the path, or "
                                         "drop --resume to start a new run"))

    def job() -> int:
        if cfg.seeds > 1:
            results = run_seeds(cfg, log=lambda line: print(line, flush=True),
                                show_progress=show_progress(args))
        else:
            results = run_experiment(cfg, show_progress=show_progress(args))
        print(format_table(results))
        written = [name for name in ("results.csv", "settings.json", "accuracy_vs_sigma.png",
                                     "feedback_ratio.png", "metrics.jsonl")
                   if os.path.exists(os.path.join(cfg.out, name))]
        per_run = "; each seed's metrics.jsonl and curves in seed-<n>/" if cfg.seeds > 1 else ""
        print(f"results: {os.path.join(cfg.out, 'results.json')}, {', '.join(written)}"
              f"{per_run}  (wall time {results.wall_seconds:.0f} s)")
        return 0

    return run_cleanly(parser.prog, job, lambda: run_hint(cfg.out))


#: Grid keys of ``neft-sweep --config FILE`` (TOML or JSON), the same as its flags.
GRID_KEYS = ("models", "datasets", "methods", "sigmas", "alphas", "seeds")
#: Config fields a sweep sets per cell or does not use (its grid flags replace them).
SWEEP_EXCLUDES = ("alpha", "alpha_search", "extra_sigmas", "resume", "overwrite",
                  "seed_mode")


def alpha_list(text: str) -> tuple:
    """Comma-separated α values; ``default`` is the authors' α (None)."""
    return tuple(None if item == "default" else positive_float(item) for item in name_list(text))


def sweep_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=command_name("neft-sweep", "sweep.py"),
        description="A resumable grid of experiments: model × dataset × "
        "method × σ × α × seeds; re-running the same command skips every finished cell.")
    add_config_arguments(parser, exclude=SWEEP_EXCLUDES, helps={
        "out": "output folder (required): finished cells are found there, so the same "
               "command continues a sweep"})
    parser.add_argument("--config", default=None,
                        help="TOML or JSON file with grid keys " + ", ".join(GRID_KEYS))
    parser.add_argument("--models", type=name_list, default=None, help="comma-separated (default: "
                        "--model)")
    parser.add_argument("--datasets", type=name_list, default=None, help="comma-separated "
                        "(default: --dataset)")
    parser.add_argument("--sigmas", type=sigma_list, default=None,
                        help="training = evaluation σ values (default: --sigma)")
    add_worker_argument(parser)
    parser.add_argument("--alphas", type=alpha_list, default=(None,),
                        help="α values for IRS/OVF; 'default' = the authors' α (default: "
                        "default)")
    add_output_arguments(parser)
    return parser


#: What a sweep writes at the top of its --out (each cell's run lies under cells/).
SWEEP_OUTPUTS = frozenset({"cells", "sweep.json", "sweep.csv", "accuracy_vs_sigma.png",
                           "alpha_search.png"})


def sweep_main(argv=None) -> int:
    """``neft-sweep`` / ``experiments/sweep.py``."""
    parser = sweep_parser()
    args = start_command(parser, argv)
    import jax

    from neft_jax.harness.sweeps import check_cell_groups, grid_cells, run_sweep, train_clean_once

    base_defaults = ExperimentConfig()
    def given(value, default):  # an empty list is refused by its flag's type, never a default
        return default if value is None else value

    grid = {"models": given(args.models, (args.model or base_defaults.model,)),
            "datasets": given(args.datasets, (args.dataset or base_defaults.dataset,)),
            "methods": given(args.methods, base_defaults.methods),
            "sigmas": given(args.sigmas, (given(args.sigma, base_defaults.sigma),)),
            "alphas": args.alphas, "seeds": given(args.seeds, 1)}
    listed = {key for key in GRID_KEYS if getattr(args, key, None) is not None}
    if args.config:
        try:
            extra = read_grid_file(args.config)
        except (OSError, ValueError) as error:
            parser.error(f"--config: cannot read {args.config!r}: {error}")
        if not isinstance(extra, dict):
            parser.error(f"--config: {args.config!r} must hold a table of grid keys "
                         f"({', '.join(GRID_KEYS)}), not a {type(extra).__name__}")
        unknown = set(extra) - set(GRID_KEYS)
        if unknown:
            parser.error(f"--config: unknown keys {sorted(unknown)}; allowed: {list(GRID_KEYS)}")
        grid.update(extra)
        listed |= set(extra)
    if args.out is None:
        parser.error("--out is required for a sweep (it is where finished cells are found)")
    foreign = sorted(name for name in folder_entries(args.out) if name not in SWEEP_OUTPUTS
                     and not name.startswith(".") and ".tmp-" not in name)
    if foreign:
        parser.error(f"--out {args.out!r} holds what a sweep does not write "
                     f"({', '.join(foreign[:3])}{', …' * (len(foreign) > 3)}): a sweep keeps "
                     "cells/ and sweep.* in a folder of its own; choose a new or empty --out")
    for one in ("sigma", "model", "dataset"):
        if getattr(args, one, None) is not None and f"{one}s" in listed:
            parser.error(f"--{one} and the grid's {one}s (--{one}s or --config) exclude each "
                         f"other in a sweep: the grid lists the {one}s")
    first = args.seed or 0
    seeds = grid["seeds"]
    if args.seed is not None and isinstance(seeds, (list, tuple)):
        parser.error(f"--seed and a list of seeds ({seeds!r}) exclude each other: --seed is "
                     "the first of a count of seeds; list the seeds themselves instead")
    if isinstance(seeds, bool) or not (isinstance(seeds, int) and seeds >= 1 or isinstance(
            seeds, (list, tuple)) and seeds):
        parser.error(f"seeds must be a count (an integer >= 1) or a non-empty list of seeds, "
                     f"got {seeds!r}")
    try:
        seed_values = list(range(first, first + seeds)) if isinstance(seeds, int) else \
            grid_values("seeds", seeds, seed_value, "a seed (an integer >= 0)")
        alphas = grid_values("alphas", grid["alphas"], alpha_value, "an α (a number >= 0 "
                              "or 'default')")
        models = model_names(as_list(grid["models"]))
        base, profile_line = config_from_args(args, jax.default_backend(), models=models)
        cells = grid_cells(models, grid_values("datasets", grid["datasets"], str, "a name"),
                           list(dict.fromkeys(method_names(as_list(grid["methods"])))),
                           grid_values("sigmas", grid["sigmas"], float, "a number"),
                           alphas, seed_values)
        for cell in cells:  # validate every cell before the first one runs
            dataclasses.replace(base, model=cell.model, dataset=cell.dataset,
                                methods=(cell.method,), sigma=cell.sigma, alpha=cell.alpha,
                                seed=cell.seed, seeds=1)
        methods = tuple(dict.fromkeys(cell.method for cell in cells))
        given_alpha = next((a for a in alphas if a is not None), None)  # sweeps have no --alpha
        check_flags_apply(dataclasses.replace(base, methods=methods, alpha=given_alpha),
                          alpha_flag="--alphas")
    except ValueError as error:
        parser.error(str(error))
    print(profile_line, flush=True)
    print(devices_line(base.batch_size), flush=True)
    noisy, clean, clean_sigmas = train_clean_once(cells)
    parts = [(part, settings) for part, settings in (
        (clean, dataclasses.replace(base, extra_sigmas=tuple(clean_sigmas))), (noisy, base))
        if part]
    cells = clean + noisy
    shared = (f" ({', '.join(dict.fromkeys(c.method for c in clean))} trained clean once per "
              f"seed, scored at every σ)" if clean and len(clean_sigmas) > 1 else "")
    print(f"sweep: {len(cells)} cell{'s' * (len(cells) != 1)} into {args.out}{shared}",
          flush=True)

    def job() -> int:
        from neft_jax.harness.sweep_table import format_sweep_table

        check_cell_groups([(part, settings, args.out) for part, settings in parts])
        for part, settings in parts:  # the clean cells, then those trained at noise
            table = run_sweep(part, settings, args.out, show_progress=show_progress(args),
                              worker=args.worker, tabled=cells,
                              numbered_from=len(clean) if part is noisy else 0)
        if table:
            print(format_sweep_table(table))
        plots = [p for p in ("accuracy_vs_sigma.png", "alpha_search.png")
                 if os.path.exists(os.path.join(args.out, p))]
        print(f"{len(table)} row{'s' * (len(table) != 1)}: "
              f"{os.path.join(args.out, 'sweep.csv')}, sweep.json (with the settings the "
              f"cells share){''.join(', ' + p for p in plots)}; each cell's own run in cells/")
        return 0

    return run_cleanly(parser.prog, job, "finished cells are kept; rerun the same command to "
                       "continue (a half-done cell resumes from its checkpoints)")
