"""Any JAX model, trained and evaluated the same way: linen, NNX or a plain function.

The training contract (:func:`neft_jax.create_train_state`, :func:`neft_jax.make_train_step`):

* **linen module**: ``model.apply(variables, x, **flag)`` returns logits ``(B, K)``, or
  ``(logits, exit_logits)`` with ``exit_logits`` a sequence of ``(B, K)`` arrays. A train
  flag is found by name in ``__call__``'s signature (:data:`TRAIN_FLAGS`: ``train``,
  ``training``, ``is_training`` are True in training; ``deterministic`` and
  ``use_running_average`` False), or there is none. BatchNorm statistics (the
  ``batch_stats`` collection) are updated in training when the module has them; a
  ``dropout`` RNG stream is passed in training.
* **NNX module**: split into its ``nnx.Param`` state (trained) and the rest (BatchNorm
  statistics, RNG counts: ``TrainState.batch_stats``); called in ``train()`` mode in
  training and ``eval()`` mode in evaluation.
* **function** ``apply(params, x)``: the same outputs, no other state.

Noise goes on the leaves that ``where`` selects (default: kernels outside the exit heads,
modules named ``exit_<n>``); a model whose weights are named otherwise passes
``where=``. IRS needs exit logits: the built-in models with ``exits=True``, or any
linen model wrapped by :func:`with_exits`, which attaches the paper's exit heads
(adaptive average pool to a small grid, dense 512, ReLU, dense K) to the submodules it
names.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from neft_jax.models import EXIT_PREFIX, ExitHead, exit_pool_size, in_exit

#: Train-flag names and the value each takes in training (evaluation gets the opposite).
TRAIN_FLAGS = {"train": True, "training": True, "is_training": True,
               "deterministic": False, "use_running_average": False}


OUTPUTS = ("a model must return logits (B, K) or (logits, exit_logits) with exit_logits a "
           "sequence of (B, K) arrays")


def split_outputs(out) -> tuple[jax.Array, tuple]:
    """``(logits, exit_logits)`` from what a model returns: logits, or a pair of logits and
    a sequence of exit logits (ValueError, naming what came back, for anything else)."""
    if isinstance(out, (tuple, list)):
        if len(out) == 2 and isinstance(out[1], (tuple, list)):
            logits, exit_logits = out[0], tuple(out[1])
        else:
            raise ValueError(f"{OUTPUTS}; got a {type(out).__name__} of {len(out)}")
    else:
        logits, exit_logits = out, ()
    if getattr(logits, "ndim", None) != 2:
        shape = getattr(logits, "shape", None)
        raise ValueError(f"{OUTPUTS}; got " + (f"logits of shape {tuple(shape)}" if shape is not
                                               None else f"a {type(logits).__name__}"))
    for i, z in enumerate(exit_logits, 1):
        if getattr(z, "shape", None) != logits.shape:
            raise ValueError(f"exit {i}'s logits have shape {getattr(z, 'shape', type(z))} but "
                             f"the model's {logits.shape}: the exits need as many classes as "
                             "the model (with_exits(..., num_classes=K))")
    return logits, exit_logits


def train_flag(module: nn.Module) -> str | None:
    """The name of ``module``'s train flag (:data:`TRAIN_FLAGS`), or None."""
    if isinstance(module, WithExits):
        return train_flag(module.backbone)
    names = inspect.signature(type(module).__call__).parameters
    flag = next((name for name in TRAIN_FLAGS if name in names), None)
    required = [name for name, p in list(names.items())[2:] if name != flag
                and p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ValueError(f"{type(module).__name__}.__call__ needs {required}, which neft_jax "
                         f"cannot pass: name a train flag one of {list(TRAIN_FLAGS)}, or give "
                         "it a default")
    return flag


def flag_kwargs(flag: str | None, train: bool) -> dict:
    """``{flag: value}`` for training (``train``) or evaluation; {} without a flag."""
    if flag is None:
        return {}
    return {flag: TRAIN_FLAGS[flag] if train else not TRAIN_FLAGS[flag]}


@dataclasses.dataclass(frozen=True)
class Trainable:
    """How a train step calls a model (hashable: kept in ``TrainState.apply_fn``).

    ``kind``: ``"linen"`` (``target`` the module), ``"nnx"`` (``target`` the graphdef) or
    ``"function"`` (``target(params, x)``); ``flag``: the linen train flag or None.
    """

    kind: str
    target: Any
    flag: str | None = None

    def apply(self, params, extra, x, key, train: bool = True):
        """``(logits, exit_logits, new_extra)`` of one forward pass; ``extra`` is the
        non-parameter state (linen ``batch_stats``, NNX's other state, {} for a function)."""
        if self.kind == "linen":
            variables = {"params": params, "batch_stats": extra}
            kwargs = flag_kwargs(self.flag, train)
            if train and extra:
                out, updates = self.target.apply(variables, x, **kwargs, rngs={"dropout": key},
                                                 mutable=["batch_stats"])
                extra = updates["batch_stats"]
            else:
                out = self.target.apply(variables, x, **kwargs,
                                        rngs={"dropout": key} if train else None)
        elif self.kind == "nnx":
            from flax import nnx

            # fresh Variables of this trace level (BatchNorm writes its statistics into them)
            params, extra = jax.tree.map(lambda leaf: leaf, (params, extra))
            model = nnx.merge(self.target, params, extra)
            model.train() if train else model.eval()
            if train and hasattr(nnx, "reseed"):  # dropout follows the step's key, as linen's
                _reseed(nnx, model, dropout=key, default=jax.random.fold_in(key, 1))
            out = model(x)
            _, _, extra = nnx.split(model, nnx.Param, ...)
        else:
            out = self.target(params, x)
        logits, exit_logits = split_outputs(out)
        return logits, exit_logits, extra


def _reseed(nnx, model, **keys) -> None:
    """``nnx.reseed``, splitting each key to its stream's shape (a stack of layers made under
    ``nnx.split_rngs`` holds one key per layer) where this flax can."""
    import inspect

    if "policy" in inspect.signature(nnx.reseed).parameters:
        nnx.reseed(model, policy="match_shape", **keys)
    else:  # pragma: no cover - older flax: scalar streams only
        nnx.reseed(model, **keys)


def as_trainable(model) -> Trainable:
    """The :class:`Trainable` of a linen module, an NNX module or a function."""
    if isinstance(model, Trainable):
        return model
    if isinstance(model, nn.Module):
        return Trainable("linen", model, train_flag(model))
    nnx = _nnx()
    if nnx is not None and isinstance(model, nnx.Module):
        return Trainable("nnx", nnx.graphdef(model))
    if callable(model):
        return Trainable("function", model)
    raise TypeError(f"model must be a flax linen module, an nnx.Module or a function "
                    f"apply(params, x) -> logits, got {type(model).__name__}")


def initial_variables(model, key, input_shape, params=None) -> tuple[Trainable, Any, Any]:
    """``(trainable, params, extra)`` of a model before training.

    linen: initialised from ``key`` on zeros of ``input_shape`` (in evaluation mode): a
    shape (float32 zeros), or an array or ``jax.ShapeDtypeStruct`` giving shape and dtype
    (integer inputs such as token ids); NNX: the module's own state; function: ``params``
    (required)."""
    trainable = as_trainable(model)
    if trainable.kind == "linen":
        if key is None or input_shape is None:
            raise ValueError("a linen model needs key and input_shape to be initialised")
        import jax.numpy as jnp

        shape, dtype = ((input_shape.shape, input_shape.dtype) if hasattr(input_shape, "dtype")
                        else (tuple(input_shape), jnp.float32))
        variables = model.init(key, jnp.zeros(shape, dtype),
                               **flag_kwargs(trainable.flag, train=False))
        return trainable, variables["params"], variables.get("batch_stats", {})
    if trainable.kind == "nnx":
        from flax import nnx

        _, model_params, extra = nnx.split(model, nnx.Param, ...)
        return trainable, model_params, extra
    if params is None:
        raise ValueError("a function model apply(params, x) needs params=: the initial "
                         "parameters to train")
    return trainable, params, {}


class WithExits(nn.Module):
    """A linen backbone with the paper's exit heads attached to the submodules ``taps``
    names (by path inside the backbone, ``"block1/conv"``, or by name, e.g. ``"conv1"`` or
    ``"Conv_0"``: a name that several modules share is refused); exit i is the module
    ``exit_{i}``, shallowest first as listed.

    Returns ``(logits, exit_logits)``; with ``exits=False`` (what Monte Carlo evaluation
    uses) the backbone's logits alone. A tap's output ``(B, H, W, C)`` is average-pooled to
    ``pool_sizes[i]`` (default by resolution as in the paper: 32→6, 16→4, 8→3, others
    ``ceil(3·s/8)``: :func:`~neft_jax.models.exit_pool_size`); a ``(B, F)`` output goes to
    the dense layers as it is.
    """

    backbone: nn.Module
    taps: tuple[str, ...]
    num_classes: int
    hidden: int = 512
    pool_sizes: tuple[int, ...] | None = None
    exits: bool = True

    @property
    def num_exits(self) -> int:
        """s, the number of exits (one per tap)."""
        return len(self.taps)

    @nn.compact
    def __call__(self, x, *args, **kwargs):
        by_path: dict[str, Any] = {}  # tap -> output, where a tap is a module's path
        by_name: dict[str, dict[str, Any]] = {}  # tap -> {path: output}, a tap is a name
        inside = len(self.path) + 1  # path entries of this module and of "backbone"

        def capture(next_fun, call_args, call_kwargs, context):
            out = next_fun(*call_args, **call_kwargs)
            module = context.module
            if context.method_name == "__call__" and module.path[:inside - 1] == self.path \
                    and len(module.path) > inside:
                if in_exit((module.name,)):
                    raise ValueError(f"with_exits: the backbone has a module named "
                                     f"{module.name!r}, a name the exit heads take "
                                     "(exit_1, exit_2, …): rename it")
                relative = "/".join(map(str, module.path[inside:]))
                if relative in self.taps:
                    by_path.setdefault(relative, out)  # a shared module's first call
                if module.name in self.taps:
                    by_name.setdefault(module.name, {}).setdefault(relative, out)
            return out

        with nn.intercept_methods(capture):
            logits, _ = split_outputs(self.backbone(x, *args, **kwargs))
        if not self.exits:
            return logits
        captured = _resolve_taps(self.taps, by_path, by_name)
        exit_logits = []
        for i, tap in enumerate(self.taps):
            features = captured[tap]
            if isinstance(features, (tuple, list)):
                features = features[0]
            size = (self.pool_sizes[i] if self.pool_sizes else
                    exit_pool_size(features.shape[1]) if features.ndim == 4 else None)
            head = ExitHead(pool_size=size, hidden=self.hidden, num_classes=self.num_classes,
                            name=f"{EXIT_PREFIX}{i + 1}")
            exit_logits.append(head(features).astype(logits.dtype))
        return logits, tuple(exit_logits)


def _resolve_taps(taps, by_path: dict, by_name: dict) -> dict:
    """Each tap's output: the module at that path inside the backbone, else the one module
    of that name; ValueError for a tap that names no module or several."""
    missing = [t for t in taps if t not in by_path and t not in by_name]
    if missing:
        raise ValueError(f"with_exits: no submodule of the backbone is named {missing}; "
                         "name submodules (nn.Conv(..., name='conv1')) or use the "
                         "automatic names (Conv_0, Dense_1, ...)")
    for tap in taps:
        if tap not in by_path and len(by_name[tap]) > 1:
            raise ValueError(f"with_exits: the tap {tap!r} names {len(by_name[tap])} modules "
                             f"({', '.join(by_name[tap])}); give the one meant by its path")
    return {tap: by_path[tap] if tap in by_path else next(iter(by_name[tap].values()))
            for tap in taps}


def with_exits(backbone: nn.Module, taps: Sequence[str], num_classes: int, *,
               hidden: int = 512, pool_sizes: Sequence[int] | None = None) -> WithExits:
    """``backbone`` with the paper's exits at the submodules ``taps`` names, for IRS
    (:class:`WithExits`): ``apply(variables, x)`` returns ``(logits (B, K), exit_logits)``,
    a tuple of one ``(B, K)`` per tap in the order listed (list them shallowest first: exit
    i gets eq. (1)'s coefficient 0.1^(i−1); the order is not checked). ``num_classes`` must be
    the backbone's K; each exit is an adaptive average pool (``pool_sizes``, default by
    resolution), dense ``hidden``, ReLU, dense K, named ``exit_1``, ``exit_2``, …"""
    if isinstance(backbone, WithExits) or not isinstance(backbone, nn.Module):
        raise TypeError("with_exits takes a flax linen module (NNX models and functions "
                        "return their exit logits themselves: (logits, [z_1, ...]))")
    if isinstance(taps, str) or not taps:
        raise ValueError(f"taps must be a non-empty sequence of submodule names, got {taps!r}")
    if pool_sizes is not None and len(pool_sizes) != len(taps):
        raise ValueError(f"pool_sizes must give one size per tap ({len(taps)}), got "
                         f"{len(pool_sizes)}")
    return WithExits(backbone, tuple(taps), num_classes, hidden,
                     None if pool_sizes is None else tuple(pool_sizes))


def _nnx():
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax without nnx
        return None
    return nnx
