"""One experiment end to end: output folder, data, each method trained and tested, files.

:func:`run_experiment` trains every method of an :class:`ExperimentConfig` (or runs
its α search), evaluates the best state of each at every σ, and rewrites
``results.json`` and the other files after each method, so a killed run keeps its
finished methods and ``--resume`` continues the rest from their checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable

import jax

from neft_jax import train as train_lib
from neft_jax.evaluate import make_test_set, monte_carlo
from neft_jax.harness import data as data_lib
from neft_jax.harness.bookkeeping import TrainOutcome
from neft_jax.harness.checkpoints import check_checkpoint_folder
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.evaluation import ALPHA_SEARCH_KEY, train_and_test_record
from neft_jax.harness.identity import (
    check_out_folder,
    check_run_folder,
    check_seed_count,
    file_above,
    fingerprint,
    folder_entries,
    identity,
    is_seed_folder,
    trained_with,
    write_settings_file,
)
from neft_jax.harness.locking import LOCK_NAME, FolderLock
from neft_jax.harness.loop import train_runs
from neft_jax.harness.paper import ALPHA_GRID
from neft_jax.harness.reporting import write_results
from neft_jax.harness.results import RunResults
from neft_jax.harness.runtime import environment
from neft_jax.harness.tuning import with_tuned_micro_batch

#: The refusal of ``--resume`` together with ``--overwrite``.
RESUME_AND_OVERWRITE = ("--resume and --overwrite exclude each other: --resume continues the "
                        "run in {out!r}, --overwrite deletes it; pass one of them")
#: What to do when ``--resume`` finds a run made with other settings.
RESUME_REMEDY = "use a new --out, or --overwrite to replace that run"


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print,
                   show_progress: bool = True) -> RunResults:
    """Train and evaluate every method of ``cfg``; write results; return them.

    On a CPU, a ``cfg`` without a backward micro-batch gets the one measured (once,
    cached) for its model and width (:mod:`neft_jax.harness.tuning`)."""
    check_resume(cfg)  # read-only; prepare_out_dir checks again under the folder's lock
    dataset = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
    check_batch_size(cfg, dataset)  # before the tuner, which times convs of that batch
    cfg = with_tuned_micro_batch(with_recorded_micro_batch(cfg, log), log)
    with jax.default_matmul_precision(cfg.matmul_precision), contextlib.ExitStack() as locks:
        return _run_experiment(cfg, log, show_progress, locks, dataset)


def with_recorded_micro_batch(cfg: ExperimentConfig,
                              log: Callable[[str], None] = print) -> ExperimentConfig:
    """A resumed run keeps the conv backward micro-batch it trained with (its settings.json),
    and says so when it goes on with another number of devices; the micro-batch is kept
    whatever the tuner's cache says now: another size changes the float rounding, which
    training amplifies, so a resume would match no uninterrupted run. A size given with
    ``--backward-micro-batch`` is used, with a line saying so where it differs."""
    recorded = trained_with(cfg.out) if cfg.resume else {}
    devices = recorded.get("local_devices")
    if devices is not None and devices != jax.local_device_count():
        log(f"warning: this run trained on {devices} device{'s' * (devices != 1)} so far and "
            f"goes on with {jax.local_device_count()}: the epochs from here on split each "
            "batch otherwise, so the numbers will not be bit-identical to an uninterrupted "
            "run (equal up to float rounding)")
    micro = recorded.get("backward_micro_batch")
    if micro is None:
        return cfg
    if cfg.backward_micro_batch is None:
        return dataclasses.replace(cfg, backward_micro_batch=micro)
    if (cfg.effective_backward_micro_batch or 0) != micro:
        log(f"warning: --backward-micro-batch {cfg.backward_micro_batch} is not the "
            f"{micro or 'whole batch'} this run trained with so far: the epochs trained "
            "from here on round differently, so the numbers will not be bit-identical to an "
            "uninterrupted run (leave the flag out to keep the run's size)")
    return cfg


def check_resume(cfg: ExperimentConfig) -> None:
    """Before anything costly: refuse ``--resume`` with ``--overwrite``, and a resume whose
    stored settings differ from ``cfg``'s (:func:`~neft_jax.harness.identity.check_run_folder`)."""
    if cfg.resume and cfg.overwrite:
        raise ValueError(RESUME_AND_OVERWRITE.format(out=cfg.out))
    if cfg.resume and os.path.isdir(cfg.out):
        _check_resumed_run(cfg)


