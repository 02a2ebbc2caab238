"""The one training loop: R ≥ 1 runs of one method, one after another's steps or vmapped.

:func:`train_runs` trains one method for each config of ``configs`` (same settings,
own seed and output folder). Each run gets its own validation split, init, data
order, step and validation keys, and checkpoints (``<out>/checkpoints/<method>``).
With ``vmapped=False`` there is exactly one run, jitted alone (data-parallel over
the local devices when there are several); with ``vmapped=True`` the runs' states
are stacked on a leading axis and the step is ``jax.vmap``-ped over it. Both go
through the same epoch logic (metric sums on device, step limit, progress bar,
end-of-epoch validation, checkpoints, history, ``metrics.jsonl``; each run's share is kept
by :class:`~neft_jax.harness.bookkeeping.RunProgress`), so they write the same files and
the same numbers up to float reassociation.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax import parallel
from neft_jax import train as train_lib
from neft_jax.harness import data as data_lib
from neft_jax.harness.bookkeeping import RunProgress, TrainOutcome, epoch_means
from neft_jax.harness.checkpoints import RunCheckpoints
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.evaluation import validation_accuracy


@dataclasses.dataclass(frozen=True)
class RunKeys:
    """The four key roots of a run, all from ``jax.random.key(seed)``."""

    init: jax.Array
    data: jax.Array
    step: jax.Array
    validation: jax.Array

    @classmethod
    def of_seed(cls, seed: int) -> RunKeys:
        return cls(*jax.random.split(jax.random.key(seed), 4))


# A process keeps the jitted step of each (model, method, device template, augmentation, feedback
# coefficients, mesh) and the optimizer of each (learning rate, schedule length) that it
# trained with: runs of the same settings that differ in σ, α or seed (the cells of a sweep,
# a reproduction stage, an α search) then reuse one traced and compiled program instead
# of tracing it again and reading it back from the compilation cache (≈ 5 s for a
# ResNet-18 OVF step on CPU). σ, α and the keys are traced arguments, so the numbers are
# those of a fresh program. Bounded: a long-lived process that trains many models keeps
# only the most recent few.
_PROGRAMS_KEPT = 8


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def optimizer(learning_rate: float, total_steps: int, steps_per_epoch: int | None = None):
    """The run's Adam with cosine decay (per step, or per epoch with ``steps_per_epoch``),
    one object per settings in a process (it is part of the train state's structure, which
    the jitted step is keyed on)."""
    return train_lib.create_optimizer(learning_rate, total_steps, steps_per_epoch)


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def train_on_indices_fn(model, method, device, augment, decay=0.1):
    """Plain ``(state, images, labels, indices, key) -> (state, metrics)``: one train step
    on ``images[indices]`` (augmented, the crop padding with the per-channel values
    ``augment``, unless it is None), with the whole training set on device.
    One function per settings in a process (all arguments hashable).
    """
    step = train_lib.make_train_step(model, method, device, decay=decay, jit=False)

    def train_on_indices(state, images, labels, indices, key):
        noise_key, augment_key = jax.random.split(key)
        batch_images = images[indices]
        if augment is not None:
            batch_images = data_lib.augment_images(augment_key, batch_images, augment)
        return step(state, {"image": batch_images, "label": labels[indices]}, noise_key)

    return train_on_indices


def with_running_sums(train_on_indices):
    """``(state, sums, finite, images, labels, indices, step_root, global_step) ->
    (state, sums, finite)``: one train step (key ``fold_in(step_root, global_step)``) that
    adds its metrics to the epoch's running ``sums`` and ANDs ``finite`` with "the loss is
    finite", all inside the compiled program, so that the host only dispatches steps and
    never waits for one (no eager op between steps)."""

    def step(state, sums, finite, images, labels, indices, step_root, global_step):
        state, metrics = train_on_indices(state, images, labels, indices,
                                          train_lib.step_key(step_root, global_step))
        return (state, jax.tree.map(jnp.add, sums, metrics),
                finite & jnp.isfinite(metrics["loss"]))

    return step


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def _single_run_step(train_on_indices, mesh):
    """The jitted epoch step of one run; data-parallel over ``mesh`` unless it is None."""
    step = with_running_sums(train_on_indices)
    if mesh is None:
        return jax.jit(step, donate_argnums=(0, 1, 2))
    return parallel.data_parallel_jit(step, mesh, (False,) * 5 + (True, False, False),
                                      (0, 1, 2))


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def _vmapped_runs_step(train_on_indices):
    """The jitted epoch step of R runs stacked on a leading axis."""
    return jax.jit(jax.vmap(with_running_sums(train_on_indices),
                            in_axes=(0, 0, 0, None, None, 0, 0, None)),
                   donate_argnums=(0, 1, 2))


class _EpochSums:
    """Zero metric sums and ``finite = True`` for the start of an epoch, shaped like one
    step's metrics. The shapes come from tracing the step once (``jax.eval_shape``, ≈ 0.5 s)
    per ``metrics_key`` = (model, method, runs) in a process: which metrics a step returns
    depends on nothing else."""

    _shapes: dict = {}  # metrics_key -> the step's metrics as ShapeDtypeStructs
    metrics_key: tuple

    def zero_sums(self, state, images, labels, indices):
        shapes = self._shapes.get(self.metrics_key)
        if shapes is None:
            shapes = jax.eval_shape(self._metrics_of, state, images, labels, indices)[1]
            self._shapes[self.metrics_key] = shapes
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return zeros, jnp.ones(shapes["loss"].shape, bool)


class _SingleRun(_EpochSums):
    """One run, jitted alone (data-parallel with a multi-device mesh)."""

    def __init__(self, train_on_indices, step_root, mesh, metrics_key):
        self.train_on_indices, self.step_root, self.mesh = train_on_indices, step_root, mesh
        self.metrics_key = metrics_key
        self._step = _single_run_step(train_on_indices,
                                      None if mesh is None or mesh.size == 1 else mesh)

    def stack(self, states):
        return states[0]

    def _metrics_of(self, state, images, labels, indices):
        return self.train_on_indices(state, images, labels, indices[0], self.step_root)

    def step(self, state, sums, finite, images, labels, indices, global_step):
        return self._step(state, sums, finite, images, labels, indices[0], self.step_root,
                          global_step)

    @staticmethod
    def select(tree, i: int):
        return tree


class _VmappedRuns(_EpochSums):
    """R runs as one program, vmapped over a leading run axis of the state."""

    def __init__(self, train_on_indices, step_roots, metrics_key):
        self.step_roots, self.metrics_key = step_roots, metrics_key
        self._one_step = jax.vmap(train_on_indices, in_axes=(0, None, None, 0, 0))
        self._step = _vmapped_runs_step(train_on_indices)
        self.mesh = None

    @staticmethod
    def stack(states):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def _metrics_of(self, state, images, labels, indices):
        return self._one_step(state, images, labels, jnp.asarray(indices), self.step_roots)

    def step(self, state, sums, finite, images, labels, indices, global_step):
        return self._step(state, sums, finite, images, labels, jnp.asarray(indices),
                          self.step_roots, global_step)

    @staticmethod
    def select(tree, i: int):
        return jax.tree.map(lambda x: x[i], tree)


def train_runs(configs: list[ExperimentConfig], dataset: data_lib.Dataset, method: str,
               alpha: float, vmapped: bool = False, log: Callable[[str], None] = print,
               show_progress: bool = True) -> list[TrainOutcome]:
    """Train ``method`` with ``alpha`` once per config; return one outcome per config.

    ``dataset`` is the full dataset; each run holds out its own stratified validation
    split of the training data (``cfg.val_fraction``, by ``cfg.seed``), or with
    ``val_fraction`` 0 trains on all of it and chooses its epoch on the test set.
    """
    from tqdm.auto import tqdm

    if not vmapped and len(configs) != 1:
        raise ValueError(f"train_runs without vmapped takes one config, got {len(configs)}")
    cfg = configs[0]
    model = cfg.model_for(method, dataset.num_classes)
    splits = [data_lib.validation_indices(dataset.train_labels, c.val_fraction, c.seed)
              for c in configs]
    num_train = len(splits[0][0])
    if cfg.batch_size > num_train:  # never clamped: results.json states the batch trained
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set "
                         f"({num_train} images after the validation split); use "
                         f"--batch-size {num_train} or less")
    batch_size = cfg.batch_size
    steps_per_epoch = num_train // batch_size
    schedule_steps = (cfg.learning_rate, cfg.epochs * steps_per_epoch,
                      steps_per_epoch if cfg.lr_schedule == "epoch" else None)
    tx = optimizer(*schedule_steps)
    learning_rate_at = train_lib.learning_rate_schedule(*schedule_steps)
    keys = [RunKeys.of_seed(c.seed) for c in configs]
    hparams = train_lib.make_hparams(cfg.sigma, cfg.effective_exit_sigma, alpha)
    # The step's device template: it takes σ from the state's hparams at every step, so the
    # template's own σ is 0 and runs at other σ share one step (and its compiled program).
    device = cfg.device(sigma=0.0)
    progress = [RunProgress(c, method, alpha, RunCheckpoints(c.checkpoint_dir(method, alpha)))
                for c in configs]
    states = [p.resume(train_lib.create_train_state(model, k.init, (1, *dataset.input_shape),
                                                    tx, hparams), log)
              for p, k in zip(progress, keys, strict=True)]
    start_epochs = {p.start_epoch for p in progress}
    if len(start_epochs) > 1:  # a kill between two seeds' checkpoint saves
        raise ValueError(f"{method}: the seeds' checkpoints are at different epochs "
                         f"{sorted(start_epochs)}; resume with --seed-mode sequential")
    start_epoch = start_epochs.pop()
    train_on_indices = train_on_indices_fn(model, method, device,
                                           dataset.crop_fill if dataset.augment else None,
                                           cfg.feedback_coefficients(method))
    metrics_key = (model, method, len(configs) if vmapped else None)
    engine = (_VmappedRuns(train_on_indices, jnp.stack([k.step for k in keys]), metrics_key)
              if vmapped else _SingleRun(train_on_indices, keys[0].step,
                                         parallel.local_data_mesh(batch_size), metrics_key))
    stacked = engine.stack(states)
    del states
    images = jax.device_put(np.asarray(dataset.train_images))
    labels = jax.device_put(np.asarray(dataset.train_labels))
    val_sets = [data_lib.selection_set(dataset, v, cfg.eval_batch_size) for _, v in splits]
    start = time.perf_counter()
    global_step = first_step = start_epoch * steps_per_epoch
    runs = f" ×{len(configs)} seeds" if vmapped else ""
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if all(p.diverged for p in progress):
                break
            epoch_start = time.perf_counter()
            orders = np.stack([train[data_lib.epoch_batches(jax.random.fold_in(k.data, epoch),
                                                            num_train, batch_size)]
                               for (train, _), k in zip(splits, keys, strict=True)], axis=1)
            sums, finite = engine.zero_sums(stacked, images, labels, orders[0])
            steps_done = 0
            bar = tqdm(orders, desc=f"{method}{runs} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not show_progress, unit="step")
            for indices in bar:  # (runs, batch) indices into the full training set
                if cfg.max_train_steps is not None and global_step >= cfg.max_train_steps:
                    break
                stacked, sums, finite = engine.step(stacked, sums, finite, images, labels,
                                                    indices, global_step)
                global_step += 1
                steps_done += 1
                if show_progress and steps_done % 10 == 0:  # host sync only where progress shows
                    loss, acc = (float(jnp.mean(sums[k])) / steps_done
                                 for k in ("loss", "accuracy"))
                    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{100 * acc:.1f}%")
            bar.close()
            if steps_done == 0:
                break
            jax.block_until_ready(sums)  # the steps run asynchronously: time them, not the queue
            seconds = time.perf_counter() - epoch_start
            stopped_early = steps_done < len(orders) or (
                cfg.max_train_steps is not None and global_step >= cfg.max_train_steps)
            validate = stopped_early or cfg.validates_after(epoch + 1)
            rate = float(learning_rate_at(global_step - 1))  # the epoch's last step's
            for i, run in enumerate(progress):
                if run.diverged:
                    continue
                state = engine.select(stacked, i)
                val_accuracy = (validation_accuracy(model, state, val_sets[i],
                                                    keys[i].validation, epoch, configs[i], method,
                                                    engine.mesh) if validate else None)
                prefix = f"[seed {configs[i].seed}]" if vmapped else ""
                means = {**epoch_means(engine.select(sums, i), steps_done), "lr": rate}
                run.end_epoch(epoch, state, means,
                              bool(engine.select(finite, i)), val_accuracy, seconds,
                              lambda m, p=prefix: log(p + m))
    except KeyboardInterrupt as stop:  # SIGINT/SIGTERM: say where and what is on disk
        saved = min(p.checkpoints.latest_epoch() or 0 for p in progress)
        stop.add_note(f"in epoch {epoch + 1}/{cfg.epochs} of {method} ("
                      + (f"no epoch of {method} saved yet" if not saved else
                         f"epoch 1 of {method} saved" if saved == 1 else
                         f"epochs 1–{saved} of {method} saved") + ")")
        raise
    if cfg.max_train_steps is not None and global_step >= cfg.max_train_steps > first_step:
        log(f"{method}: --max-train-steps {cfg.max_train_steps} reached: stopped after "
            f"{global_step} steps, in epoch {(global_step - 1) // steps_per_epoch + 1}/"
            f"{cfg.epochs}")
    for i, run in enumerate(progress):
        if not run.diverged:  # a diverged run was saved when it diverged
            run.flush(engine.select(stacked, i))
    seconds = time.perf_counter() - start
    return [run.outcome(model, engine.select(stacked, i), seconds, log)
            for i, run in enumerate(progress)]
