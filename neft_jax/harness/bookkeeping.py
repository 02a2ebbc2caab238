"""Each run's bookkeeping in the training loop: history, best epoch, divergence, checkpoints.

:class:`RunProgress` records what :mod:`neft_jax.harness.loop` computes at the end of every
epoch of one run (the history, ``metrics.jsonl``, the best state by validation, the
divergence flag, the latest/best checkpoints and the epoch's line), resumes a killed run
from its checkpoints, and hands back the run's :class:`TrainOutcome`. The loop keeps one per
run, whether it trains one run alone or R seeds vmapped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from neft_jax import train as train_lib
from neft_jax.harness.checkpoints import RunCheckpoints
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import (
    check_same,
    checkpoint_settings,
    fingerprint,
    identity,
    started_methods,
)
from neft_jax.harness.results import append_metrics, drop_metrics


@dataclasses.dataclass
class TrainOutcome:
    """A trained run: its model and best state, history and training time."""

    model: Any
    state: Any
    history: list
    best_epoch: int | None
    best_val_accuracy: float | None
    diverged: bool
    train_seconds: float


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


@dataclasses.dataclass
class RunProgress:
    """Per-run training bookkeeping: history, best-by-validation, divergence, checkpoints.

    Checkpoints are saved at the end of an epoch once ``cfg.checkpoint_every`` seconds
    have passed since the last save, when the run diverges, and by :meth:`flush` after
    the last epoch. Between saves the best state waits in memory (a copy, so that the
    next step's buffer donation cannot touch it).
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
    last_save: float = dataclasses.field(default_factory=time.monotonic)
    pending_best: tuple | None = None  # (epoch, state, metadata) not saved yet
    unsaved_meta: dict | None = None  # metadata of the last epoch, when not saved yet

    @property
    def settings(self) -> dict:
        """The identity every save of this run stores (:mod:`neft_jax.harness.identity`)."""
        return identity(self.cfg)

    def resume(self, state, log: Callable[[str], None]):
        """Restore the latest checkpoint into ``state`` when resuming; return the state.

        The checkpoint's stored settings are checked first (a change of width, say, is
        named as such, not taken for a damaged save), and ``metrics.jsonl`` loses the
        lines of the epochs this run does again."""
        if not self.cfg.resume:
            return state
        found = checkpoint_settings(self.checkpoints.directory)
        if found is not None:
            check_same(found[0], self.cfg, f"--resume: the checkpoints in "
                       f"{self.checkpoints.directory!r}", "use a new --out, or --overwrite "
                       "to replace that run",  # as orchestration.RESUME_REMEDY
                       methods_may_grow=True, started=started_methods(self.cfg.out))
        restored = self.checkpoints.restore(state, log=log)
        if restored is not None:
            state, meta = restored
            self.checkpoints.discard_after(meta["epoch"])
            self.history, self.start_epoch = meta["history"], meta["epoch"]
            self.best_val, self.best_epoch = meta["best_val_accuracy"], meta["best_epoch"]
            self.diverged = meta.get("diverged", False)
            log(f"  resumed {self.method} from epoch {self.start_epoch}")
        drop_metrics(self.cfg.out, lambda line: not (
            line.get("method") == self.method and line.get("alpha") == self.alpha
            and line.get("seed") == self.cfg.seed and line.get("epoch", 0) > self.start_epoch))
        return state

    def end_epoch(self, epoch: int, state, means: dict, finite: bool,
                  val_accuracy: float | None, seconds: float,
                  log: Callable[[str], None]) -> None:
        """Record epoch ``epoch`` (0-based): history, ``metrics.jsonl``, checkpoints when due,
        a line.

        ``means``: the epoch's mean train metrics (:func:`epoch_means`) and ``lr``, the
        learning rate of its last step; ``val_accuracy``:
        None for an epoch not validated (``--val-every``), which cannot become the best.
        """
        cfg, method = self.cfg, self.method
        if not finite:
            self.diverged = True
            log(f"  {method}: loss became NaN/inf in epoch {epoch + 1}; stopping this run")
        record = {"epoch": epoch + 1, **means, "val_accuracy": val_accuracy, "seconds": seconds}
        self.history.append(record)
        append_metrics(cfg.out, {"method": method, "alpha": self.alpha, "seed": cfg.seed,
                                 **record})
        improved = (not self.diverged and val_accuracy is not None
                    and val_accuracy > self.best_val)
        if improved:
            self.best_val, self.best_epoch = val_accuracy, epoch + 1
        meta = {"epoch": epoch + 1, "history": list(self.history),
                "best_val_accuracy": self.best_val, "best_epoch": self.best_epoch,
                "diverged": self.diverged, "method": method, "alpha": self.alpha,
                "settings": self.settings, "fingerprint": fingerprint(self.settings)}
        if improved:
            self.pending_best = (epoch + 1, jax.tree.map(jnp.copy, state), meta)
        self.unsaved_meta = meta
        if self.diverged or time.monotonic() - self.last_save >= cfg.checkpoint_every:
            self.flush(state)
        log(self._epoch_line(epoch, means, val_accuracy, seconds))

    def flush(self, state) -> None:
        """Save the best state waiting in memory and ``state`` as the latest (the state after
        the last recorded epoch), if not saved yet."""
        if self.pending_best is not None:
            self.checkpoints.save_best(*self.pending_best)
            self.pending_best = None
        if self.unsaved_meta is not None:
            self.checkpoints.save_latest(self.unsaved_meta["epoch"], state, self.unsaved_meta)
            self.unsaved_meta = None
        self.last_save = time.monotonic()

    def _epoch_line(self, epoch: int, means: dict, val_accuracy: float | None,
                    seconds: float) -> str:
        cfg, method, spec = self.cfg, self.method, train_lib.method_spec(self.method)
        val_sigma = cfg.validation_sigma(method)
        ratio = means.get("feedback_ratio")
        validation = (f"not validated (every {cfg.val_every})" if val_accuracy is None else
                      f"val acc {val_accuracy:.2f}% (σ={val_sigma:g}"
                      + (f", {cfg.val_mc_runs} runs" if val_sigma > 0 else "") + ")")
        return (f"  {method} epoch {epoch + 1}/{cfg.epochs}: loss {means['loss']:.4f}, "
                f"train acc {means['train_accuracy']:.2f}% "
                f"({'noisy' if spec.perturbs else 'clean'}), {validation}, "
                + (f"feedback/logits {ratio:.3g}, " if ratio is not None else "")
                + (f"best {self.best_val:.2f}% @ {self.best_epoch}, " if self.best_epoch
                   else "") + f"{seconds:.1f} s" + self._time_left(epoch))

    def _time_left(self, epoch: int) -> str:
        """``; ≈ 3 min left for noise``: the epochs left at this launch's mean epoch time
        (its first epoch, which compiles, left out once there are others)."""
        times = [line["seconds"] for line in self.history if line["epoch"] > self.start_epoch]
        left = self.cfg.epochs - (epoch + 1)
        if not left or not times:
            return ""
        from neft_jax.harness.budget import duration

        mean = sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]
        return f"; ≈ {duration(mean * left)} left for {self.method}"

    def outcome(self, model, state, train_seconds: float,
                log: Callable[[str], None] = print) -> TrainOutcome:
        """Close the checkpoints; the outcome holds the best state (``state`` if none).

        ``train_seconds``: this launch's; a resumed run adds its earlier epochs' seconds.
        The kept epoch's own save is restored, never an earlier one: a damaged one is
        :class:`~neft_jax.harness.checkpoints.CheckpointCorrupt` (its epochs are then
        trained again on resume)."""
        train_seconds += sum(line.get("seconds", 0.0) for line in self.history
                             if line.get("epoch", 0) <= self.start_epoch)
        try:
            best = (self.checkpoints.restore_kept(state, self.best_epoch)
                    if self.best_epoch is not None else None)
        finally:
            self.checkpoints.close()
        if best is not None:
            state, meta = best
            self.best_epoch, self.best_val = meta["best_epoch"], meta["best_val_accuracy"]
        return TrainOutcome(model, state, self.history, self.best_epoch,
                            self.best_val if self.best_epoch else None, self.diverged,
                            train_seconds)