def _check_resumed_run(cfg: ExperimentConfig) -> None:
    """The run in ``cfg.out`` was made with ``cfg``'s settings and seed count."""
    what = f"--resume: the run in {cfg.out!r}"
    check_run_folder(cfg, what, RESUME_REMEDY)
    check_seed_count(cfg, what)


def training_set_size(cfg: ExperimentConfig, dataset: data_lib.Dataset) -> int:
    """Images ``cfg`` trains on: the training set less its validation split."""
    return len(data_lib.validation_indices(dataset.train_labels, cfg.val_fraction,
                                           cfg.seed)[0])


def check_batch_size(cfg: ExperimentConfig, dataset: data_lib.Dataset) -> None:
    """A ValueError when a batch of ``cfg`` is larger than its training set."""
    num_train = training_set_size(cfg, dataset)
    if cfg.batch_size > num_train:
        raise ValueError(
            f"batch_size {cfg.batch_size} is larger than the training set: {num_train} images "
            f"of {cfg.dataset} are left after holding out {100 * cfg.val_fraction:g} % for "
            "validation; "
            f"use --batch-size {num_train} or less")


def _run_experiment(cfg: ExperimentConfig, log: Callable[[str], None], show_progress: bool,
                    locks: contextlib.ExitStack, dataset: data_lib.Dataset) -> RunResults:
    previous = prepare_out_dir(cfg, locks)
    started = time.perf_counter()
    num_train, num_val = (len(i) for i in data_lib.validation_indices(
        dataset.train_labels, cfg.val_fraction, cfg.seed))
    chosen_on = (f"{num_val} validation (from train)" if num_val else
                 "the kept epoch chosen on the test set (--val-fraction 0, the authors' "
                 "protocol: optimistic)")
    log(f"data: {cfg.dataset}: {num_train} train, {chosen_on}, "
        f"{len(dataset.test_labels)} test; model {cfg.model} width ×{cfg.width:g}; "
        f"{cfg.device_preset} σ={cfg.sigma:g} ({cfg.normalisation} noise, max|W| of each "
        f"{'kernel' if cfg.scale == 'layer' else 'model'}), evaluated at σ ∈ "
        f"{list(cfg.eval_sigmas)}")
    test_set = make_test_set(dataset.test_images, dataset.test_labels, cfg.eval_batch_size)
    results = start_results(cfg, previous, num_train, num_val, len(dataset.test_labels))
    wrote = False
    launched: dict[str, list[float]] = {}  # this launch's methods' wall seconds: the ETA
    for i, method in enumerate(cfg.methods):
        if method in results.methods and results.methods[method].done(cfg.eval_sigmas):
            log(f"{method}: already done in {cfg.out}, skipped")
            continue
        log(f"{method}: training")
        method_started = time.perf_counter()
        search = None
        if cfg.alpha_search and train_lib.uses_feedback(method):
            outcome, alpha, search = search_alpha(cfg, dataset, method, log, show_progress)
        else:
            alpha = cfg.alpha_for(method)
            outcome, = train_runs([cfg], dataset, method, alpha, log=log,
                                  show_progress=show_progress)
        record = train_and_test_record(cfg, method, outcome, alpha, test_set, log,
                                       show_progress)
        record.alpha_search = search
        results.methods[method] = record
        results.wall_seconds = max(time.perf_counter() - started + (  # at least the training
            previous.wall_seconds if previous else 0.0),  # of earlier launches' epochs
            sum(m.train_seconds or 0.0 for m in results.methods.values()))
        write_results(cfg.out, results)  # after each method: a stop loses none of it
        for tried in {alpha, *(float(a) for a in search or ())}:  # every α the search trained
            prune_checkpoints(cfg.checkpoint_dir(method, tried), cfg.keep_checkpoints)
        wrote = True
        launched[method] = [time.perf_counter() - method_started]
        log(progress_line(method, launched, cfg.methods[i + 1:]))
    if not wrote:  # every method was done before: its files are written again, as resumed
        write_results(cfg.out, results)
    return results


