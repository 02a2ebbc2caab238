"""The drop-in weight-noise transform: ``perturb(params, key, device)``.

Works on any params pytree (Flax linen / NNX, Equinox-style modules, plain
dicts), under ``jit`` and under ``vmap`` over keys. Selected leaves become
``W + stop_gradient(ΔW)``: the forward pass sees the noisy weight and the
gradient flows straight through to the clean one (paper Algorithm 1).

One Gaussian is drawn per weight: the bit-weighted sum of ``M/N`` independent
Gaussian device errors (eq. 5) is itself Gaussian with the std that
:meth:`DeviceModel.noise_std` gives, so this is exact in distribution and
``M/N`` times cheaper than drawing every device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from neft_jax.device import STATE_BAND, DeviceModel
from neft_jax.draws import standard_normals

Path = tuple[Any, ...]
Where = Callable[[Path, Any], bool]

#: Leaf names treated as conv/dense kernels by default (Flax: kernel; Equinox/PyTorch: weight).
KERNEL_NAMES = ("kernel", "weight")
#: Trailing path entries of variable wrappers (Flax NNX) that are skipped when naming a leaf.
_WRAPPER_NAMES = ("value", "raw_value")


def path_names(path) -> Path:
    """A ``jax.tree_util`` key path as a tuple of plain names / indices, without a trailing
    variable wrapper's attribute (Flax NNX's ``.value``): an NNX kernel is
    ``("l1", "kernel")``, as in a dict of params."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(getattr(entry, attr))
                break
        else:
            names.append(str(entry))
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] in _WRAPPER_NAMES:
        names.pop()
    return tuple(names)


def leaf_name(path: Path) -> Any:
    """The name of a leaf: the last path entry that is not a variable wrapper."""
    for name in reversed(path):
        if name not in _WRAPPER_NAMES:
            return name
    return None


def is_kernel(path: Path, leaf: Any) -> bool:
    """Default selection: conv and dense kernels, leaves named ``kernel`` or ``weight``
    with ndim ≥ 2; ``path`` is the leaf's tuple of key names."""
    return leaf_name(path) in KERNEL_NAMES and jnp.ndim(leaf) >= 2


def under(prefix: str, where: Where = is_kernel) -> Where:
    """A ``where`` predicate: the leaves ``where`` selects whose path has an entry (module
    name, index or leaf name) starting with ``prefix``."""

    def select(path: Path, leaf: Any) -> bool:
        return where(path, leaf) and any(str(p).startswith(prefix) for p in path)

    return select


def not_under(prefix: str, where: Where = is_kernel) -> Where:
    """A ``where`` predicate: the leaves ``where`` selects whose path has no entry (module
    name, index or leaf name) starting with ``prefix``."""

    def select(path: Path, leaf: Any) -> bool:
        return where(path, leaf) and not any(str(p).startswith(prefix) for p in path)

    return select


def scaled_noise(weight: jax.Array, normal: jax.Array, device: DeviceModel,
                 scale: jax.Array) -> jax.Array:
    """ΔW for one tensor from its standard normal draw ``normal`` (float32, W's shape)."""
    scale = jax.lax.stop_gradient(scale).astype(jnp.float32)
    std = device.noise_std(scale)
    noise = normal * std
    if device.state_factor != 1:
        ratio = jnp.abs(jax.lax.stop_gradient(weight)).astype(jnp.float32) / jnp.where(
            scale > 0, scale, 1.0
        )
        in_band = (ratio > STATE_BAND[0]) & (ratio < STATE_BAND[1])
        noise = jnp.where(in_band, noise * device.state_factor, noise)
    return noise.astype(weight.dtype)


#: What :func:`perturb` does when its selection matches no leaf.
ON_EMPTY = ("warn", "raise", "ignore")


class NoWeightsSelected(ValueError):
    """:func:`perturb` selected no leaf of the params tree (``on_empty="raise"``); also
    raised by :func:`monte_carlo` and by a train step whose ``where`` selects nothing."""


