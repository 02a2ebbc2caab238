"""The settings identity of a result: which settings made it, checked before any reuse.

Every result-bearing unit stores the settings that change its numbers
(:data:`~neft_jax.harness.config.IDENTITY_KEYS`)
and a short fingerprint of them: a run's ``results.json`` (``settings``), each method's
checkpoints (their metadata), and ``settings.json`` in every run folder (so in every
sweep, reproduction and scaling cell), which a person browsing the folder can read and
which exists from the start of a run, before any checkpoint. A unit is reused (resumed,
or skipped as done) only when its stored settings equal the command's; otherwise
:class:`SettingsChanged` names the settings that differ, old → new, in one line.

Results made before the identity existed have no ``settings.json``; their
``results.json`` settings hold every setting, so their identity is read from there (a key
it lacks had its default then).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

from neft_jax.harness.config import IDENTITY_KEYS, ExperimentConfig, jsonable

#: The identity keys a plan or study gives all its cells alike (the others, the model,
#: method, σ, α, seed, exits and α search, vary from cell to cell).
SHARED_KEYS = ("dataset", "width", "epochs", "batch_size", "lr", "lr_schedule", "exit_sigma",
               "normalisation", "scale", "device_preset", "mc_runs", "compute", "val_fraction",
               "val_mc_runs", "val_every", "max_train_steps")
#: The file in each run folder that holds its identity.
SETTINGS_FILE = "settings.json"

_DEFAULTS = {f.name: jsonable(f.default) for f in dataclasses.fields(ExperimentConfig)}


class SettingsChanged(ValueError):
    """A stored result was made with other settings than the command's."""


def identity(cfg: ExperimentConfig) -> dict:
    """The settings of ``cfg`` that change its numbers (:data:`IDENTITY_KEYS`; JSON types,
    ``lr`` resolved)."""
    return cfg.resume_settings()


def identity_of_settings(settings: dict, fill_defaults: bool = True) -> dict:
    """The identity stored in a results file's or checkpoint's ``settings``: a key it lacks
    predates that setting and had its default (``fill_defaults``), or is left out."""
    if fill_defaults:
        return {key: settings.get(key, _DEFAULTS[key]) for key in IDENTITY_KEYS}
    return {key: settings[key] for key in IDENTITY_KEYS if key in settings}


def _canonical(value):
    """Numbers as floats (0 and 0.0 are one setting), tuples as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def fingerprint(settings: dict) -> str:
    """A short hash of ``settings`` (an :func:`identity`): 10 hex digits."""
    text = json.dumps({k: _canonical(v) for k, v in sorted(settings.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def without_seed(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "seed"}


def differences(stored: dict, current: dict) -> list[str]:
    """``key=old → key=new`` for every key of ``stored`` whose value ``current`` changes."""
    return [f"{key}={stored[key]!r} → {key}={current[key]!r}"
            for key in IDENTITY_KEYS if key in stored and key in current
            and _canonical(stored[key]) != _canonical(current[key])]


def write_settings_file(folder: str, cfg: ExperimentConfig) -> None:
    """``folder/settings.json``: the identity of ``cfg`` and its fingerprint, and what the
    run computes with that is no setting of the experiment but changes its float rounding:
    the conv backward micro-batch (``trained_with``; a resume reuses it,
    :func:`trained_with`)."""
    import jax

    from neft_jax.harness.results import write_atomic

    settings = identity(cfg)
    write_atomic(os.path.join(folder, SETTINGS_FILE), json.dumps(
        {"fingerprint": fingerprint(settings), "settings": settings,
         "trained_with": {"backward_micro_batch": cfg.effective_backward_micro_batch or 0,
                          "local_devices": jax.local_device_count()}},
        indent=1))


def trained_with(folder: str) -> dict[str, int]:
    """What the run in ``folder`` trained with, from its ``settings.json``'s ``trained_with``:
    ``backward_micro_batch`` (0: whole batch) and ``local_devices``, each where recorded as
    an integer >= 0 (none before 2026-12-07)."""
    try:
        with open(os.path.join(folder, SETTINGS_FILE)) as f:
            recorded = json.load(f)["trained_with"]
        return {k: v for k, v in recorded.items()
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def stored_identity(folder: str) -> tuple[dict, str] | None:
    """``(identity, where)`` of the run in ``folder``: from its ``settings.json``, else from
    its ``results.json`` settings; None when neither is there. An unreadable file is a
    ValueError naming it."""
    from neft_jax.harness.results import RunResults

    path = os.path.join(folder, SETTINGS_FILE)
    if os.path.exists(path):
        try:
            with open(path) as f:
                return identity_of_settings(json.load(f)["settings"], False), path
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a readable settings file ({error}); delete it or "
                             "use another --out") from error
    path = os.path.join(folder, "results.json")
    if os.path.exists(path):
        return identity_of_settings(RunResults.load(path).settings), path
    return None


def checkpoint_settings(directory: str) -> tuple[dict, str] | None:
    """``(identity, where)`` stored in the newest intact save of a method's checkpoints
    (:func:`~neft_jax.harness.checkpoints.newest_metadata`); None when none holds settings."""
    from neft_jax.harness.checkpoints import newest_metadata

    found = newest_metadata(directory)
    if found is None or not isinstance(found[0].get("settings"), dict):
        return None
    return identity_of_settings(found[0]["settings"], False), found[1]


def file_above(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is a file (so ``path`` can never be
    made), else None."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent != os.path.dirname(parent) and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if os.path.exists(parent) and not os.path.isdir(parent) else None


def check_out_folder(out: str) -> None:
    """Refuse (ValueError, one line) an output folder that is a file or lies below one,
    before any command reads data or makes a folder."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out must be a directory, but {out!r} is a file")
    blocking = file_above(out)
    if blocking is not None:
        raise ValueError(f"out {out!r} cannot be written: {blocking!r} is a file, not a folder")


