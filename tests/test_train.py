import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import rbg_train_state
from synthetic import quadrant_task

from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax import train as T
from neft_jax.models import VGG8

STEPS = 40  # every method reaches 100 % on the quadrant task by step 25 (chance: 25 %)
BATCH = 32
# One optimiser, model and jitted step per method for the whole file: the tests below share
# the compiled steps of test_each_method_learns_the_synthetic_task (same batch shape).
TX = T.create_optimizer(3e-3, STEPS)


def _model(exits):
    return VGG8(4, exits=exits, width=0.0625)


@functools.cache
def _initial_state(exits):
    """The initial state, made in one jitted program (tests/_small_models.py)."""
    return rbg_train_state(_model(exits), (1, 32, 32, 1), TX, T.make_hparams(0.1, alpha=0.01))


def _state(exits, sigma, alpha=0.0):
    return _initial_state(exits).replace(hparams=T.make_hparams(sigma, alpha=alpha))


@functools.cache
def _step(method):
    return T.make_train_step(_model(T.uses_exits(method)), method, DeviceModel())


def _batch(seed=0):
    images, labels = quadrant_task(BATCH, seed=seed)
    return {"image": images, "label": labels}


def _train(method, sigma=0.1, alpha=0.01):
    model = _model(T.uses_exits(method))
    key = jax.random.key(0)
    state = _state(T.uses_exits(method), sigma, alpha)
    step = _step(method)
    images, labels = quadrant_task(STEPS * BATCH, seed=1)
    metrics = None
    for i in range(STEPS):
        batch = {"image": images[i * BATCH:(i + 1) * BATCH],
                 "label": labels[i * BATCH:(i + 1) * BATCH]}
        state, metrics = step(state, batch, T.step_key(key, i))
    return model, state, metrics


@pytest.mark.parametrize("method", T.METHODS)
def test_each_method_learns_the_synthetic_task(method):
    model, state, metrics = _train(method)
    assert np.isfinite(float(metrics["loss"]))
    images, labels = quadrant_task(400, seed=2)
    test_set = make_test_set(images, labels, 200)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    result = monte_carlo(model, variables, test_set, jax.random.split(jax.random.key(0), 4),
                         DeviceModel(0.1))
    assert result.accuracies.mean() > 0.9, (method, result.accuracies)
    if method == "irs":
        assert metrics["exit_accuracy"].shape == (3,)


def test_step_is_deterministic_given_key():
    state = _state(True, 0.3, alpha=0.1)
    step = _step("irs")
    batch = _batch()
    a, ma = step(state, batch, jax.random.key(5))
    b, mb = step(state, batch, jax.random.key(5))
    c, _ = step(state, batch, jax.random.key(6))
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(ma, mb)
    assert not np.allclose(a.params["Dense_1"]["kernel"], c.params["Dense_1"]["kernel"])


def test_vanilla_ignores_noise_and_key():
    state = _state(False, 0.5)
    step = _step("vanilla")
    batch = _batch()
    a, _ = step(state, batch, jax.random.key(1))
    b, _ = step(state, batch, jax.random.key(2))
    chex.assert_trees_all_equal(a.params, b.params)


def capturing_gradients(state):
    """``(state, captured)``: ``state`` whose optimizer records each update's gradients in
    ``captured["grads"]`` (the step's own gradient, read inside one jitted program)."""
    captured, tx = {}, state.tx

    class Capture:
        def init(self, params):
            return tx.init(params)

        def update(self, grads, opt_state, params=None):
            captured["grads"] = grads
            return tx.update(grads, opt_state, params)

    return state.replace(tx=Capture()), captured


def test_noise_gradient_is_straight_through_at_noisy_weights():
    """Gradient of the step == gradient of the clean loss at perturb(params)."""
    from neft_jax.losses import cross_entropy
    from neft_jax.perturbation import perturb

    model = _model(False)
    state = _state(False, 0.3)
    images, labels = quadrant_task(8, seed=0)

    def loss_at(params, state):
        (logits, _), _ = model.apply({"params": params, "batch_stats": state.batch_stats},
                                     images, train=True, mutable=["batch_stats"])
        return cross_entropy(logits, labels)

    state, captured = capturing_gradients(state)
    step = T.make_train_step(model, "noise", DeviceModel(), jit=False)

    @jax.jit  # the step and the expected gradient in one program (not op by op)
    def grads(state, key):
        backbone_key = jax.random.split(jax.random.split(key, 4)[0])[0]
        # σ as the step sees it (its float32 hparam): the same std to the last bit
        noisy = perturb(state.params, backbone_key, DeviceModel(state.hparams["sigma"]),
                        where=T.backbone_kernels)
        step(state, {"image": images, "label": labels}, key)
        return captured["grads"], jax.grad(loss_at)(noisy, state)

    got, expected = grads(state, jax.random.key(3))
    chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-6)


