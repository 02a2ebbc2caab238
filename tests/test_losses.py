import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neft_jax.losses import cross_entropy, negative_feedback_loss

# Jitted: one program per test instead of one per eager op (the same arithmetic).
_loss = jax.jit(negative_feedback_loss, static_argnames="decay")
_rng = np.random.default_rng(0)


def _ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_eq1_by_hand():
    z = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    z1 = jnp.array([[1.0, 1.0, 0.0], [0.5, -0.5, 2.0]])
    z2 = jnp.array([[0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    z3 = jnp.array([[-2.0, 0.0, 4.0], [0.0, 2.0, 0.0]])
    y = jnp.array([0, 2])
    alpha = 0.3
    combined = (np.asarray(z) - alpha * (np.asarray(z1) + 0.1 * np.asarray(z2)
                                          + 0.01 * np.asarray(z3))) / 4
    expected = _ce(combined, np.asarray(y))
    got = _loss(z, [z1, z2, z3], y, alpha)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_alpha_zero_is_ce_of_scaled_logits():
    z = jnp.asarray(_rng.standard_normal((8, 5)) * 3, jnp.float32)
    feedback = [jnp.asarray(_rng.standard_normal((8, 5)), jnp.float32) for _ in range(3)]
    y = jnp.asarray(np.arange(8) % 5)
    np.testing.assert_allclose(_loss(z, feedback, y, 0.0),
                               jax.jit(cross_entropy)(jnp.asarray(np.asarray(z) / 4), y),
                               rtol=1e-6)


def test_no_feedback_is_plain_ce():
    z = jnp.asarray(_rng.standard_normal((4, 3)), jnp.float32)
    y = jnp.array([0, 1, 2, 0])
    np.testing.assert_allclose(_loss(z, [], y, 1.0), _ce(z, np.asarray(y)),
                               rtol=1e-6)


def test_explicit_coefficients():
    z = jnp.zeros((1, 2))
    feedback = [jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])]
    y = jnp.array([0])
    equal = _loss(z, feedback, y, 1.0, decay=(1.0, 1.0))
    np.testing.assert_allclose(float(equal), _ce(np.array([[-1 / 3, -1 / 3]]), [0]), rtol=1e-6)
    with pytest.raises(ValueError, match="coefficient"):
        negative_feedback_loss(z, feedback, y, 1.0, decay=(1.0,))
