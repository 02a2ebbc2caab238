"""Device model of a non-volatile-memory crossbar (method.md §1, paper eqs. 2–5).

A weight is stored as an ``weight_bits``-bit number spread over
``weight_bits / device_bits`` devices of ``device_bits`` bits each. Every
device's conductance deviates by Gaussian noise of standard deviation
``sigma``: in conductance levels (one level moves W by max|W|/255) under the
default ``"level"`` normalisation, a fraction of one device's full conductance range
(3 levels for a 2-bit device) under ``"range"``. The resulting
weight error is Gaussian with standard deviation::

    std(ΔW) = sigma · scale · sqrt(Σ_j 4^{jN}) / D

where ``scale = max|W|`` and ``D`` depends on the normalisation
(``"range"``: ``D = Σ_j 2^{jN}``; ``"level"``: ``D = 2^M − 1``).

State-dependent presets (RRAM1, FeFET2, RRAM4, FeFET6) multiply the noise of
weights with ``0.25 < |w|/scale < 0.75`` by a factor ``k`` and shrink the
base σ to ``σ / sqrt(0.4 k² + 0.6)``.

:class:`DeviceModel` is a pytree whose only leaf is ``sigma``: under ``jit``
a new σ is a new value, not a new program.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NORMALISATIONS = ("range", "level")
SCALES = ("layer", "model")

#: State-dependent variation factor k of each device preset.
PRESETS: dict[str, int] = {"RRAM1": 1, "FeFET2": 2, "RRAM4": 4, "FeFET6": 6}

#: Band of |w|/scale (exclusive on both ends) whose noise is multiplied by k.
STATE_BAND = (0.25, 0.75)


def _is_concrete_number(value: Any) -> bool:
    """A Python/NumPy scalar or a concrete (not traced) 0-d jax array."""
    if isinstance(value, jax.core.Tracer):
        return False
    return isinstance(value, numbers.Real) or (
        isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0
    )


def check_nonnegative_scalar(value: Any, name: str, several: str = "") -> None:
    """``value`` is one finite real number >= 0 (a traced scalar is checked for its shape
    and dtype only); a one-line ValueError/TypeError that names ``name`` otherwise.
    ``several``: the hint given when an array of several values is passed."""
    if _is_concrete_number(value) and not isinstance(value, bool):
        if np.iscomplexobj(value):
            raise ValueError(f"{name} must be a real number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        return
    if isinstance(value, (jax.core.Tracer, np.ndarray, jax.Array)):
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be one number, got an array of shape "
                             f"{np.shape(value)}{several}")
        if not jnp.issubdtype(value.dtype, jnp.floating) and \
                not jnp.issubdtype(value.dtype, jnp.integer):
            raise ValueError(f"{name} must be a real number, got dtype {value.dtype}")
        return
    raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")


def _check_sigma(sigma: Any) -> None:
    """σ is one finite number >= 0 (a traced scalar is checked for its shape only)."""
    check_nonnegative_scalar(sigma, "DeviceModel.sigma", "; for several σ, build one "
                             "DeviceModel per σ or jax.vmap over them")


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """Weight-noise model of a compute-in-memory device.

    Attributes:
      sigma: device variation σ_d (≥ 0): in conductance levels under ``"level"``
        (the default), a fraction of one device's full range under ``"range"``
        (method.md §1). May be a traced scalar inside ``jit``.
      weight_bits: M, bits per stored weight.
      device_bits: N, bits per device; must divide ``weight_bits``.
      state_factor: k of the state-dependent variation (1 = plain model).
      normalisation: ``"level"`` (default: eq. 5 as printed, ``D = 2^M − 1``,
        std 0.26·σ·scale for the plain model with the default 8-bit weights on 2-bit
        devices, the σ of the paper's tables; presets rescale it, :meth:`noise_std`;
        docs/method.md §1) or
        ``"range"`` (the authors' released code, ``D = Σ_j 2^{jN}``, 3× the std).
      scale: ``"layer"`` (max|W| per tensor, default) or ``"model"``
        (max|W| over every perturbed tensor).
      stacked: ``stacked(path, leaf) -> bool`` for models whose layers share one tensor
        stacked along axis 0 (flax ``nn.scan``/``nn.vmap`` with ``variable_axes={"params":
        0}``): with ``scale="layer"``, each slice of such a leaf gets its own max|W|, as
        separate layers would. None (default): every tensor is one layer. Pass one named
        function: the device model is a static argument of jitted code.
    """

    sigma: Any = 0.0
    weight_bits: int = 8
    device_bits: int = 2
    state_factor: int = 1
    normalisation: str = "level"
    scale: str = "layer"
    stacked: Callable[[tuple, Any], bool] | None = None

    def __post_init__(self):
        _check_sigma(self.sigma)
        for name in ("weight_bits", "device_bits", "state_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"DeviceModel.{name} must be a positive integer, got {value!r}")
        if self.weight_bits % self.device_bits:
            raise ValueError(
                "DeviceModel.weight_bits must be a multiple of device_bits, got "
                f"weight_bits={self.weight_bits}, device_bits={self.device_bits}"
            )
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"DeviceModel.normalisation must be one of {NORMALISATIONS}, "
                f"got {self.normalisation!r}"
            )
        if self.scale not in SCALES:
            raise ValueError(f"DeviceModel.scale must be one of {SCALES}, got {self.scale!r}")
        if self.stacked is not None and not callable(self.stacked):
            raise TypeError(f"DeviceModel.stacked must be a function (path, leaf) -> bool or "
                            f"None, got {type(self.stacked).__name__}")

    @classmethod
    def preset(cls, name: str, sigma: Any = 0.0, **kwargs) -> DeviceModel:
        """A device preset: ``RRAM1``, ``FeFET2``, ``RRAM4`` or ``FeFET6`` (state factor k =
        1, 2, 4, 6); ``sigma`` and ``kwargs`` as :class:`DeviceModel`'s."""
        if name not in PRESETS:
            raise ValueError(f"unknown device preset {name!r}; allowed: {sorted(PRESETS)}")
        return cls(sigma=sigma, state_factor=PRESETS[name], **kwargs)

    def replace(self, **changes) -> DeviceModel:
        """A copy with ``changes`` (field names as the constructor's)."""
        return dataclasses.replace(self, **changes)

    @property
    def num_devices(self) -> int:
        """Devices per weight, M / N."""
        return self.weight_bits // self.device_bits

    @property
    def bit_weight_norm(self) -> float:
        """sqrt(Σ_j 4^{jN}) / D: std of ΔW per unit σ and unit scale (k = 1)."""
        n = self.device_bits
        root_sum_squares = math.sqrt(sum(4 ** (j * n) for j in range(self.num_devices)))
        if self.normalisation == "range":
            denominator = sum(2 ** (j * n) for j in range(self.num_devices))
        else:
            denominator = 2**self.weight_bits - 1
        return root_sum_squares / denominator

    @property
    def base_sigma_factor(self) -> float:
        """1 / sqrt(0.4 k² + 0.6): how a preset shrinks σ outside the ×k band."""
        k = self.state_factor
        return 1.0 / math.sqrt(0.4 * k * k + 0.6)

    @property
    def is_noiseless(self) -> bool:
        """True when σ is a concrete zero (then :func:`perturb` is the identity)."""
        return _is_concrete_number(self.sigma) and float(self.sigma) == 0.0

    def noise_std(self, scale: Any, in_band: bool = False) -> Any:
        """std of ΔW for a tensor with max|W| = ``scale`` (a number or an array that
        broadcasts; same units as W); ``in_band``: a weight with 0.25 < |w|/scale < 0.75,
        whose noise the preset's k multiplies."""
        factor = self.state_factor if in_band else 1
        return self.sigma * self.base_sigma_factor * factor * self.bit_weight_norm * scale


def _flatten(device: DeviceModel):
    aux = tuple(getattr(device, f.name) for f in dataclasses.fields(device)[1:])
    return (device.sigma,), aux


def _unflatten(aux, children):
    device = object.__new__(DeviceModel)
    names = [f.name for f in dataclasses.fields(DeviceModel)]
    for name, value in zip(names, (*children, *aux), strict=True):
        object.__setattr__(device, name, value)
    return device


jax.tree_util.register_pytree_node(DeviceModel, _flatten, _unflatten)