def progress_line(method: str, launched: dict[str, list[float]], left) -> str:
    """``noise: done in 41 s; 2 methods left, about 3 min (…)``: a whole run's ETA in the log,
    from this launch's methods' times weighted by each method's relative cost."""
    from neft_jax.harness.budget import duration, estimate_total

    line = f"{method}: done in {launched[method][-1]:.0f} s"
    if not left:
        return line
    seconds = estimate_total(launched, left)
    return (f"{line}; {len(left)} method{'s' * (len(left) > 1)} left ({', '.join(left)}), "
            f"about {duration(seconds)} by this run's times so far")


def start_results(cfg: ExperimentConfig, previous: RunResults | None, num_train: int,
                  num_validation: int, num_test: int) -> RunResults:
    """The results of one run: previous methods kept, settings and environment renewed."""
    settings = {**cfg.to_dict(), "fingerprint": fingerprint(identity(cfg)),
                "eval_sigmas": list(cfg.eval_sigmas),
                "num_train": num_train, "num_validation": num_validation,
                "num_test": num_test, "accuracy_unit": "percent", "ekl_unit": "nats"}
    methods = previous.methods if previous else {}
    return RunResults(settings=settings, environment=environment(), methods=methods,
                      wall_seconds=previous.wall_seconds if previous else 0.0)


def prepare_out_dir(cfg: ExperimentConfig,
                    locks: contextlib.ExitStack | None = None) -> RunResults | None:
    """Create ``cfg.out`` and take its lock (held by ``locks``; :class:`FolderBusy` when
    another process holds it); refuse a non-empty one without resume/overwrite.

    On ``--resume``, every stored identity of the run (``settings.json``, ``results.json``,
    each method's newest checkpoint) must match ``cfg``'s (:class:`SettingsChanged`
    names the settings that differ). With the lock held, ``settings.json`` is (re)written.
    Returns the previous results when resuming (None otherwise).
    """
    out = cfg.out
    if cfg.resume and cfg.overwrite:
        raise ValueError(RESUME_AND_OVERWRITE.format(out=out))
    check_out_folder(out)
    try:  # the lock first: what another process may be writing is never judged unlocked
        lock = FolderLock(out)
    except OSError as error:
        raise ValueError(f"out {out!r} cannot be written: {_why_not(out, error)}") from error
    try:
        names = set(os.listdir(out)) - {LOCK_NAME}
        existing = bool(names)
        if {"cells", "sweep.json"} & names:  # --overwrite would delete the sweep's plot
            raise ValueError(f"out {out!r} holds a sweep (cells/, sweep.json), not a run: give "
                             "the run a folder of its own")
        if existing and not (cfg.resume or cfg.overwrite):
            if not any(map(is_run_output, names)):
                raise ValueError(f"out {out!r} is not empty and holds no run (it has "
                                 f"{', '.join(sorted(names)[:3])}{', …' * (len(names) > 3)}): "
                                 "choose a new or empty --out")
            raise ValueError(f"out {out!r} is not empty: pass --resume to continue that run "
                             "or --overwrite to replace it")
        check_writable(out)
        check_checkpoint_folder(out)
        previous = _clear_or_load_previous(cfg, existing)
        if locks is not None:
            write_settings_file(out, cfg)
    except BaseException:
        lock.release()
        raise
    if locks is None:  # a check only: nobody keeps the lock
        lock.release()
    else:
        locks.callback(lock.release)
    return previous


def _why_not(out: str, error: OSError) -> str:
    """Why ``out`` cannot be made: the file in its path that is not a folder, else the OS's
    reason."""
    blocking = file_above(out)
    if blocking is not None:
        return f"{blocking!r} is a file, not a folder"
    return error.strerror or str(error)


def prune_checkpoints(directory: str, keep: str) -> None:
    """After a method's results are written: keep ``all`` its saves, the ``newest`` save of
    each kind (latest, best: what a later --resume restores), or ``none``."""
    if keep == "none":
        shutil.rmtree(directory, ignore_errors=True)
    elif keep == "newest":
        for kind in ("latest", "best"):
            steps = sorted(int(name) for name in folder_entries(os.path.join(directory, kind))
                           if name.isdigit())
            for step in steps[:-1]:
                shutil.rmtree(os.path.join(directory, kind, str(step)), ignore_errors=True)


