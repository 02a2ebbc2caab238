"""The paper's experiment end to end: train each method, Monte Carlo table, files, plot.

``experiments/run.py`` parses flags into an :class:`ExperimentConfig` and calls
:func:`run_experiment`. Everything here is importable and testable.

Per method: train (Adam + cosine decay, fresh noise each step), keep the
latest and the best-by-validation checkpoint (validation = a stratified split
of the *training* data, scored by Monte Carlo accuracy at σ), restore the
best, and evaluate R Monte Carlo runs over the test set at every σ. All
methods share the same Monte Carlo keys per σ (common random numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax import data as data_lib
from neft_jax import parallel
from neft_jax import train as train_lib
from neft_jax.checkpoints import RunCheckpoints
from neft_jax.conv import resolve_backward_micro_batch
from neft_jax.device import NORMALISATIONS, PRESETS, DeviceModel
from neft_jax.evaluate import make_test_set, monte_carlo, summarize
from neft_jax.models import MODELS, create_model

#: The five-step α search grid (SPEC §3).
ALPHA_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)

#: Authors' α per (model, dataset family, method) (SPEC §3).
AUTHORS_ALPHA = {
    ("vgg8", "mnist", "irs"): 1e-2, ("vgg8", "cifar10", "irs"): 1e-1,
    ("vgg8", "mnist", "ovf"): 1e-3, ("vgg8", "cifar10", "ovf"): 1e-3,
    ("resnet18", "mnist", "irs"): 1e-1, ("resnet18", "cifar10", "irs"): 1e-3,
    ("resnet18", "cifar100", "irs"): 1e-3,
    ("resnet18", "mnist", "ovf"): 1e-4, ("resnet18", "cifar10", "ovf"): 1e-1,
    ("resnet18", "cifar100", "ovf"): 1e-1,
    ("resnet18", "tiny_imagenet", "irs"): 1e-2, ("resnet18", "tiny_imagenet", "ovf"): 1e-2,
}

#: The authors' Adam learning rate per model (SPEC §4): their ResNet-18 script sets 1e-2
#: before it builds the optimiser; VGG-8 keeps the config's 1e-3. Both profiles use it.
DEFAULT_LR = {"vgg8": 1e-3, "resnet18": 1e-2}

#: Settings of each profile (the learning rate is per model: :data:`DEFAULT_LR`).
#: ``quick`` fits the default command in < 15 min on 2 CPU cores.
#: ``paper`` computes convs in TF32 on NVIDIA GPUs, as the authors' PyTorch code does
#: (cuDNN convolutions default to TF32 there); it is fp32 on CPU. On an H200, TF32 trains
#: VGG-8 3.4× faster than full fp32 (docs/RESULTS.md, "Speed on one GPU").
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 200, "batch_size": 128, "mc_runs": 200, "width": 1.0,
              "compute": "tf32"},
    "quick": {"epochs": 12, "batch_size": 128, "mc_runs": 200, "width": 0.125,
              "compute": "fp32"},
}

#: Compute options: (activation dtype, matmul/conv precision). Parameters, optimiser
#: state, logits and the loss stay float32 in every option. ``tf32`` equals ``fp32``
#: on CPU; ``bf16`` runs convs and matmuls in bfloat16.
COMPUTE = {"fp32": (jnp.float32, "float32"), "tf32": (jnp.float32, "tensorfloat32"),
           "bf16": (jnp.bfloat16, "bfloat16")}

#: Fields a resumed run must share with the run it resumes.
RESUME_KEYS = ("model", "dataset", "methods", "sigma", "exit_sigma", "device_preset",
               "normalisation", "epochs",
               "batch_size", "lr", "width", "seed", "val_fraction", "alpha_search",
               "drop_exits", "equal_coefficients", "compute")


def default_alpha(model: str, dataset: str, method: str) -> float:
    """The authors' α for model × dataset × method.

    ``mnist5k`` uses MNIST's α. Settings the authors did not publish (VGG-8 on
    CIFAR-100) fall back to the same model's CIFAR-10 α.
    """
    family = "mnist" if dataset.startswith("mnist") else dataset
    if (model, family, method) not in AUTHORS_ALPHA:
        family = "cifar10"
    return AUTHORS_ALPHA[(model, family, method)]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one experiment (see ``experiments/run.py --help``)."""

    model: str = "vgg8"
    dataset: str = "mnist5k"
    methods: tuple[str, ...] = train_lib.PAPER_METHODS
    sigma: float = 0.4
    sweep: tuple[float, ...] = ()
    alpha: float | None = None
    alpha_search: bool = False
    exit_sigma: float | None = None
    device_preset: str = "RRAM1"
    normalisation: str = "range"
    profile: str = "quick"
    epochs: int = 12
    batch_size: int = 128
    lr: float | None = None
    mc_runs: int = 200
    width: float = 0.125
    seed: int = 0
    out: str = "runs/latest"
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    val_fraction: float = 0.1
    val_mc_runs: int = 8
    eval_batch_size: int = 500
    chunk_size: int | None = None
    max_train_steps: int | None = None
    drop_exits: tuple[int, ...] = ()
    equal_coefficients: bool = False
    compute: str = "fp32"
    backward_micro_batch: int | None = None

    def __post_init__(self):
        validate_config(self)

    @property
    def eval_sigmas(self) -> tuple[float, ...]:
        return tuple(sorted({float(self.sigma), *map(float, self.sweep)}))

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
        if method != "irs" or not self.drop_exits:
            return self.feedback_decay
        kept = self.exits_for(method)
        return tuple(self.feedback_decay ** (i - 1) for i in kept)

    def validation_sigma(self, method: str) -> float:
        """σ at which ``method``'s kept epoch is chosen: the run's σ, but 0 for vanilla,
        which the authors select by clean accuracy (SPEC §4)."""
        return 0.0 if method == "vanilla" else self.sigma

    def resume_settings(self) -> dict:
        """The settings a resumed run must share with the run it resumes."""
        settings = self.to_dict()
        return {k: _jsonable(settings[k]) for k in RESUME_KEYS}

    def device(self, sigma: float | None = None) -> DeviceModel:
        return DeviceModel.preset(self.device_preset, self.sigma if sigma is None else sigma,
                                  normalisation=self.normalisation)

    def to_dict(self) -> dict:
        """Every field, with ``lr`` resolved to the rate this run uses."""
        return {**dataclasses.asdict(self), "lr": self.learning_rate}


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
    _require(cfg.dataset in data_lib.DATASETS, "dataset", f"one of {list(data_lib.DATASETS)}",
             cfg.dataset)
    _require(len(cfg.methods) > 0 and all(m in train_lib.METHODS for m in cfg.methods)
             and len(set(cfg.methods)) == len(cfg.methods),
             "methods", f"distinct names from {list(train_lib.METHODS)}", cfg.methods)
    _require(_is_sigma(cfg.sigma), "sigma", "a finite number >= 0", cfg.sigma)
    for s in cfg.sweep:
        _require(_is_sigma(s), "sweep", "finite numbers >= 0", cfg.sweep)
    _require(cfg.exit_sigma is None or _is_sigma(cfg.exit_sigma), "exit_sigma",
             "a finite number >= 0", cfg.exit_sigma)
    _require(cfg.alpha is None or (isinstance(cfg.alpha, (int, float)) and math.isfinite(cfg.alpha)
                                   and cfg.alpha > 0), "alpha", "a finite number > 0", cfg.alpha)
    _require(cfg.device_preset in PRESETS, "device_preset", f"one of {sorted(PRESETS)}",
             cfg.device_preset)
    _require(cfg.normalisation in NORMALISATIONS, "normalisation", f"one of {NORMALISATIONS}",
             cfg.normalisation)
    _require(cfg.profile in PROFILES, "profile", f"one of {sorted(PROFILES)}", cfg.profile)
    for name in ("epochs", "batch_size", "mc_runs", "val_mc_runs", "eval_batch_size"):
        _require(_is_positive_int(getattr(cfg, name)), name, "an integer > 0", getattr(cfg, name))
    _require(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool), "seed", "an integer",
             cfg.seed)
    _require(cfg.lr is None or (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr)
                                and cfg.lr > 0), "lr", "None (per model) or a finite number > 0",
             cfg.lr)
    _require(isinstance(cfg.width, (int, float)) and 0 < cfg.width <= 8, "width",
             "a number in (0, 8]", cfg.width)
    _require(0 < cfg.val_fraction < 1, "val_fraction", "in (0, 1)", cfg.val_fraction)
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
    _require(isinstance(cfg.equal_coefficients, bool), "equal_coefficients", "True or False",
             cfg.equal_coefficients)