class _TinyBN(nn.Module):
    """conv → BatchNorm → mean → dense 4; no exits (OVF's passes are the backbone's)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3), use_bias=False)(x))
        return nn.Dense(4)(jnp.mean(nn.relu(x), axis=(1, 2))), ()


@pytest.mark.parametrize("method", ["irs", "ovf"])
def test_feedback_loss_and_gradient_equal_eq1_built_by_hand(method):
    """IRS's and OVF's step: the loss and its gradient equal eq. (1) computed by hand with
    losses.negative_feedback_loss on the same noise (IRS: backbone at σ, exits at the exits'
    σ; OVF: three more passes at σ + 0.15, + 0.10, + 0.05 with their own keys). A feedback
    term cut from the gradient, or subtracted with the wrong sign, changes the gradient."""
    from neft_jax.losses import negative_feedback_loss
    from neft_jax.perturbation import perturb

    exits = T.uses_exits(method)  # IRS: the VGG-8 of this file; OVF: any model, a tiny one
    model, state = (_model(True), _state(True, 0.3, alpha=0.5)) if exits else (
        _TinyBN(), T.create_train_state(_TinyBN(), jax.random.key(0), (1, 32, 32, 1), TX,
                                        T.make_hparams(0.3, alpha=0.5)))
    images, labels = quadrant_task(8, seed=0)
    state, captured = capturing_gradients(state)
    step = T.make_train_step(model, method, DeviceModel(), jit=False)
    hp = state.hparams

    def noisy_logits(params, key, sigma, exit_sigma):
        backbone_key, exit_key = jax.random.split(key)
        params = perturb(params, backbone_key, DeviceModel(sigma), where=T.backbone_kernels)
        if exit_sigma is not None:
            params = perturb(params, exit_key, DeviceModel(exit_sigma),
                             where=T.exit_kernels)
        (logits, exit_logits), _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            mutable=["batch_stats"])
        return logits, exit_logits

    def loss_by_hand(params, key):
        keys = jax.random.split(key, 4)
        if exits:
            z, feedback = noisy_logits(params, keys[0], hp["sigma"], hp["exit_sigma"])
        else:
            z, _ = noisy_logits(params, keys[0], hp["sigma"], None)
            feedback = [noisy_logits(params, k, hp["sigma"] + offset, None)[0]
                        for k, offset in zip(keys[1:], T.OVF_SIGMA_OFFSETS, strict=True)]
        return negative_feedback_loss(z, feedback, labels, hp["alpha"])

    @jax.jit  # the step and the expected values in one program
    def both(state, key):
        _, metrics = step(state, {"image": images, "label": labels}, key)
        expected, expected_grads = jax.value_and_grad(loss_by_hand)(state.params, key)
        return metrics["loss"], captured["grads"], expected, expected_grads

    loss, grads, expected, expected_grads = both(state, jax.random.key(3))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    chex.assert_trees_all_close(grads, expected_grads, rtol=1e-4, atol=1e-6)


def test_changing_sigma_and_alpha_does_not_retrace():
    state = _state(True, 0.1, alpha=0.1)
    raw = T.make_train_step(_model(True), "irs", DeviceModel(), jit=False)
    step = jax.jit(chex.assert_max_traces(raw, n=1))  # the program of _step("irs")
    batch = _batch()
    for sigma, alpha in ((0.1, 0.1), (0.4, 0.01), (0.0, 1.0)):
        state = state.replace(hparams=T.make_hparams(sigma, alpha=alpha))
        state, _ = step(state, batch, jax.random.key(0))


def test_irs_requires_exits_and_unknown_method():
    with pytest.raises(ValueError, match="vanilla"):
        T.make_train_step(VGG8(4), "dropout")
    state = _state(False, 0.1, alpha=0.1)
    step = T.make_train_step(_model(False), "irs")
    with pytest.raises(ValueError, match="exits=True"):
        step(state, {"image": jnp.zeros((2, 32, 32, 1)), "label": jnp.zeros(2, jnp.int32)},
             jax.random.key(0))


def test_learning_rate_schedules_follow_algorithm_1_and_the_authors_cosine_annealing():
    """Per step: cosine to 0 over all steps (the paper's Algorithm 1 steps the scheduler
    every batch). Per epoch: PyTorch's CosineAnnealingLR(T_max = epochs) stepped after each
    epoch, so epoch e trains at lr·(1 + cos(π e / epochs)) / 2 for all its steps."""
    lr, epochs, per_epoch = 1e-3, 8, 5
    by_step = T.learning_rate_schedule(lr, epochs * per_epoch)
    by_epoch = T.learning_rate_schedule(lr, epochs * per_epoch, per_epoch)
    steps = np.arange(epochs * per_epoch)
    torch_rates = lr * (1 + np.cos(np.pi * (steps // per_epoch) / epochs)) / 2
    np.testing.assert_allclose([float(by_epoch(s)) for s in steps], torch_rates, rtol=1e-5)
    np.testing.assert_allclose([float(by_step(s)) for s in steps],
                               lr * (1 + np.cos(np.pi * steps / steps.size)) / 2, rtol=1e-4)
    assert float(by_epoch(per_epoch - 1)) == float(by_epoch(0)) > float(by_step(per_epoch - 1))
    # The schedule is traced: the jitted per-epoch rate equals the eager one.
    assert float(jax.jit(by_epoch)(jnp.int32(37))) == pytest.approx(torch_rates[37], rel=1e-5)
    with pytest.raises(ValueError, match="divide total_steps"):
        T.learning_rate_schedule(lr, 41, per_epoch)
    with pytest.raises(ValueError, match="needs total_steps"):
        T.create_optimizer(lr, None, per_epoch)
