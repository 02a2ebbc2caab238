"""Time a 3×3 'SAME' conv forward three ways on the current backend (fp32, NHWC).

    python experiments/profile_conv_forward.py

XLA's convolution, im2col (``lax.conv_general_dilated_patches``) + one GEMM,
and nine shifted GEMMs summed; each checked against XLA's result. Prints ms and
GFLOP/s per layer shape of VGG-8/ResNet-18 at batch 128. It shows whether a
hand-written forward could lift Monte Carlo evaluation on CPU (it could not on
CPU-2: docs/studies/cpu_conv.md).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax import lax

SHAPES = [(128, 32, 64, 64), (128, 32, 128, 128), (128, 16, 128, 128), (128, 16, 256, 256),
          (128, 8, 256, 256)]  # (batch, H = W, C_in, C_out)
NUMBERS = ("NHWC", "HWIO", "NHWC")


def _time_ms(fn, *args, repeats=5):
    fn = jax.jit(fn)
    out = fn(*args).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    out.block_until_ready()
    return (time.perf_counter() - start) / repeats * 1e3, out


def xla_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NUMBERS)


def im2col_conv(x, w):
    """Patches ``(B, H, W, C·9)`` (channel-major) times the reshaped kernel."""
    patches = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME",
                                               dimension_numbers=NUMBERS)
    c_in, c_out = w.shape[2:]
    return patches @ jnp.transpose(w, (2, 0, 1, 3)).reshape(c_in * 9, c_out)


def shifted_gemm_conv(x, w):
    """Σ over the 9 taps of a shifted input times that tap's ``(C_in, C_out)`` matrix."""
    h, wd = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(padded[:, i:i + h, j:j + wd, :] @ w[i, j] for i in range(3) for j in range(3))


def main():
    key = jax.random.key(0)
    print(f"backend={jax.default_backend()}; ms (GFLOP/s), max |diff| vs XLA")
    for batch, size, c_in, c_out in SHAPES:
        kx, kw = jax.random.split(key)
        x = jax.random.normal(kx, (batch, size, size, c_in))
        w = jax.random.normal(kw, (3, 3, c_in, c_out)) * 0.05
        gflop = 2 * batch * size * size * c_in * c_out * 9 / 1e9
        ref_ms, ref = _time_ms(xla_conv, x, w)
        cells = [f"xla {ref_ms:.1f} ({gflop / ref_ms * 1e3:.0f})"]
        for name, fn in (("im2col", im2col_conv), ("shifted", shifted_gemm_conv)):
            ms, out = _time_ms(fn, x, w)
            cells.append(f"{name} {ms:.1f} ({gflop / ms * 1e3:.0f}, "
                         f"{float(jnp.max(jnp.abs(out - ref))):.0e})")
        print(f"{size}x{size} {c_in}->{c_out}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