# ----------------------------------------------------------------------------- files


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_results(out: str, results: dict) -> None:
    """results.json, results.csv, accuracy_vs_sigma.png and, when a method has a feedback
    term, feedback_ratio.png into ``out``."""
    write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=1))
    write_atomic(os.path.join(out, "results.csv"), results_csv(results))
    plot_accuracy_vs_sigma(results, os.path.join(out, "accuracy_vs_sigma.png"))
    if any("feedback_ratio" in record for entry in results["methods"].values()
           for record in entry.get("history", [])):
        plot_feedback_ratio(results, os.path.join(out, "feedback_ratio.png"))


def plot_feedback_ratio(results: dict, path: str) -> None:
    """Per epoch: RMS(α·Σ c_i z_i) / RMS(z) of IRS/OVF (log scale), and the training
    accuracy of the backbone and of each IRS exit (%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ratio_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for method, entry in results["methods"].items():
        history = [h for h in entry.get("history", []) if "feedback_ratio" in h]
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        label = f"{method}, α = {entry.get('alpha', 0):g}"
        ratio_ax.plot(epochs, [max(h["feedback_ratio"], 1e-12) for h in history], label=label)
        acc_ax.plot(epochs, [h["train_accuracy"] for h in history], label=f"{method} backbone")
        for i, _ in enumerate(history[0].get("exit_accuracies", [])):
            acc_ax.plot(epochs, [h["exit_accuracies"][i] for h in history], ":",
                        label=f"{method} exit {i + 1}")
    ratio_ax.set(yscale="log", xlabel="epoch", ylabel="RMS(feedback) / RMS(logits)",
                 title="size of eq. (1)'s feedback term")
    acc_ax.set(xlabel="epoch", ylabel="training accuracy at noisy weights (%)",
               title="backbone and exits")
    save_figure(fig, path)


CSV_FIELDS = ("method", "sigma", "alpha", "mean", "ci95", "ci99", "std", "ekl", "runs", "min",
              "max", "diverged", "eval_seconds")


def result_rows(results: dict) -> list[dict]:
    """One row per method × σ (accuracies in percent)."""
    rows = []
    for method, entry in results["methods"].items():
        for sigma, evaluation in entry.get("evaluations", {}).items():
            summary = evaluation.get("summary") or {}
            rows.append({
                "method": method, "sigma": float(sigma), "alpha": entry.get("alpha"),
                **{k: summary.get(k) for k in ("mean", "ci95", "ci99", "std", "ekl", "runs",
                                               "min", "max")},
                "diverged": entry.get("diverged", False),
                "eval_seconds": evaluation.get("eval_seconds"),
            })
    return rows


def results_csv(results: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(result_rows(results))
    return buffer.getvalue()


def plot_accuracy_vs_sigma(results: dict, path: str) -> None:
    """Mean Monte Carlo accuracy (± 95 % CI) against σ, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in results["methods"]:
        rows = sorted((r for r in result_rows(results)
                       if r["method"] == method and r["mean"] is not None),
                      key=lambda r: r["sigma"])
        if rows:
            ax.errorbar([r["sigma"] for r in rows], [r["mean"] for r in rows],
                        yerr=[r["ci95"] for r in rows], marker="o", capsize=3, label=method)
    settings = results["settings"]
    ax.set_xlabel("device variation σ_d")
    ax.set_ylabel("Monte Carlo accuracy (%)")
    ax.set_title(f"{settings['model']} on {settings['dataset']} "
                 f"({settings['device_preset']}, {settings['mc_runs']} runs, "
                 f"width ×{settings['width']:g})", fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Grid and legend on every axis, tight layout; write ``path`` atomically; close."""
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def format_table(results: dict) -> str:
    """The paper-style table: method × σ, mean ± 95 % CI, std, EKL (percent, nats)."""
    from rich.console import Console
    from rich.table import Table

    sigmas = results["settings"]["eval_sigmas"]
    settings = results["settings"]
    over = (f"mean ± 95 % CI over {len(settings['seeds'])} seeds of the per-seed means"
            if "seeds" in settings else "mean ± 95 % CI")
    table = Table(title=f"Monte Carlo accuracy (%), {settings['mc_runs']} runs per σ: "
                        f"{over} [std] (EKL)")
    table.add_column("method")
    table.add_column("α")
    for sigma in sigmas:
        table.add_column(f"σ={sigma:g}", justify="right")
    for method, entry in results["methods"].items():
        cells = []
        for sigma in sigmas:
            evaluation = entry.get("evaluations", {}).get(f"{sigma:g}")
            if entry.get("diverged"):
                cells.append("diverged")
            elif evaluation is None:
                cells.append("–")
            else:
                s = evaluation["summary"]
                cells.append(f"{s['mean']:.2f} ± {s['ci95']:.2f} [{s['std']:.2f}] "
                             f"({s['ekl']:.3f})")
        table.add_row(method, f"{entry.get('alpha', 0):g}" if train_lib.uses_feedback(method)
                      else "",
                      *cells)
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(table)
    return console.file.getvalue()


# ---------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainOutcome:
    model: Any
    state: Any
    history: list
    best_epoch: int | None
    best_val_accuracy: float | None
    diverged: bool
    train_seconds: float


def train_on_indices_fn(model, method, device, augment, decay=0.1):
    """Plain ``(state, images, labels, indices, key) -> (state, metrics)``: one train step
    on ``images[indices]`` (augmented when ``augment``), with the whole training set on device.
    """
    step = train_lib.make_train_step(model, method, device, decay=decay, jit=False)

    def train_on_indices(state, images, labels, indices, key):
        noise_key, augment_key = jax.random.split(key)
        batch_images = images[indices]
        if augment:
            batch_images = data_lib.augment_images(augment_key, batch_images)
        return step(state, {"image": batch_images, "label": labels[indices]}, noise_key)

    return train_on_indices


def _make_epoch_step(model, method, device, augment, mesh=None, decay=0.1):
    """Jitted ``(state, images, labels, indices, key) -> (state, metrics)``.

    With a multi-device ``mesh`` the batch (``indices``) is split over the data
    axis and everything else is replicated: data-parallel training.
    """
    train_on_indices = train_on_indices_fn(model, method, device, augment, decay)
    if mesh is None or mesh.size == 1:
        return jax.jit(train_on_indices, donate_argnums=(0,))
    repl, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(train_on_indices, donate_argnums=(0,),
                   in_shardings=(repl, repl, repl, split, repl), out_shardings=(repl, repl))


@dataclasses.dataclass
class RunProgress:
    """Per-run training bookkeeping: history, best-by-validation, divergence, checkpoints.

    Shared by sequential training (:func:`train_method`) and seeds trained together
    in one vmapped program (:mod:`neft_jax.multiseed`), so both write the same files.
    """

    cfg: ExperimentConfig
    method: str
    alpha: float
    checkpoints: RunCheckpoints
    history: list = dataclasses.field(default_factory=list)
    best_val: float = -1.0
    best_epoch: int | None = None
    start_epoch: int = 0
    diverged: bool = False

    def resume(self, state, log: Callable[[str], None]):
        """Restore the latest checkpoint into ``state`` when resuming; return the state."""
        restored = self.checkpoints.restore(state) if self.cfg.resume else None
        if restored is None:
            return state
        state, meta = restored
        self.checkpoints.discard_after(meta["epoch"])
        self.history, self.start_epoch = meta["history"], meta["epoch"]
        self.best_val, self.best_epoch = meta["best_val_accuracy"], meta["best_epoch"]
        self.diverged = meta.get("diverged", False)
        log(f"  resumed {self.method} from epoch {self.start_epoch}")
        return state

    def end_epoch(self, epoch: int, state, means: dict, finite: bool,
                  val_accuracy: float, seconds: float, log: Callable[[str], None]) -> None:
        """Record epoch ``epoch`` (0-based), checkpoint latest (and best), log a line.

        ``means``: the epoch's mean train metrics (:func:`epoch_means`).
        """
        cfg, method = self.cfg, self.method
        if not finite:
            self.diverged = True
            log(f"  {method}: loss became NaN/inf in epoch {epoch + 1}; stopping this run")
        loss, accuracy = means["loss"], means["train_accuracy"]
        record = {"epoch": epoch + 1, **means, "val_accuracy": val_accuracy, "seconds": seconds}
        self.history.append(record)
        improved = not self.diverged and val_accuracy > self.best_val
        if improved:
            self.best_val, self.best_epoch = val_accuracy, epoch + 1
        meta = {"epoch": epoch + 1, "history": self.history, "best_val_accuracy": self.best_val,
                "best_epoch": self.best_epoch, "diverged": self.diverged, "method": method,
                "alpha": self.alpha, "settings": cfg.resume_settings()}
        if improved:
            self.checkpoints.save_best(epoch + 1, state, meta)
        self.checkpoints.save_latest(epoch + 1, state, meta)
        val_sigma = cfg.validation_sigma(method)
        ratio = means.get("feedback_ratio")
        log(f"  {method} epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}, "
            f"train acc {accuracy:.2f}% ({'clean' if method == 'vanilla' else 'noisy'}), "
            f"val acc {val_accuracy:.2f}% (σ={val_sigma:g}"
            + (f", {cfg.val_mc_runs} runs" if val_sigma > 0 else "") + "), "
            + (f"feedback/logits {ratio:.3g}, " if ratio is not None else "")
            + f"best {self.best_val:.2f}% @ {self.best_epoch}, {seconds:.1f} s")

    def outcome(self, model, state, train_seconds: float) -> TrainOutcome:
        """Close the checkpoints; the outcome holds the best state (``state`` if none)."""
        best = self.checkpoints.restore(state, "best") if self.best_epoch is not None else None
        self.checkpoints.close()
        return TrainOutcome(model, best[0] if best is not None else state, self.history,
                            self.best_epoch, self.best_val if self.best_epoch else None,
                            self.diverged, train_seconds)


def validation_accuracy(model, state, val_set, val_root, epoch: int, cfg, method: str,
                        mesh=None) -> float:
    """Accuracy (%) on the validation set after ``epoch`` (0-based): Monte Carlo mean over
    ``cfg.val_mc_runs`` runs at σ, or the one clean evaluation for vanilla (σ = 0)."""
    sigma = cfg.validation_sigma(method)
    runs = cfg.val_mc_runs if sigma > 0 else 1
    val_keys = jax.random.split(jax.random.fold_in(val_root, epoch), runs)
    val = monte_carlo(model, {"params": state.params, "batch_stats": state.batch_stats},
                      val_set, val_keys, cfg.device(sigma), chunk_size=cfg.chunk_size, mesh=mesh)
    return 100 * float(val.accuracies.mean())


def epoch_means(sums: dict, steps: int) -> dict:
    """Per-epoch means of summed step metrics, for the history: loss, train accuracy (%),
    and where present the exits' accuracies (%) and the feedback ratio."""
    means = {"loss": float(sums["loss"]) / steps,
             "train_accuracy": 100 * float(sums["accuracy"]) / steps}
    if "exit_accuracy" in sums:
        means["exit_accuracies"] = [100 * float(a) / steps for a in sums["exit_accuracy"]]
    if "feedback_ratio" in sums:
        means["feedback_ratio"] = float(sums["feedback_ratio"]) / steps
    return means


def add_metrics(sums: dict | None, metrics: dict) -> dict:
    """Running sums of step metrics (on device: no host sync)."""
    return metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)


