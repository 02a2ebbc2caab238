
import chex
import jax
import numpy as np
import pytest
from _small_models import numpy_variables
from synthetic import quadrant_task

from neft_jax import DeviceModel, make_test_set, monte_carlo
from neft_jax.evaluate import (
    _monte_carlo_sums,
    epistemic_kl,
    monte_carlo_loop,
)
from neft_jax.models import VGG8, ResNet18


@pytest.fixture(scope="module")
def setup():
    model = VGG8(4, width=0.125)
    images, labels = quadrant_task(70, seed=3)
    variables = jax.device_put(numpy_variables(model, images[:1].shape))
    test_set = make_test_set(images, labels, batch_size=32)  # 3 batches, 26 padded
    return model, variables, test_set


def test_make_test_set_pads_and_masks():
    images, labels = quadrant_task(70, seed=0)
    ts = make_test_set(images, labels, batch_size=32)
    chex.assert_shape(ts.images, (3, 32, 32, 32, 1))
    chex.assert_shape(ts.labels, (3, 32))
    assert ts.size == 70 and int(ts.mask.sum()) == 70
    mask = np.asarray(ts.mask).reshape(-1)
    assert mask[:70].all() and not mask[70:].any()  # the padding is the last 26 rows
    np.testing.assert_array_equal(np.asarray(ts.images).reshape(-1, 32, 32, 1)[:70], images)
    with pytest.raises(ValueError, match="labels"):
        make_test_set(images, labels[:5])


def test_padding_never_counts(setup):
    """The padded set's accuracies (70 images in batches of 32: 26 zero images, label 0)
    equal those of batches that need no padding, run by run, and at σ = 0 numpy's count over
    the 70 real images: a lost mask would add the zero images' hits to every run."""
    model, variables, padded = setup
    images = np.asarray(padded.images).reshape(-1, 32, 32, 1)[:70]
    labels = np.asarray(padded.labels).reshape(-1)[:70]
    keys = jax.random.split(jax.random.key(5), 6)
    noisy = monte_carlo(model, variables, padded, keys, DeviceModel(0.5))
    whole = monte_carlo(model, variables, make_test_set(images, labels, 35), keys,
                        DeviceModel(0.5))
    np.testing.assert_allclose(noisy.accuracies, whole.accuracies, atol=1.5 / 70)
    clean = monte_carlo(model, variables, padded, keys, 0.0)
    logits, _ = jax.jit(model.apply)(variables, images)  # one program, not op by op
    assert clean.accuracies[0] == pytest.approx(np.mean(np.argmax(logits, -1) == labels),
                                                abs=1.5 / 70)


def test_ekl_averages_over_the_real_inputs_only():
    """Two inputs, two runs: the first input's runs disagree (EKL ln 2), the second's
    agree (0); masking the first out leaves 0, masking nothing gives ln 2 / 2."""
    sum_probs = np.array([[1.0, 1.0], [2.0, 0.0]])  # runs: [1, 0] + [0, 1]; [1, 0] twice
    sum_entropy = np.zeros(2)
    assert epistemic_kl(sum_probs, sum_entropy, 2, np.array([True, True])) == \
        pytest.approx(np.log(2) / 2)
    assert epistemic_kl(sum_probs, sum_entropy, 2, np.array([False, True])) == 0.0
    assert epistemic_kl(sum_probs, sum_entropy, 2, np.array([True, False])) == \
        pytest.approx(np.log(2))


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
def test_vectorised_equals_python_loop(setup, chunk_size):
    model, variables, test_set = setup
    keys = jax.random.split(jax.random.key(1), 7)
    device = DeviceModel(0.5)
    result = monte_carlo(model, variables, test_set, keys, device, chunk_size=chunk_size)
    looped = monte_carlo_loop(model, variables, test_set, keys, device)
    assert result.accuracies.shape == (7,)
    np.testing.assert_allclose(result.accuracies, looped, atol=1.5 / 70)
    # At most one borderline prediction may flip between the two programs' float roundings.
    assert np.sum(np.abs(result.accuracies - looped) > 1e-9) <= 1
    assert len(np.unique(result.accuracies)) > 1  # different keys, different noise


def test_resnet_vectorised_equals_loop():
    model = ResNet18(4, width=0.125)
    images, labels = quadrant_task(20, seed=3)
    variables = jax.device_put(numpy_variables(model, images[:1].shape))
    test_set = make_test_set(images, labels, batch_size=10)
    keys = jax.random.split(jax.random.key(1), 3)
    device = DeviceModel.preset("FeFET2", 0.3)
    result = monte_carlo(model, variables, test_set, keys, device, chunk_size=2)
    np.testing.assert_allclose(result.accuracies,
                               monte_carlo_loop(model, variables, test_set, keys, device),
                               atol=1.5 / 20)


def test_sigma_zero_evaluates_once_with_zero_ekl(setup):
    model, variables, test_set = setup
    keys = jax.random.split(jax.random.key(1), 7)  # 7: test_vectorised_equals_python_loop's
    result = monte_carlo(model, variables, test_set, keys, DeviceModel(0.0))
    assert result.accuracies.shape == (1,)
    assert result.ekl == pytest.approx(0.0, abs=1e-6)
    noisy = monte_carlo(model, variables, test_set, keys, DeviceModel(0.3))
    assert noisy.ekl > 1e-3


def test_sigma_is_traced_no_recompile(setup):
    model, variables, test_set = setup
    keys = jax.random.split(jax.random.key(1), 7)  # 7 keys: the program of the tests above
    monte_carlo(model, variables, test_set, keys, DeviceModel(0.1), chunk_size=1)
    before = _monte_carlo_sums._cache_size()
    for sigma in (0.2, 0.3, 0.4):
        monte_carlo(model, variables, test_set, jax.random.split(jax.random.key(9), 7),
                    DeviceModel(sigma), chunk_size=1)
    assert _monte_carlo_sums._cache_size() == before


def test_ekl_equals_mean_kl_to_mean_prediction():
    rng = np.random.default_rng(0)
    runs = rng.dirichlet(np.ones(4), size=(6, 1, 5))  # (R, batches, B, K)
    entropy = -(runs * np.log(runs)).sum(-1)
    ekl = epistemic_kl(runs.sum(0), entropy.sum(0), 6, np.ones((1, 5), bool))
    mean = runs.mean(0)
    kl = (runs * (np.log(runs) - np.log(mean))).sum(-1).mean(0)
    assert ekl == pytest.approx(kl.mean(), rel=1e-9)


def test_autotune_measures_every_candidate(setup):
    from neft_jax.evaluate import autotune_chunk_size

    model, variables, test_set = setup
    # 7 runs in chunks of 1 and 4: programs test_vectorised_equals_python_loop compiled.
    best, timings = autotune_chunk_size(model, variables, test_set, DeviceModel(0.2),
                                        candidates=(1, 4), num_runs=7)
    assert set(timings) == {1, 4} and best in (1, 4)
    assert all(t > 0 for t in timings.values())
    assert timings[best] == min(timings.values())