def perturb(params: Any, key: jax.Array, device: DeviceModel | float, *,
            where: Where | None = None, on_empty: str = "warn") -> Any:
    """Return ``params`` with every selected weight replaced by ``W + stop_gradient(ΔW)``.

    Args:
      params: any pytree of arrays.
      key: a ``jax.random`` key; each selected leaf gets ``fold_in(key, i)``
        for its index i among the selected leaves, so leaves of equal shape
        get independent noise and the same key gives the same noise.
      device: the :class:`DeviceModel` (σ, bits, preset, normalisation, scale), or a
        number σ for the default device model. σ is the device variation σ_d, in
        conductance levels (``level``; a fraction of one device's range under ``range``):
        ΔW has std 0.26·σ·max|W| under the default
        ``level`` normalisation and plain (RRAM1) 8-bit/2-bit device, in W's units
        (presets rescale it: :meth:`DeviceModel.noise_std`).
      where: ``where(path, leaf) -> bool`` with ``path`` a tuple of key names;
        default :func:`is_kernel` (conv and dense kernels only).
      on_empty: when ``where`` selects no leaf: ``"warn"`` (default; the params come
        back unchanged with a warning naming the leaves it saw), ``"raise"``
        (:class:`NoWeightsSelected`) or ``"ignore"``.

    Returns:
      A pytree of the same structure and dtypes (the noise is drawn in float32 and cast
      to each weight's float dtype; integer weights are refused); unselected leaves are
      the same objects. A concrete σ = 0 returns ``params`` itself, without selecting.
    """
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    device = as_device(device)
    if device.is_noiseless:
        return params
    default_rule = where is None
    where = is_kernel if where is None else where
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    selected = [where(path_names(path), leaf) for path, leaf in leaves_with_paths]
    leaves = [leaf for _, leaf in leaves_with_paths]
    chosen = [leaf for leaf, sel in zip(leaves, selected, strict=True) if sel]
    if not chosen:
        _report_empty_selection(leaves_with_paths, default_rule, on_empty)
        return params
    _require_float_weights(leaves_with_paths, selected)
    if device.scale == "model":
        model_scale = jnp.max(jnp.stack([jnp.max(jnp.abs(w)).astype(jnp.float32) for w in chosen]))

    # One fused draw for all leaves (neft_jax.draws): the same numbers as drawing each
    # leaf from fold_in(key, i), with one kernel to compile instead of one per shape.
    normals = iter(standard_normals([jax.random.fold_in(key, i) for i in range(len(chosen))],
                                    [jnp.shape(w) for w in chosen]))
    out = []
    for (path, leaf), sel in zip(leaves_with_paths, selected, strict=True):
        if not sel:
            out.append(leaf)
            continue
        scale = model_scale if device.scale == "model" else layer_scale(
            leaf, device.stacked is not None and device.stacked(path_names(path), leaf))
        noise = scaled_noise(leaf, next(normals), device, scale)
        out.append(leaf + jax.lax.stop_gradient(noise))
    return jax.tree_util.tree_unflatten(treedef, out)


def layer_scale(leaf: jax.Array, stacked: bool = False) -> jax.Array:
    """max|W| of one tensor, a scalar; for a ``stacked`` leaf (layers along axis 0) one
    per slice, shape ``(L, 1, …, 1)``."""
    if stacked and jnp.ndim(leaf) >= 2:
        return jnp.max(jnp.abs(leaf), axis=tuple(range(1, jnp.ndim(leaf))), keepdims=True)
    return jnp.max(jnp.abs(leaf))


def _require_float_weights(leaves_with_paths, selected) -> None:
    """A selected leaf of integer (or bool) dtype would round its noise away: refuse it."""
    for (path, leaf), sel in zip(leaves_with_paths, selected, strict=True):
        if sel and not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise TypeError(
                f"perturb: the selected weight {'/'.join(map(str, path_names(path)))} has dtype "
                f"{jnp.result_type(leaf)}, whose values cannot hold the noise (it would be "
                "rounded away); give perturb float weights, e.g. "
                "jax.tree.map(lambda w: w.astype(jnp.float32), params)")


def as_device(device: Any) -> DeviceModel:
    """``device``, or ``DeviceModel(sigma=device)`` for a number σ (shorthand: the default
    device model, eq. (5) as printed); a one-line TypeError for anything else."""
    if isinstance(device, DeviceModel):
        return device
    if isinstance(device, (int, float)) and not isinstance(device, bool) or (
            hasattr(device, "dtype") and jnp.ndim(device) == 0):
        return DeviceModel(sigma=device)
    raise TypeError(f"device must be a neft_jax.DeviceModel (e.g. DeviceModel(sigma=0.4)) or "
                    f"a number σ, got {type(device).__name__}")


def seen_leaf_names(leaves_with_paths, limit: int = 12) -> str:
    """The sorted distinct leaf names of a flattened tree, the first ``limit`` of them, for
    an error that says what a selection saw."""
    seen = sorted({str(leaf_name(path_names(path))) for path, _ in leaves_with_paths})
    return f"{seen[:limit]}{' ...' if len(seen) > limit else ''}"


def _report_empty_selection(leaves_with_paths, default_rule: bool, on_empty: str) -> None:
    if on_empty == "ignore":
        return
    rule = "the default selection" if default_rule else "the selection"
    message = (f"perturb: no leaf was perturbed: {rule} (by default leaves named "
               f"{' or '.join(KERNEL_NAMES)} with ndim >= 2) matched none of this tree's leaf "
               f"names {seen_leaf_names(leaves_with_paths)}. Pass "
               "where=lambda path, leaf: ... (path: a tuple of key names) to choose the "
               "weights")
    if on_empty == "raise":
        raise NoWeightsSelected(message + ".")
    warnings.warn(message + ", or on_empty='ignore' to silence this.", stacklevel=3)
