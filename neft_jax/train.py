"""Training: state, optimiser and the jitted train step of each method (method.md §3–4).

Methods (:mod:`neft_jax.methods`, one entry each):
  ``vanilla``  plain cross-entropy, clean weights.
  ``noise``    cross-entropy at noisy weights (noise injection).
  ``noise_scaled``  noise injection trained on ``CE(z / (s + 1))``, s = the model's
               number of exits: eq. (1)'s logit scaling without any feedback
               (the fair baseline for IRS/OVF).
  ``irs``      eq. (1) with the exits' logits as feedback (backbone and exit
               kernels perturbed, exits with their own σ).
  ``ovf``      eq. (1) with three extra backbone passes at σ + 0.15, + 0.10,
               + 0.05 (fresh noise each) as feedback. All four passes run in
               training mode and update the BatchNorm running statistics in
               turn (σ, σ + 0.15, σ + 0.10, σ + 0.05), as the authors' code does.

The step is ``step(state, batch, key) -> (state, metrics)`` with
``batch = {"image": (B, ...) inputs, "label": (B,) int}``. σ, the exits' σ and
(for IRS and OVF) α live in ``state.hparams`` as traced scalars, so changing them
never recompiles the step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from neft_jax.adapters import TRAIN_FLAGS, as_trainable, initial_variables
from neft_jax.device import DeviceModel, _is_concrete_number, check_nonnegative_scalar
from neft_jax.methods import (  # noqa: F401  (part of this module's API)
    DEFAULT_METHODS,
    FEEDBACK_METHODS,
    METHODS,
    PAPER_METHODS,
    LossInputs,
    method_spec,
    unknown_method,
    uses_exits,
    uses_feedback,
    validate_method,
)
from neft_jax.models import backbone_kernels, backbone_only, exit_kernels, exits_only
from neft_jax.perturbation import Where, as_device, is_kernel, perturb

#: σ offsets of OVF's three extra forward passes, in the order of z_1, z_2, z_3.
OVF_SIGMA_OFFSETS = (0.15, 0.10, 0.05)


class TrainState(train_state.TrainState):
    """Flax train state with BatchNorm statistics and the traced hyper-parameters.

    ``hparams``: ``{"sigma", "exit_sigma"}`` and, when given, ``"alpha"`` (IRS and OVF need
    it): float32 scalars (:func:`make_hparams`). ``batch_stats``: BatchNorm statistics (for
    an NNX model all its non-``Param`` state), ``{}`` when there are none. ``apply_fn`` is
    the library's wrapper of the model (:mod:`neft_jax.adapters`), not ``model.apply``:
    score a trained state through :func:`evaluation_model`.
    """

    batch_stats: Any
    hparams: Any


def learning_rate_schedule(learning_rate: float, total_steps: int,
                           steps_per_epoch: int | None = None) -> optax.Schedule:
    """Cosine annealing from ``learning_rate`` to 0 over ``total_steps`` (method.md §4):
    stepped after every step (the paper's Algorithm 1, line 11), or, with
    ``steps_per_epoch``, once per epoch (the authors' code: PyTorch's ``CosineAnnealingLR``
    with ``T_max`` = the epochs, so epoch e, 0-based, trains at
    ``lr · (1 + cos(π e / epochs)) / 2``)."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if steps_per_epoch is None:
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if steps_per_epoch < 1 or total_steps % steps_per_epoch:
        raise ValueError(f"steps_per_epoch must be >= 1 and divide total_steps "
                         f"({total_steps}), got {steps_per_epoch!r}")
    per_epoch = optax.cosine_decay_schedule(learning_rate, total_steps // steps_per_epoch)
    return lambda count: per_epoch(count // steps_per_epoch)


def create_optimizer(learning_rate: float = 1e-3, total_steps: int | None = None,
                     steps_per_epoch: int | None = None):
    """Adam (PyTorch's defaults, no weight decay) with :func:`learning_rate_schedule`, or at
    a constant rate without ``total_steps``."""
    if total_steps is None:
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if steps_per_epoch is not None:
            raise ValueError("steps_per_epoch needs total_steps")
        return optax.adam(learning_rate)
    return optax.adam(learning_rate_schedule(learning_rate, total_steps, steps_per_epoch))


def make_hparams(sigma: float, exit_sigma: float | None = None,
                 alpha: float | None = None) -> dict:
    """The traced hyper-parameters of a train state: the σ the backbone trains at
    (:class:`DeviceModel`'s unit: conductance levels under ``level``; 0 for vanilla), the
    exits' σ (default: ``sigma``) and eq. (1)'s α (IRS and OVF need it: their step refuses a
    state without one; α = 0 turns the feedback off). Changing them never recompiles.
    Returns ``{"sigma", "exit_sigma"[, "alpha"]}``, float32 scalars."""
    exit_sigma = sigma if exit_sigma is None else exit_sigma
    DeviceModel(sigma=sigma)  # validates σ
    DeviceModel(sigma=exit_sigma)
    hparams = {"sigma": jnp.float32(sigma), "exit_sigma": jnp.float32(exit_sigma)}
    if alpha is not None:
        check_nonnegative_scalar(alpha, "alpha")
        hparams["alpha"] = jnp.float32(alpha)
    return hparams


def create_train_state(
    model: Any,
    key: jax.Array | None,
    input_shape: Sequence[int] | None,
    tx: optax.GradientTransformation,
    hparams: dict | None = None,
    *,
    params: Any = None,
) -> TrainState:
    """Wrap a model and its initial weights in a :class:`TrainState`.

    ``model``: a linen module (initialised from ``key`` on zeros of ``input_shape``: one
    batch's shape with its batch axis, e.g. ``(B, H, W, C)`` or ``x.shape``, float32, or a
    ``jax.ShapeDtypeStruct`` / array for integer inputs), an NNX
    module (its own state; ``key``/``input_shape`` unused) or a function
    ``apply(params, x)`` with its initial ``params`` (:mod:`neft_jax.adapters`).
    ``hparams``: :func:`make_hparams`, required: the σ (and α) every step trains at.
    ``state.batch_stats`` holds the non-parameter state (BatchNorm statistics), {} when
    there is none.
    """
    if hparams is None:
        raise ValueError("create_train_state needs hparams=neft_jax.make_hparams(sigma=..., "
                         "alpha=...): the σ every step trains at (0 for vanilla) and, for "
                         "IRS/OVF, eq. (1)'s α")
    trainable, model_params, extra = initial_variables(model, key, input_shape, params)
    if trainable.kind == "linen" and extra and trainable.flag is None:
        warnings.warn(f"{type(model).__name__} has BatchNorm statistics but its __call__ takes "
                      f"no train flag ({', '.join(TRAIN_FLAGS)}), so training and evaluation "
                      "run it alike; if use_running_average is a module attribute, make it a "
                      "`train` argument of __call__", stacklevel=2)
    return TrainState.create(
        apply_fn=trainable,
        params=model_params,
        batch_stats=extra,
        tx=tx,
        hparams=hparams,
    )


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def make_train_step(
    model: nn.Module,
    method: str,
    device: DeviceModel | None = None,
    *,
    decay: float | Sequence[float] = 0.1,
    ovf_offsets: Sequence[float] = OVF_SIGMA_OFFSETS,
    ovf_update_stats: bool = True,
    logit_divisor: float | None = None,
    where: Where | None = None,
    jit: bool = True,
    donate: bool = False,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Build the train step of ``method``.

    Args:
      model: a linen module, an NNX module or a function ``apply(params, x)`` that returns
        logits, or logits and exit logits (:mod:`neft_jax.adapters`); IRS needs exit
        logits (built-in models with ``exits=True``, or :func:`neft_jax.with_exits`).
      method: one of :data:`METHODS`.
      device: backbone device template (bits, normalisation, scale, preset); its σ must be
        left at 0: every step takes σ from ``state.hparams["sigma"]``
        (:func:`make_hparams`). Exits always use the RRAM1 model (same bits /
        normalisation / scale) with ``hparams["exit_sigma"]``.
      decay: feedback coefficient decay of eq. (1), or explicit coefficients
        (one per exit the model has, or per OVF pass).
      ovf_offsets: σ offsets of OVF's extra passes.
      ovf_update_stats: OVF's extra passes update the BatchNorm running statistics
        after the main pass, in order (the authors' code; default). False keeps only
        the main pass's update.
      logit_divisor: ``noise_scaled`` trains on ``CE(z / logit_divisor)``; default
        ``model.num_exits + 1`` (all the architecture's exits, also when ``exits=``
        keeps fewer), else the number of exit logits the model returns + 1.
      where: the backbone weights that get noise (default: kernels outside the exit
        heads, modules named ``exit_<n>``); the step raises if it selects none. For IRS,
        exit-head leaves get the exits' σ only: those ``where`` selects and the kernels.
      jit: return the jitted step (default) or the plain function.
      donate: donate the input state's buffers (jit only).

    Returns:
      ``step(state, batch, key) -> (state, metrics)`` with ``batch = {"image": inputs (B,
      ...), "label": int class indices (B,)}`` and ``key`` a fresh ``jax.random`` key per
      step (the noise, dropout); metrics hold ``loss`` (the batch's mean loss, nats),
      ``accuracy`` (the backbone's top-1 fraction in [0, 1] at the weights it trained at:
      noisy, clean for vanilla), for IRS ``exit_accuracy`` ``(num_exits,)`` fractions,
      and for IRS/OVF ``feedback_ratio``: RMS(α·Σ c_i z_i) / RMS(z).
    """
    spec = method_spec(method)
    device = DeviceModel() if device is None else as_device(device)
    if _is_concrete_number(device.sigma) and not device.is_noiseless:
        raise ValueError(f"make_train_step's device is a template and its sigma must stay 0 "
                         f"(got {device.sigma!r}): every step trains at the train state's σ, "
                         "create_train_state(..., hparams=neft_jax.make_hparams(sigma=...))")
    exit_template = device.replace(state_factor=1)
    trainable = as_trainable(model)
    backbone, exits = backbone_kernels, exit_kernels
    if where is not None:  # in an exit head: the exits' σ only, for what either selects
        backbone = backbone_only(where) if spec.exits else where
        exits = exits_only(lambda path, leaf: where(path, leaf) or is_kernel(path, leaf))
    if spec.scales_logits:
        logit_divisor = _default_logit_divisor(model, logit_divisor)

    def forward(params, batch_stats, apply_fn, x, key, sigma, exit_sigma):
        if sigma is not None:
            backbone_key, exit_key = jax.random.split(key)
            params = perturb(params, backbone_key, device.replace(sigma=sigma),
                             where=backbone, on_empty="raise")
            if exit_sigma is not None:
                params = perturb(params, exit_key, exit_template.replace(sigma=exit_sigma),
                                 where=exits, on_empty="ignore")
        return trainable.apply(params, batch_stats, x, key, train=True)

    def loss_fn(params, state, batch, key):
        x, y = _image_and_label(batch)
        hp = state.hparams
        sigma = hp["sigma"] if spec.perturbs else None
        exit_sigma = hp["exit_sigma"] if spec.exits else None
        keys = jax.random.split(key, 1 + len(ovf_offsets))
        logits, exit_logits, batch_stats = forward(params, state.batch_stats, state.apply_fn,
                                                   x, keys[0], sigma, exit_sigma)
        aux = {}
        if spec.exits:
            if not exit_logits:
                raise ValueError(f"method {method!r} needs a model that returns (logits, "
                                 "exit_logits): VGG8/ResNet18 with exits=True, or your linen "
                                 "model wrapped by neft_jax.with_exits(model, taps=[...], "
                                 "num_classes=K)")
            aux["exit_accuracy"] = jnp.stack([_accuracy(z, y) for z in exit_logits])
        feedback_logits = ()
        if spec.feedback == "exits":
            feedback_logits = exit_logits
        elif spec.feedback == "passes":
            feedback_logits = []
            for k, offset in zip(keys[1:], ovf_offsets, strict=True):
                z, _, updated = forward(params, batch_stats, state.apply_fn, x, k,
                                        hp["sigma"] + offset, None)
                feedback_logits.append(z)
                if ovf_update_stats:
                    batch_stats = updated
        loss, metrics = spec.loss(method, LossInputs(logits, y, exit_logits, feedback_logits,
                                                     _alpha(hp, spec), decay, logit_divisor))
        # Labels outside [0, K) (on a device, unchecked: _checking_labels) make the loss NaN
        # and its gradients 0: -1 would train toward class K-1 without a sign.
        loss = jnp.where(jnp.all((y >= 0) & (y < logits.shape[-1])), loss, jnp.nan)
        aux.update(metrics)
        aux["accuracy"] = _accuracy(logits, y)
        return loss, (aux, batch_stats)

    def step(state: TrainState, batch: dict, key: jax.Array):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (aux, batch_stats)), grads = grad_fn(state.params, state, batch, key)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        return state, {"loss": loss, **aux}

    if not jit:
        return step
    return _checking_labels(jax.jit(step, donate_argnums=(0,) if donate else ()), trainable)


def _checking_labels(jitted: Callable, trainable) -> Callable:
    """``jitted``, refusing (ValueError) a batch whose NumPy labels lie outside [0, K).
    Labels already on a device are not checked here (that would wait for them): in the
    step, labels outside [0, K) make the loss NaN and the gradients 0."""
    classes: list[int] = []

    def step(state, batch, key):
        labels = batch.get("label") if isinstance(batch, Mapping) and "image" in batch else None
        if isinstance(labels, np.ndarray) and labels.size:  # else the step says what is wrong
            if not classes:  # K, the model's logits' last axis, traced once
                logits = jax.eval_shape(lambda p, s: trainable.apply(
                    p, s, batch["image"], key, train=True)[0], state.params, state.batch_stats)
                classes.append(logits.shape[-1])
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= classes[0]:
                raise ValueError(f"batch['label'] must be class indices 0 … {classes[0] - 1} "
                                 f"(the model gives {classes[0]} classes), got {low} … {high}")
        return jitted(state, batch, key)

    for name in ("lower", "trace", "eval_shape", "clear_cache"):  # jit's own methods
        if hasattr(jitted, name):
            setattr(step, name, getattr(jitted, name))
    return step


def _image_and_label(batch: Any) -> tuple[jax.Array, jax.Array]:
    """A batch's inputs and its integer labels ``(B,)`` (ValueError for any other batch)."""
    if not isinstance(batch, Mapping) or not {"image", "label"} <= set(batch):
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"a batch is {{'image': inputs (B, ...), 'label': int labels (B,)}}, "
                         f"got {got}")
    x, y = batch["image"], batch["label"]
    if not hasattr(y, "dtype") or not jnp.issubdtype(y.dtype, jnp.integer):
        got = f"dtype {y.dtype}" if hasattr(y, "dtype") else type(y).__name__
        raise ValueError(f"batch['label'] must be an array of integer class indices (B,), "
                         f"got {got}")
    if jnp.ndim(y) != 1 or jnp.shape(y)[0] != jnp.shape(x)[0]:
        raise ValueError(f"batch['label'] must be (B,) class indices for inputs of shape "
                         f"{jnp.shape(x)}, got shape {jnp.shape(y)}")
    return x, y


def _alpha(hparams: dict, spec) -> jax.Array | float:
    """The state's α; a method with feedback refuses a state made without one."""
    if "alpha" in hparams:
        return hparams["alpha"]
    if spec.uses_feedback:
        raise ValueError(f"method {spec.name!r} needs eq. (1)'s α in the train state: "
                         "make_hparams(sigma, alpha=...), e.g. 1e-2 (the authors' IRS α for "
                         "VGG-8 on MNIST); 0 turns the feedback off")
    return 0.0


def _default_logit_divisor(model: Any, divisor: float | None) -> float | None:
    """``divisor``, else ``model.num_exits + 1``; None when neither is known (the step then
    derives it from the exit logits the model returns)."""
    if divisor is None:
        num_exits = getattr(model, "num_exits", None)
        if num_exits is None:
            return None
        divisor = num_exits + 1
    if not divisor > 0:
        raise ValueError(f"logit_divisor must be > 0, got {divisor!r}")
    return float(divisor)


def step_key(run_key: jax.Array, step: jax.Array | int) -> jax.Array:
    """The key of one train step: ``fold_in(run_key, step)``."""
    return jax.random.fold_in(run_key, step)