def local_mesh(batch_size: int):
    """All local devices when there are several and they divide the batch; else None."""
    count = jax.local_device_count()
    if count > 1 and batch_size % count == 0:
        return parallel.data_mesh(jax.local_devices())
    return None


def train_method(
    cfg: ExperimentConfig,
    train_data: data_lib.Dataset,
    validation: data_lib.Dataset,
    method: str,
    alpha: float,
    checkpoint_dir: str,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> TrainOutcome:
    """Train one method; keep latest/best checkpoints; return the best state."""
    from tqdm.auto import tqdm

    model = cfg.model_for(method, train_data.num_classes)
    num_train = len(train_data.train_labels)
    batch_size = min(cfg.batch_size, num_train)
    steps_per_epoch = num_train // batch_size
    total_steps = cfg.epochs * steps_per_epoch
    tx = train_lib.create_optimizer(cfg.learning_rate, total_steps)
    # Every method and α starts from the same initial backbone and sees the same data order.
    init_key, data_key, step_root, val_root = jax.random.split(jax.random.key(cfg.seed), 4)
    hparams = train_lib.make_hparams(cfg.sigma, cfg.effective_exit_sigma, alpha)
    state = train_lib.create_train_state(model, init_key, (1, *train_data.input_shape), tx, hparams)
    device = cfg.device()
    mesh = local_mesh(batch_size)
    epoch_step = _make_epoch_step(model, method, device, train_data.augment, mesh,
                                  cfg.feedback_coefficients(method))
    progress = RunProgress(cfg, method, alpha, RunCheckpoints(checkpoint_dir))
    state = progress.resume(state, log)
    images = jax.device_put(np.asarray(train_data.train_images))
    labels = jax.device_put(np.asarray(train_data.train_labels))
    val_set = make_test_set(validation.test_images, validation.test_labels, cfg.eval_batch_size)
    start = time.perf_counter()
    global_step = progress.start_epoch * steps_per_epoch
    for epoch in range(progress.start_epoch, cfg.epochs):
        if progress.diverged:
            break
        epoch_start = time.perf_counter()
        order = data_lib.epoch_batches(jax.random.fold_in(data_key, epoch), num_train, batch_size)
        sums = None
        all_finite = jnp.bool_(True)
        bar = tqdm(order, desc=f"{method} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not show_progress, unit="step")
        steps_done = 0
        for i, indices in enumerate(bar):
            if cfg.max_train_steps is not None and global_step >= cfg.max_train_steps:
                break
            state, metrics = epoch_step(state, images, labels, indices,
                                        train_lib.step_key(step_root, global_step))
            sums = add_metrics(sums, metrics)
            all_finite = all_finite & jnp.isfinite(metrics["loss"])
            global_step += 1
            steps_done += 1
            if show_progress and (i + 1) % 10 == 0:  # host sync only where progress is shown
                bar.set_postfix(loss=f"{float(sums['loss']) / steps_done:.3f}",
                                acc=f"{100 * float(sums['accuracy']) / steps_done:.1f}%")
        bar.close()
        if steps_done == 0:
            break
        val_accuracy = validation_accuracy(model, state, val_set, val_root, epoch, cfg, method,
                                           mesh)
        progress.end_epoch(epoch, state, epoch_means(sums, steps_done), bool(all_finite),
                           val_accuracy, time.perf_counter() - epoch_start, log)
    return progress.outcome(model, state, time.perf_counter() - start)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


# -------------------------------------------------------------------------- evaluation


def mc_keys(seed: int, sigma: float, runs: int) -> jax.Array:
    """Monte Carlo keys of σ, shared by every method (common random numbers)."""
    key = jax.random.fold_in(jax.random.key(seed), 2**20 + int(round(sigma * 1e6)))
    return jax.random.split(key, runs)


def evaluate_method(cfg, outcome: TrainOutcome, test_set, sigmas: Sequence[float],
                    show_progress: bool = True) -> dict:
    """Monte Carlo evaluation at each σ: per-run accuracies (%) and summary."""
    from tqdm.auto import tqdm

    variables = {"params": outcome.state.params, "batch_stats": outcome.state.batch_stats}
    evaluations = {}
    for sigma in sigmas:
        device = cfg.device(sigma)
        runs = 1 if sigma == 0 else cfg.mc_runs
        start = time.perf_counter()
        with tqdm(total=runs, desc=f"Monte Carlo σ={sigma:g}", unit="run", leave=False,
                  disable=not show_progress) as bar:
            result = monte_carlo(outcome.model, variables, test_set, mc_keys(cfg.seed, sigma, runs),
                                 device, chunk_size=cfg.chunk_size,
                                 mesh=local_mesh(jax.local_device_count()),
                                 progress=lambda done, bar=bar: bar.update(done - bar.n))
        accuracies = 100 * result.accuracies
        evaluations[f"{sigma:g}"] = {
            "sigma": sigma,
            "accuracies": [round(float(a), 6) for a in accuracies],
            "summary": summarize(accuracies, result.ekl),
            "chunk_size": result.chunk_size,
            "eval_seconds": time.perf_counter() - start,
        }
    return evaluations


# -------------------------------------------------------------------------- experiment


def prepare_out_dir(cfg: ExperimentConfig) -> dict | None:
    """Create ``cfg.out``; refuse a non-empty one without resume/overwrite.

    Returns the previous results when resuming (None otherwise).
    """
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out must be a directory, but {out!r} is a file")
    existing = os.path.isdir(out) and bool(os.listdir(out))
    if existing and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"out {out!r} is not empty: pass --resume to continue that run or "
                         "--overwrite to replace it")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"out {out!r} cannot be written: {error.strerror}") from error
    if cfg.overwrite and existing:
        import shutil

        for name in os.listdir(out):
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return None
    previous_path = os.path.join(out, "results.json")
    if cfg.resume and os.path.exists(previous_path):
        with open(previous_path) as f:
            previous = json.load(f)
        check_resume_compatible(cfg, previous["settings"])
        return previous
    return None


