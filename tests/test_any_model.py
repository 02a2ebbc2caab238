"""The drop-in library with models written from scratch: linen without ``train``, NNX, a
plain function, a dict with ``W1``-style names; and the public names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import numpy_variables
from flax import nnx

import neft_jax

# Inputs made in NumPy (jax.random and jnp ops run eagerly would compile a program each).
_RNG = np.random.default_rng(0)
X = jnp.asarray(_RNG.standard_normal((40, 8, 8, 1)), jnp.float32)
Y = jnp.asarray(np.arange(40) % 3, jnp.int32)
TEST_SET = neft_jax.make_test_set(X, Y, 20)
KEYS = jax.random.split(jax.random.key(1), 4)
DEVICE = neft_jax.DeviceModel(0.3)


class PlainCNN(nn.Module):
    @nn.compact
    def __call__(self, x):  # no train argument, returns logits only
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.conv(x))).mean(axis=(1, 2)))


def _apply(params, images):
    hidden = jnp.tanh(images.reshape(images.shape[0], -1) @ params["W1"] + params["b1"])
    return hidden @ params["W2"]


PARAMS = {"W1": jnp.asarray(0.3 * _RNG.standard_normal((64, 16)), jnp.float32),
          "b1": jnp.asarray(np.zeros(16, np.float32)),
          "W2": jnp.asarray(_RNG.standard_normal((16, 3)), jnp.float32)}


def _is_w(path, leaf):
    return str(path[-1]).startswith("W")


def _clean_accuracy(logits):
    return float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(Y)))


def test_linen_model_without_train_argument():
    model = PlainCNN()
    # model.init's structure without running it eagerly (tests/_small_models.py)
    variables = jax.tree.map(jnp.asarray, numpy_variables(model, X[:1].shape))
    clean = neft_jax.monte_carlo(model, variables, TEST_SET, KEYS, neft_jax.DeviceModel(0.0))
    logits = jax.jit(model.apply)(variables, X)  # one program, not one per op
    assert clean.accuracies[0] == pytest.approx(_clean_accuracy(logits))
    noisy = neft_jax.monte_carlo(model, variables, TEST_SET, KEYS, neft_jax.DeviceModel(2.0))
    assert noisy.accuracies.shape == (4,) and np.ptp(noisy.accuracies) > 0


def test_nnx_module_is_evaluated_from_its_own_state_in_eval_mode():
    net = NNXNet(nnx.Rngs(0))
    clean = neft_jax.monte_carlo(net, None, TEST_SET, KEYS, neft_jax.DeviceModel(0.0))
    net.eval()
    assert clean.accuracies[0] == pytest.approx(_clean_accuracy(net(X)))
    noisy = neft_jax.monte_carlo(net, None, TEST_SET, KEYS, neft_jax.DeviceModel(2.0))
    assert np.ptp(noisy.accuracies) > 0


def test_plain_function_with_where_and_refusal_without_it():
    clean = neft_jax.monte_carlo(_apply, PARAMS, TEST_SET, KEYS, neft_jax.DeviceModel(0.0))
    assert clean.accuracies[0] == pytest.approx(_clean_accuracy(jax.jit(_apply)(PARAMS, X)))
    noisy = neft_jax.monte_carlo(_apply, PARAMS, TEST_SET, KEYS, neft_jax.DeviceModel(2.0),
                                 where=_is_w)
    assert np.ptp(noisy.accuracies) > 0
    with pytest.raises(neft_jax.NoWeightsSelected, match=r"selects none.*'W1'"):
        neft_jax.monte_carlo(_apply, PARAMS, TEST_SET, KEYS, DEVICE)


def test_perturb_says_when_it_selects_nothing():
    key = jax.random.key(0)
    with pytest.warns(UserWarning, match="kernel or weight"):
        same = neft_jax.perturb(PARAMS, key, DEVICE)
    assert same is PARAMS
    pairs = [(PARAMS["W1"], PARAMS["b1"])]
    with pytest.raises(neft_jax.NoWeightsSelected, match="where="):
        neft_jax.perturb(pairs, key, DEVICE, on_empty="raise")
    noisy = neft_jax.perturb(PARAMS, key, DEVICE, where=_is_w)
    assert not np.allclose(noisy["W1"], PARAMS["W1"]) and noisy["b1"] is PARAMS["b1"]
    with pytest.raises(ValueError, match="on_empty"):
        neft_jax.perturb(PARAMS, key, DEVICE, on_empty="maybe")


def test_public_names_and_no_function_shadows_its_module():
    import types

    for name in ("perturb", "DeviceModel", "monte_carlo", "summarize", "make_test_set",
                 "TestSet", "MonteCarloResult", "TrainState", "make_train_step",
                 "create_train_state", "create_model", "under", "not_under", "VGG8",
                 "ResNet18"):
        assert name in neft_jax.__all__ and hasattr(neft_jax, name)
    assert isinstance(neft_jax.perturbation, types.ModuleType)
    assert neft_jax.perturbation.under is neft_jax.under
    assert callable(neft_jax.parallel.data_mesh)
    for name in neft_jax.__all__:  # every module-valued name is a module, not a shadow
        value = getattr(neft_jax, name)
        if isinstance(value, types.ModuleType):
            assert value.__name__ == f"neft_jax.{name}"
