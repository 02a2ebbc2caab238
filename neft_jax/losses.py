"""Negative-feedback loss (method.md §3, paper eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; logits ``(B, K)``, integer labels ``(B,)``."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def feedback_coefficients(num_feedback: int, decay: float = 0.1) -> list[float]:
    """Coefficients ``decay^(i-1)`` of feedback logits i = 1..s (before α)."""
    return [decay**i for i in range(num_feedback)]


def feedback_term(
    feedback_logits: Sequence[jax.Array],
    alpha: jax.Array | float,
    decay: float | Sequence[float] = 0.1,
) -> jax.Array:
    """``α · Σ_i c_i · z_i`` of eq. (1), shape ``(B, K)`` (zeros of no shape when s = 0).

    ``decay`` is either the geometric factor (c_i = decay^(i−1)) or an explicit
    sequence of coefficients c_1..c_s (all ones for "equal coefficients"; the
    Table V exit drops keep each remaining exit's own 0.1^(i−1)).
    """
    num_feedback = len(feedback_logits)
    if np.ndim(decay) == 0:  # a Python, NumPy or jax scalar
        coefficients = feedback_coefficients(num_feedback, decay)
    else:
        coefficients = list(decay)
        if len(coefficients) != num_feedback:
            raise ValueError(
                f"decay must give one coefficient per feedback logit ({num_feedback}), "
                f"got {len(coefficients)}"
            )
    return alpha * sum((c * z for c, z in zip(coefficients, feedback_logits, strict=True)),
                       jnp.float32(0.0))


def combine_feedback_logits(
    logits: jax.Array,
    feedback_logits: Sequence[jax.Array],
    alpha: jax.Array | float,
    decay: float | Sequence[float] = 0.1,
) -> jax.Array:
    """``(z − α · Σ_i c_i · z_i) / (s + 1)``, shape ``(B, K)``; ``decay`` as in
    :func:`feedback_term`."""
    feedback = feedback_term(feedback_logits, alpha, decay)
    return subtract_feedback(logits, feedback, len(feedback_logits))


def subtract_feedback(logits: jax.Array, feedback: jax.Array, num_feedback: int) -> jax.Array:
    """``(z − feedback) / (s + 1)``: eq. (1)'s logits given its feedback term, ``(B, K)``."""
    return (logits - feedback) / (num_feedback + 1)


def feedback_ratio(logits: jax.Array, feedback: jax.Array) -> jax.Array:
    """RMS of the feedback term over RMS of the backbone logits (a scalar, ≥ 0)."""
    return _rms(jnp.broadcast_to(feedback, logits.shape)) / jnp.maximum(_rms(logits), 1e-30)


def _rms(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))


def negative_feedback_loss(
    logits: jax.Array,
    feedback_logits: Sequence[jax.Array],
    labels: jax.Array,
    alpha: jax.Array | float,
    decay: float | Sequence[float] = 0.1,
) -> jax.Array:
    """Eq. (1): ``CE((z − α · Σ_{i=1}^{s} decay^{i−1} · z_i) / (s + 1), y)``.

    Args:
      logits: backbone logits z, ``(B, K)``.
      feedback_logits: s ≥ 0 arrays ``(B, K)``: exit logits (IRS, shallowest
        first) or logits of extra noisier forward passes (OVF).
      labels: integer labels ``(B,)``.
      alpha: feedback strength α, a scalar ≥ 0 (may be traced).
      decay: geometric decay of the coefficients, or explicit coefficients.

    Returns:
      The scalar cross-entropy in nats, float32, averaged over the batch.
    """
    return cross_entropy(combine_feedback_logits(logits, feedback_logits, alpha, decay), labels)