def check_resume_compatible(cfg: ExperimentConfig, previous_settings: dict) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    current = cfg.resume_settings()
    for key in RESUME_KEYS:  # runs made before a setting existed had its default
        now = current[key]
        before = previous_settings.get(key, _jsonable(defaults[key]))
        if now != before:
            raise ValueError(f"--resume: the run in {cfg.out!r} was made with {key}={before!r}, "
                             f"this command has {key}={now!r}; use a new --out or the same "
                             "settings")


def environment() -> dict:
    return {
        "jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def method_done(entry: dict | None, sigmas) -> bool:
    """Whether a method's results entry is final: diverged, or evaluated at every σ."""
    if not entry:
        return False
    if entry.get("diverged"):
        return True
    return all(f"{s:g}" in entry.get("evaluations", {}) for s in sigmas)


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print,
                   show_progress: bool = True) -> dict:
    """Train and evaluate every method of ``cfg``; write results; return the results dict."""
    with jax.default_matmul_precision(cfg.matmul_precision):
        return _run_experiment(cfg, log, show_progress)


def _run_experiment(cfg: ExperimentConfig, log: Callable[[str], None],
                    show_progress: bool) -> dict:
    previous = prepare_out_dir(cfg)
    started = time.perf_counter()
    dataset = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
    train_data, validation = data_lib.split_validation(dataset, cfg.val_fraction, cfg.seed)
    log(f"data: {cfg.dataset}: {len(train_data.train_labels)} train, "
        f"{len(validation.test_labels)} validation (from train), "
        f"{len(dataset.test_labels)} test; model {cfg.model} width ×{cfg.width:g}; "
        f"{cfg.device_preset} σ={cfg.sigma:g}, evaluated at σ ∈ {list(cfg.eval_sigmas)}")
    test_set = make_test_set(dataset.test_images, dataset.test_labels, cfg.eval_batch_size)
    results = start_results(cfg, previous, len(train_data.train_labels),
                            len(validation.test_labels), len(dataset.test_labels))
    for method in cfg.methods:
        if method_done(results["methods"].get(method), cfg.eval_sigmas):
            log(f"{method}: already done in {cfg.out}, skipped")
            continue
        log(f"{method}: training")
        entry = {}
        if cfg.alpha_search and train_lib.uses_feedback(method):
            outcome, alpha, search = search_alpha(cfg, train_data, validation, method, log,
                                                  show_progress)
            entry["alpha_search"] = search
        else:
            alpha = cfg.alpha_for(method)
            outcome = train_method(cfg, train_data, validation, method, alpha,
                                   checkpoint_dir_of(cfg, method, alpha), log, show_progress)
        entry.update(method_entry(cfg, method, outcome, alpha, test_set, log, show_progress))
        results["methods"][method] = entry
        results["wall_seconds"] = time.perf_counter() - started + (
            previous.get("wall_seconds", 0.0) if previous else 0.0)
        write_results(cfg.out, results)
    write_results(cfg.out, results)
    return results


