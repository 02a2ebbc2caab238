"""How evaluation gets logits from a model: linen, NNX or a plain function.

:func:`as_forward` turns what a user passes to :func:`neft_jax.monte_carlo` into a
:class:`Forward`, a hashable description (a static ``jit`` argument) of how to
perturb the weights and compute logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from neft_jax.adapters import Trainable, flag_kwargs, train_flag
from neft_jax.perturbation import perturb


def inference_model(model: nn.Module) -> nn.Module:
    """The backbone alone: exits are not used at inference."""
    return model.clone(exits=False) if getattr(model, "exits", False) else model


@dataclasses.dataclass(frozen=True)
class Forward:
    """How Monte Carlo gets logits from a model (hashable: a static jit argument).

    ``kind`` is ``"linen"`` (``target`` a module; noise on ``variables["params"]``; its
    train flag, when ``__call__`` has one, set to evaluation: ``train=False``,
    ``deterministic=True``, …, :data:`neft_jax.adapters.TRAIN_FLAGS`), ``"nnx"``
    (``target`` the graphdef of ``nnx.split``; noise on the state, or on a tuple of
    states; evaluated in eval mode) or ``"function"`` (``target(variables, images) ->
    logits``; noise on ``variables``). A model that returns a tuple or list is taken to
    return ``(logits, ...)``.
    """

    kind: str
    target: Any
    flag: str | None = None

    def logits(self, variables, images):
        if self.kind == "linen":
            out = self.target.apply(variables, images, **flag_kwargs(self.flag, train=False))
        elif self.kind == "nnx":
            from flax import nnx

            states = variables if isinstance(variables, tuple) else (variables,)
            model = nnx.merge(self.target, *states)
            model.eval()
            out = model(images)
        else:
            out = self.target(variables, images)
        return out[0] if isinstance(out, (tuple, list)) else out

    def perturb(self, variables, key, device, where):
        """Noise on the selected leaves (monte_carlo checks beforehand that σ > 0 selects
        some; a traced σ = 0 selects none silently)."""
        if self.kind == "linen":
            return {**variables, "params": perturb(variables["params"], key, device,
                                                    where=where, on_empty="ignore")}
        return perturb(variables, key, device, where=where, on_empty="ignore")


def as_forward(model, variables) -> tuple[Forward, Any]:
    """``(Forward, variables)`` for a linen module (``variables`` its variables dict), an NNX
    module (``variables`` None: its own state) or a function ``apply(variables, images)``."""
    if isinstance(model, Forward):
        return model, variables
    if isinstance(model, nn.Module):
        if not isinstance(variables, Mapping) or "params" not in variables:
            got = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
            raise ValueError(f"a linen model's variables are {{'params': ..., 'batch_stats': "
                             f"...}} (model.init's output, or evaluation_model(state)); got "
                             f"{got}")
        variables = {**variables, "batch_stats": variables.get("batch_stats", {})}
        return Forward("linen", inference_model(model), train_flag(model)), variables
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax without nnx
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return Forward("nnx", graphdef), state if variables is None else variables
    if callable(model):
        return Forward("function", model), variables
    raise TypeError(f"model must be a flax linen module, an nnx.Module or a function "
                    f"apply(variables, images) -> logits, got {type(model).__name__}")


def evaluation_model(state) -> tuple[Any, Any]:
    """``(model, variables)`` for :func:`neft_jax.monte_carlo` from a trained
    :class:`~neft_jax.TrainState`. ``monte_carlo`` drops the exits (backbone logits only);
    the model itself is the trained one, so a :func:`~neft_jax.with_exits` model's
    ``model.apply(variables, x)`` still returns ``(logits, exit_logits)``. An NNX model
    comes back as the wrapper ``monte_carlo`` calls, not as the module."""
    trainable = state.apply_fn
    if not isinstance(trainable, Trainable):
        raise TypeError("evaluation_model needs a state made by neft_jax.create_train_state")
    if trainable.kind == "linen":
        return trainable.target, {"params": state.params, "batch_stats": state.batch_stats}
    if trainable.kind == "nnx":
        return Forward("nnx", trainable.target), (state.params, state.batch_stats)
    return trainable.target, state.params
