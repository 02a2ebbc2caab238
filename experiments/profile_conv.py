"""Where a CPU train step's time goes: each VGG-8 or ResNet-18 conv's forward,
input-gradient and filter-gradient convolution timed alone, beside the same FLOPs as
one GEMM.

    python experiments/profile_conv.py [--model vgg8|resnet18] [--batch-size 128] [--json]

A train step costs ≈ 3× a forward in FLOPs (forward, gradient w.r.t. inputs,
gradient w.r.t. filters). This script shows which of the three XLA runs below
the rate of the forward convolution on this backend, and what an im2col + GEMM
formulation of the filter gradient achieves for the same layer, and what the
whole backward pass (input + filter gradient) costs when computed in micro-batches
(``neft_jax.conv.micro_batched_conv``, the default on CPU) against the whole batch.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax.conv import micro_batched_conv
from neft_jax.harness.tuning import DIMS, model_convs
from neft_jax.models import MODELS


def convs(model: str) -> list[tuple[int, ...]]:
    """``model``'s distinct convs at width 1 on 32×32 RGB inputs, read from the model:
    (H, C_in, C_out, kernel, stride, count)."""
    return model_convs(model, 1.0, 3)


def conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=DIMS)


def filter_grad_im2col(x, g, kernel=3, stride=1):
    """∂L/∂W of a SAME conv as one GEMM: patches(x)ᵀ · g, shape (k, k, C_in, C_out)."""
    patches = jax.lax.conv_general_dilated_patches(
        x, (kernel, kernel), (stride, stride), "SAME", dimension_numbers=DIMS)  # (N,H',W',C_in·k²)
    n, h, w, k = patches.shape
    c_in = x.shape[-1]
    grad = patches.reshape(n * h * w, k).T @ g.reshape(n * h * w, -1)  # (C_in·k², C_out)
    return grad.reshape(c_in, kernel, kernel, -1).transpose(1, 2, 0, 3)


def _time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _passes(timing: str) -> int:
    """Convolutions' worth of FLOPs a timing covers: 2 for a whole backward pass."""
    return 2 if timing.startswith("backward") else 1


def profile_layer(batch, size, c_in, c_out, kernel, stride, count, key, micro_batch=8):
    """Times (ms, for all ``count`` such convs) and GFLOP/s of one conv shape."""
    kx, kw, kg = jax.random.split(key, 3)
    out = size // stride
    x = jax.random.normal(kx, (batch, size, size, c_in))
    w = jax.random.normal(kw, (kernel, kernel, c_in, c_out)) * 0.05
    g = jax.random.normal(kg, (batch, out, out, c_out))
    _, vjp_x = jax.vjp(lambda x_: conv(x_, w, stride), x)
    _, vjp_w = jax.vjp(lambda w_: conv(x, w_, stride), w)
    forward = jax.jit(lambda x_, w_: conv(x_, w_, stride))
    input_grad = jax.jit(lambda g_: vjp_x(g_)[0])
    filter_grad = jax.jit(lambda g_: vjp_w(g_)[0])
    im2col = jax.jit(lambda x_, g_: filter_grad_im2col(x_, g_, kernel, stride))
    np.testing.assert_allclose(im2col(x, g), filter_grad(g), rtol=2e-3, atol=2e-2)
    micro = micro_batched_conv(micro_batch)
    _, vjp_whole = jax.vjp(lambda x_, w_: conv(x_, w_, stride), x, w)
    _, vjp_micro = jax.vjp(lambda x_, w_: micro(x_, w_, (stride, stride), "SAME",
                                                dimension_numbers=DIMS), x, w)
    backward = jax.jit(vjp_whole)
    backward_micro = jax.jit(vjp_micro)
    np.testing.assert_allclose(backward_micro(g)[1], backward(g)[1], rtol=1e-3, atol=1e-2)
    a = jax.random.normal(kx, (batch * out * out, kernel * kernel * c_in))
    b = jax.random.normal(kg, (kernel * kernel * c_in, c_out))
    gemm = jax.jit(jnp.matmul)
    gflop = 2 * batch * out * out * kernel * kernel * c_in * c_out / 1e9
    times = {"forward": _time(forward, x, w), "input_grad": _time(input_grad, g),
             "filter_grad": _time(filter_grad, g), "filter_grad_im2col": _time(im2col, x, g),
             "gemm_same_flops": _time(gemm, a, b), "backward": _time(backward, g),
             "backward_micro_batched": _time(backward_micro, g)}
    flops = {k: gflop * _passes(k) for k in times}
    name = f"{size}x{size} {c_in}->{c_out} k{kernel}" + (f" s{stride}" if stride > 1 else "")
    return {"layer": name + (f" ×{count}" if count > 1 else ""), "gflop": count * gflop,
            **{f"{k}_ms": 1e3 * count * v for k, v in times.items()},
            **{f"{k}_gflops": flops[k] / v for k, v in times.items()}}


def main(argv=None):
    from neft_jax.harness.cli import CommandParser

    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vgg8")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--backward-micro-batch", type=int, default=8,
                        help="micro-batch of the micro-batched backward column")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.backward_micro_batch < 1:
        parser.error("--batch-size and --backward-micro-batch must be >= 1")
    key = jax.random.key(0)
    rows = [profile_layer(args.batch_size, *layer, jax.random.fold_in(key, i),
                          micro_batch=args.backward_micro_batch)
            for i, layer in enumerate(convs(args.model))]
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k.endswith("_ms")}
    total_gflop = sum(r["gflop"] for r in rows)
    total.update({f"{k[:-3]}_gflops": total_gflop * _passes(k) / (total[k] / 1e3)
                  for k in list(total)})
    for row in rows + [{"layer": "total", **total}]:
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(f"{row['layer']:>18s}  " + "  ".join(
            f"{k[:-3]} {row[k]:7.1f} ms" + (f" ({row[k[:-3] + '_gflops']:5.0f} GFLOP/s)"
                                            if k[:-3] + "_gflops" in row else "")
            for k in row if k.endswith("_ms")), flush=True)


if __name__ == "__main__":
    main()
