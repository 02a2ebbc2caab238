"""Standard normal draws for many tensors at once, bit-identical to ``jax.random.normal``.

``perturb`` draws one Gaussian tensor per selected leaf, each from its own key. Drawn
one by one, every distinct leaf shape becomes its own threefry + erf⁻¹ kernel, and on a
CPU each takes XLA ≈ 2 s to compile: a VGG-8 train step spent ≈ 20 s compiling its
noise alone. :func:`standard_normals` draws all leaves in one kernel instead. With
jax's partitionable threefry (the default), element ``i`` of ``jax.random.normal(k,
shape)`` depends only on ``k`` and the flat index ``i``, so hashing the concatenated
(key, index) pairs in one call and applying jax's own bits → uniform → normal steps gives
exactly the same numbers (``tests/test_perturbation.py`` checks bit equality). Where
that does not hold (another PRNG implementation, the non-partitionable threefry), it
falls back to the per-leaf draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p

#: jax's float32 uniform on (lo, 1) before erf⁻¹ (``jax.random.normal``'s interval).
_LO = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
_HI = np.float32(1.0)


def standard_normals(keys: Sequence[jax.Array],
                     shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """``[jax.random.normal(k, s, float32) for k, s in zip(keys, shapes)]``, bit for bit,
    drawn in one fused kernel when jax's threefry allows it (see the module docstring)."""
    if not keys:
        return []
    sizes = [math.prod(shape) for shape in shapes]
    if not all(fusable(key) for key in keys) or sum(sizes) >= 2 ** 32:
        return [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes, strict=True)]
    words = jnp.concatenate([jnp.broadcast_to(_key_data(key), (n, 2))  # (Σn, 2) uint32
                             for key, n in zip(keys, sizes, strict=True)])
    index = jnp.concatenate([lax.iota(jnp.uint32, n) for n in sizes])
    bits_hi, bits_lo = threefry2x32_p.bind(words[:, 0], words[:, 1], jnp.zeros_like(index),
                                           index)
    normals = _normal_from_bits(bits_hi ^ bits_lo)
    out, start = [], 0
    for shape, n in zip(shapes, sizes, strict=True):
        out.append(normals[start:start + n].reshape(shape))
        start += n
    return out


def fusable(key: jax.Array) -> bool:
    """Whether ``key``'s draws follow the partitionable threefry layout (see module doc)."""
    if not jax.config.jax_threefry_partitionable:
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == "threefry2x32"
    return (jax.config.jax_default_prng_impl == "threefry2x32" and key.dtype == jnp.uint32
            and key.shape[-1:] == (2,))


def _key_data(key: jax.Array) -> jax.Array:
    """The (2,) uint32 words of a threefry key, typed or raw."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _normal_from_bits(bits: jax.Array) -> jax.Array:
    """jax's float32 ``normal`` from 32 random bits: uniform on (lo, 1), then √2·erf⁻¹."""
    float_bits = lax.shift_right_logical(bits, jnp.array(32 - 23, jnp.uint32))
    float_bits = lax.bitwise_or(float_bits, jnp.asarray(np.array(1.0, np.float32).view(
        np.uint32), dtype=jnp.uint32))
    floats = lax.bitcast_convert_type(float_bits, jnp.float32) - jnp.array(1.0, jnp.float32)
    lo, hi = jnp.asarray(_LO, jnp.float32), jnp.asarray(_HI, jnp.float32)
    uniform = lax.max(lo, floats * (hi - lo) + lo)
    return lax.mul(np.array(np.sqrt(2), np.float32), lax.erf_inv(uniform))