def start_results(cfg: ExperimentConfig, previous: dict | None, num_train: int,
                  num_validation: int, num_test: int) -> dict:
    """The results dict of one run: previous methods kept, settings and environment renewed."""
    results = previous or {"methods": {}}
    results["settings"] = {**cfg.to_dict(), "eval_sigmas": list(cfg.eval_sigmas),
                           "num_train": num_train, "num_validation": num_validation,
                           "num_test": num_test, "accuracy_unit": "percent", "ekl_unit": "nats"}
    results["environment"] = environment()
    return results


def method_entry(cfg: ExperimentConfig, method: str, outcome: TrainOutcome, alpha: float,
                 test_set, log: Callable[[str], None] = print,
                 show_progress: bool = True) -> dict:
    """A method's results entry: training record and Monte Carlo evaluation at every σ."""
    entry = {"alpha": alpha, "diverged": outcome.diverged,
             "train_seconds": outcome.train_seconds, "history": outcome.history,
             "best_epoch": outcome.best_epoch, "best_val_accuracy": outcome.best_val_accuracy}
    if outcome.diverged and outcome.best_epoch is None:
        entry["evaluations"] = {f"{s:g}": {"sigma": s, "diverged": True, "accuracies": [],
                                           "summary": None} for s in cfg.eval_sigmas}
        return entry
    log(f"{method}: Monte Carlo evaluation ({cfg.mc_runs} runs per σ)")
    entry["evaluations"] = evaluate_method(cfg, outcome, test_set, cfg.eval_sigmas,
                                           show_progress)
    if outcome.diverged:  # evaluated at its best epoch before the loss blew up
        for evaluation in entry["evaluations"].values():
            evaluation["diverged"] = True
    return entry


def checkpoint_dir_of(cfg: ExperimentConfig, method: str, alpha: float) -> str:
    name = f"{method}-alpha{alpha:g}" if train_lib.uses_feedback(method) else method
    return os.path.join(cfg.out, "checkpoints", name)


def search_alpha(cfg, train_data, validation, method, log, show_progress):
    """Five-step α search: train with each α, score by Monte Carlo accuracy on validation."""
    val_set = make_test_set(validation.test_images, validation.test_labels, cfg.eval_batch_size)
    runs = min(cfg.mc_runs, 50)
    best = None
    search = {}
    for alpha in ALPHA_GRID:
        log(f"  {method}: α = {alpha:g}")
        outcome = train_method(cfg, train_data, validation, method, alpha,
                               checkpoint_dir_of(cfg, method, alpha), log, show_progress)
        if outcome.diverged and outcome.best_epoch is None:
            search[f"{alpha:g}"] = None
            continue
        variables = {"params": outcome.state.params, "batch_stats": outcome.state.batch_stats}
        keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 12345), runs)
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