def check_writable(out: str) -> None:
    """A file can be written in ``out``, else ValueError naming why."""
    probe = os.path.join(out, f".write-test-{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"out {out!r} cannot be written: {error.strerror}") from error


#: The names a run writes in its folder (besides its ``seed-N`` folders and the
#: ``….tmp-PID`` files of an interrupted write): all that ``--overwrite`` deletes.
RESUMABLE_OUTPUTS = frozenset({"results.json", "settings.json", "checkpoints"})
RUN_OUTPUTS = RESUMABLE_OUTPUTS | {"results.csv", "metrics.jsonl", "accuracy_vs_sigma.png",
                                   "feedback_ratio.png"}


def is_run_output(name: str) -> bool:
    """Whether ``name`` in an output folder is something a run writes."""
    return name in RUN_OUTPUTS or is_seed_folder(name) or ".tmp-" in name


def holds_resumable_run(out: str) -> bool:
    """Whether ``out`` holds anything ``--resume`` can continue: results, checkpoints, seed
    folders, or the settings file a run writes first."""
    return os.path.isdir(out) and any(
        name in RESUMABLE_OUTPUTS or is_seed_folder(name) for name in os.listdir(out))


def clear_run_outputs(out: str) -> None:
    """Delete what a run wrote in ``out`` and nothing else; refuse (ValueError) a folder
    that holds no run, so ``--overwrite`` never empties a folder of other files."""
    names = set(os.listdir(out)) - {LOCK_NAME}
    ours = sorted(name for name in names if is_run_output(name))
    if not any(is_run_output(name) and ".tmp-" not in name for name in names):
        shown = ", ".join(sorted(names)[:5]) + (", …" if len(names) > 5 else "")
        raise ValueError(f"out {out!r} holds no run (it has {shown}): --overwrite replaces "
                         "only a run's folder; choose a new or empty --out")
    for name in ours:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _clear_or_load_previous(cfg: ExperimentConfig, existing: bool) -> RunResults | None:
    """With --overwrite, delete the previous run's files (:func:`clear_run_outputs`); with
    --resume, the previous results."""
    out = cfg.out
    if cfg.overwrite and existing:
        clear_run_outputs(out)
        return None
    if cfg.resume and existing:
        _check_resumed_run(cfg)
    previous_path = os.path.join(out, "results.json")
    if cfg.resume and os.path.exists(previous_path):
        return RunResults.load(previous_path)
    return None


def search_alpha(cfg: ExperimentConfig, dataset: data_lib.Dataset, method: str,
                 log: Callable[[str], None], show_progress: bool
                 ) -> tuple[TrainOutcome, float, dict[str, float | None]]:
    """Five-step α search: train with each α, score by Monte Carlo accuracy on validation.

    Returns the best α's outcome, the α, and the score (%) of every α (None: diverged).
    """
    _, val_idx = data_lib.validation_indices(dataset.train_labels, cfg.val_fraction, cfg.seed)
    val_set = data_lib.selection_set(dataset, val_idx, cfg.eval_batch_size)  # never the test
    # set: the config refuses alpha_search without a held-out split
    runs = min(cfg.mc_runs, 50)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), ALPHA_SEARCH_KEY), runs)
    best = None
    search: dict[str, float | None] = {}
    for alpha in ALPHA_GRID:
        log(f"  {method}: α = {alpha:g}")
        outcome, = train_runs([cfg], dataset, method, alpha, log=log,
                              show_progress=show_progress)
        if outcome.diverged and outcome.best_epoch is None:
            search[f"{alpha:g}"] = None
            continue
        variables = {"params": outcome.state.params, "batch_stats": outcome.state.batch_stats}
        score = 100 * float(monte_carlo(outcome.model, variables, val_set, keys, cfg.device(),
                                        chunk_size=cfg.chunk_size).accuracies.mean())
        search[f"{alpha:g}"] = score
        log(f"  {method}: α = {alpha:g}: validation Monte Carlo accuracy {score:.2f}%")
        if best is None or score > best[0]:
            best = (score, alpha, outcome)
    if best is None:
        raise RuntimeError(f"{method}: every α of the search diverged")
    log(f"  {method}: chose α = {best[1]:g}")
    return best[2], best[1], search
