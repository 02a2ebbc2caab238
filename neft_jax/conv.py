"""A convolution whose backward pass runs in micro-batches (a CPU speed-up).

XLA:CPU computes a convolution's filter gradient for a batch of 128 at 30–70
GFLOP/s, against 130–190 for the forward (docs/studies/cpu_conv.md, "Why CPU training
was slower than the forward pass suggests, and the fix"). The same gradient
computed as a sum over micro-batches of 8–16 images, unrolled in one program,
runs about twice as fast: each piece fits the cache. :func:`micro_batched_conv`
keeps the forward convolution whole and computes both halves of the backward
pass (input gradient, filter gradient) micro-batch by micro-batch. The result
is the same function; only the order of the filter gradient's summation
changes (≈ 1e-5 relative in fp32).

``micro_batched_conv(8)`` is a drop-in for ``jax.lax.conv_general_dilated``
(Flax: ``nn.Conv(..., conv_general_dilated=micro_batched_conv(8))``).
:func:`resolve_backward_micro_batch` picks the size per backend: 8 on CPU,
off (``None``) on GPU/TPU, where the whole batch is fastest.

XLA:CPU is also slow on a conv with one input channel (a model's first layer
on MNIST): 3×3, 1 → 8 channels on 500 images of 32×32 runs at ≈ 6 GFLOP/s.
:func:`model_conv`, the conv of :mod:`neft_jax.models`, computes such a conv's
forward on CPU as a sum of nine shifted, scaled copies of the input
(:func:`shifted_sum_conv`, one fused loop, ≈ 13× faster there) and its gradients
with XLA's conv as before; the values differ from XLA's by summation order only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

#: Micro-batch of the backward pass on CPU (measured best on CPU-2 for 32×32 and
#: 16×16 convs: docs/studies/cpu_conv.md); other backends run the backward pass whole.
CPU_BACKWARD_MICRO_BATCH = 8

#: Each micro-batch holds at least this many output pixels (images × H_out × W_out):
#: smaller maps get larger micro-batches (8×8: 16 images, 4×4: 64), as measured.
MIN_ROWS = 1024


def resolve_backward_micro_batch(value: int | None, backend: str) -> int | None:
    """The micro-batch a run uses: ``value`` > 0 as given, 0 = off, None = by backend.

    Returns None (whole batch) or a positive int.
    """
    if value is None:
        return CPU_BACKWARD_MICRO_BATCH if backend == "cpu" else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"backward_micro_batch must be None (auto), 0 (off) or an "
                         f"integer > 0, got {value!r}")
    return value or None


def micro_batched_conv(micro_batch: int):
    """``lax.conv_general_dilated`` with its gradients computed ``micro_batch`` images at a time.

    The batch is the lhs's batch dimension (from ``dimension_numbers``, axis 0
    by default). A micro-batch grows to hold at least :data:`MIN_ROWS` output
    pixels; a batch no larger than that runs as usual.
    """
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
        raise ValueError(f"micro_batch must be an integer > 0, got {micro_batch!r}")

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, batch_group_count=1,
             precision=None, preferred_element_type=None):
        whole = functools.partial(
            lax.conv_general_dilated, window_strides=window_strides, padding=padding,
            lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type)
        out_shape = jax.eval_shape(whole, lhs, rhs).shape
        numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        batch_axis = numbers.lhs_spec[0]
        out_pixels = 1
        for axis in numbers.out_spec[2:]:
            out_pixels *= out_shape[axis]
        size = max(micro_batch, -(-MIN_ROWS // out_pixels))
        if lhs.shape[batch_axis] <= size or batch_group_count != 1:
            return whole(lhs, rhs)
        return _chunked_backward(whole, size, batch_axis, numbers.out_spec[0])(lhs, rhs)

    return conv


def _chunked_backward(whole, micro_batch: int, batch_axis: int, out_batch_axis: int):
    """``whole`` (a conv of (lhs, rhs)) with a custom VJP that runs per micro-batch."""

    def backward(lhs, rhs, cotangent):
        size = lhs.shape[batch_axis]
        lhs_grads, rhs_grad = [], None
        for start in range(0, size, micro_batch):
            stop = min(start + micro_batch, size)
            piece = lax.slice_in_dim(lhs, start, stop, axis=batch_axis)
            piece_cotangent = lax.slice_in_dim(cotangent, start, stop, axis=out_batch_axis)
            _, vjp = jax.vjp(whole, piece, rhs)
            lhs_grad, piece_rhs_grad = vjp(piece_cotangent)
            lhs_grads.append(lhs_grad)
            rhs_grad = piece_rhs_grad if rhs_grad is None else rhs_grad + piece_rhs_grad
        return jnp.concatenate(lhs_grads, axis=batch_axis), rhs_grad

    return _with_gradients(whole, backward)


def _with_gradients(forward, backward):
    """A function of (lhs, rhs) whose values are ``forward(lhs, rhs)`` and whose gradients
    are ``backward(lhs, rhs, cotangent) -> (lhs_grad, rhs_grad)``."""

    @jax.custom_vjp
    def conv(lhs, rhs):
        return forward(lhs, rhs)

    conv.defvjp(lambda lhs, rhs: (forward(lhs, rhs), (lhs, rhs)),
                lambda residuals, cotangent: backward(*residuals, cotangent))
    return conv


def model_conv(micro_batch: int | None):
    """The conv of :mod:`neft_jax.models`: ``lax.conv_general_dilated`` with the gradients in
    micro-batches of ``micro_batch`` images (None: the whole batch), and on CPU the forward
    of a one-input-channel float32 conv (NHWC, HWIO, no dilation or groups) as a shifted
    sum (:func:`shifted_sum_conv`)."""
    gradients = micro_batched_conv(micro_batch) if micro_batch else lax.conv_general_dilated

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, batch_group_count=1,
             precision=None, preferred_element_type=None):
        whole = functools.partial(
            gradients, window_strides=window_strides, padding=padding,
            lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type)
        if (jax.default_backend() == "cpu" and feature_group_count == 1
                and batch_group_count == 1 and preferred_element_type is None
                and _is_one_channel_nhwc(lhs, rhs, dimension_numbers)
                and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))):
            forward = functools.partial(shifted_sum_conv, window_strides=window_strides,
                                        padding=padding)
            return _forward_by(forward, whole)(lhs, rhs)
        return whole(lhs, rhs)

    return conv


def _is_one_channel_nhwc(lhs, rhs, dimension_numbers) -> bool:
    if lhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        return False
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return (tuple(numbers.lhs_spec) == (0, 3, 1, 2) and tuple(numbers.rhs_spec) == (3, 2, 0, 1)
            and tuple(numbers.out_spec) == (0, 3, 1, 2) and lhs.shape[3] == 1)


def shifted_sum_conv(lhs, rhs, window_strides, padding):
    """A conv of a one-channel input as Σ over kernel taps of shifted input × tap.

    ``lhs`` (N, H, W, 1), ``rhs`` (kh, kw, 1, C_out) → (N, H_out, W_out, C_out), as
    ``lax.conv_general_dilated`` with NHWC/HWIO/NHWC, ``window_strides`` and ``padding``
    ("SAME", "VALID" or ((low, high), (low, high))). The taps are summed row by row."""
    n, h, w, _ = lhs.shape
    kh, kw, _, _ = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads((h, w), (kh, kw), window_strides, padding)
    (top, bottom), (left, right) = padding
    sh, sw = window_strides
    # The taps go through a product with the identity (exact: x·1 plus zeros), a dot,
    # which XLA does not fuse into the sum below. Otherwise it fuses the kernel's
    # producer, e.g. a noisy kernel's whole noise draw, into the sum and recomputes it
    # for every output element (6× slower than XLA's conv in a train step);
    # lax.optimization_barrier does not prevent this on CPU (removed before fusion).
    taps = jnp.eye(kh * kw, dtype=rhs.dtype) @ rhs.reshape(kh * kw, rhs.shape[3])
    padded = lax.pad(lhs, jnp.zeros((), lhs.dtype),
                     ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    out_h = (h + top + bottom - kh) // sh + 1
    out_w = (w + left + right - kw) // sw + 1
    out = None
    for dy in range(kh):
        for dx in range(kw):
            window = lax.slice(padded, (0, dy, dx, 0),
                               (n, dy + (out_h - 1) * sh + 1, dx + (out_w - 1) * sw + 1, 1),
                               (1, sh, sw, 1))
            term = window * taps[dy * kw + dx]
            out = term if out is None else out + term
    return out


def _forward_by(forward, whole):
    """``whole`` (a conv of (lhs, rhs)) with its values computed by ``forward`` and its
    gradients by ``whole``'s own."""

    def backward(lhs, rhs, cotangent):
        _, vjp = jax.vjp(whole, lhs, rhs)
        return vjp(cotangent)

    return _with_gradients(forward, backward)