def is_seed_folder(name: str) -> bool:
    """Whether ``name`` is a seed's folder, ``seed-<n>``, as ``--seeds`` writes them."""
    return name.startswith("seed-") and name[5:].isdigit()


def folder_entries(folder: str) -> list[str]:
    """The names in ``folder``; none when it does not exist or cannot be read."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def started_methods(folder: str) -> set[str]:
    """Methods the run in ``folder`` (or its ``seed-<n>/`` folders) has begun: those with a
    result in a ``results.json`` or a folder under ``checkpoints/``."""
    from neft_jax.harness.results import RunResults

    started: set[str] = set()
    for run in [folder, *(os.path.join(folder, n) for n in folder_entries(folder)
                          if is_seed_folder(n))]:
        path = os.path.join(run, "results.json")
        if os.path.exists(path):
            started |= set(RunResults.load(path).methods)
        started |= {n.split("-alpha")[0] for n in folder_entries(os.path.join(run, "checkpoints"))}
    return started


def check_same(stored: dict, cfg: ExperimentConfig, what: str, remedy: str,
               methods_may_grow: bool = False, started: set[str] | None = None) -> None:
    """Raise :class:`SettingsChanged` (one line: ``what``, the differing settings old → new,
    ``remedy``) when ``stored`` differs from ``cfg``'s identity. ``methods_may_grow``: a
    resumed run may add methods to those it was made with (each method trains and is scored
    on its own keys, so the finished ones stay valid), and drop any not ``started`` (a
    launch that added a method and stopped before it began), but not a started one."""
    current = identity(cfg)
    listed = stored.get("methods", ())
    if methods_may_grow and started is not None:
        listed = [m for m in listed if m in started or m in current["methods"]]
    if methods_may_grow and set(listed) <= set(current["methods"]):
        stored = {**stored, "methods": current["methods"]}
    changed = differences(stored, current)
    if changed:
        raise SettingsChanged(f"{what} was made with other settings (made with → this "
                              f"command): {', '.join(changed)}; {remedy}")


def check_run_folder(cfg: ExperimentConfig, what: str, remedy: str) -> None:
    """Compare every stored identity of the run in ``cfg.out`` with ``cfg``: its
    ``settings.json``, its ``results.json`` and the newest intact save of each method's
    checkpoints (a run killed inside its first method has only those)."""
    found = stored_identity(cfg.out)
    started = started_methods(cfg.out)
    if found is not None:
        check_same(found[0], cfg, what, remedy, methods_may_grow=True, started=started)
    for name in sorted(folder_entries(os.path.join(cfg.out, "checkpoints"))):
        found = checkpoint_settings(os.path.join(cfg.out, "checkpoints", name))
        if found is not None:
            check_same(found[0], cfg, f"{what} (its checkpoints of {name})", remedy,
                       methods_may_grow=True, started=started)


def check_seed_count(cfg: ExperimentConfig, what: str) -> None:
    """Refuse (:class:`SettingsChanged`) to resume a run as something it was not: one run
    with ``--seeds N``, a run of N seeds as one run, or with fewer seeds than it has (its
    average would silently lose some); more seeds are added to it."""
    from neft_jax.harness.results import RunResults

    folders = sorted(int(n[5:]) for n in folder_entries(cfg.out) if is_seed_folder(n))
    path = os.path.join(cfg.out, "results.json")
    stored = RunResults.load(path).settings.get("seeds") if os.path.exists(path) else None
    listed = stored if isinstance(stored, list) else folders or None  # a killed run: folders
    one_run = listed is None and (stored is not None or "checkpoints" in folder_entries(cfg.out))
    if one_run and cfg.seeds > 1:
        raise SettingsChanged(f"{what} is one run, not a run of seeds: --seeds {cfg.seeds} "
                              "needs a new --out (or leave --seeds out to resume it)")
    if listed is not None and (cfg.seeds == 1 or cfg.seeds < len(listed)):
        # a count from results.json is exact; seed folders of a killed run may be fewer
        hint = (f"--seeds {len(listed)}" if isinstance(stored, list) else
                "the --seeds it was started with")
        raise SettingsChanged(
            f"{what} holds a run of seeds (seed-{', seed-'.join(map(str, listed))}); this "
            f"command has --seeds {cfg.seeds}: give {hint} (or more, to add seeds) to "
            "resume it")


def shared_differences(settings: dict, base: ExperimentConfig) -> list[str]:
    """The :data:`SHARED_KEYS` a cell's stored ``settings`` hold with other values than
    ``base`` gives its cells (``lr`` resolved for the cell's model); keys it does not
    hold are not compared."""
    model = settings.get("model", base.model)
    expected = identity(dataclasses.replace(base, model=model) if model != base.model
                        else base)
    stored = identity_of_settings(settings, False)
    return differences({k: v for k, v in stored.items() if k in SHARED_KEYS}, expected)


def check_report_has_results(found_any: bool, left_out: Sequence[str], out: str) -> None:
    """``--report-only``: refuse (ValueError) to write a study's report from no result: when
    ``out`` holds none, or only finished results made with other settings (``left_out``: one
    line each, ``where: made with → these``), which a report written then would hide."""
    if found_any:
        return
    if not left_out:
        raise ValueError(f"--report-only: {out!r} holds no finished result of this study "
                         "(give the --out it ran into, or let it finish a cell first); "
                         "nothing was written")
    raise ValueError(f"--report-only: none of the {len(left_out)} finished results in {out!r} "
                     f"was made with this command's settings (made with → these, e.g. "
                     f"{left_out[0]}); give the flags the study was run with (--profile, "
                     "--epochs, ...); nothing was rewritten")
