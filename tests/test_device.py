import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neft_jax import DeviceModel


def test_default_is_rram1_8bit_2bit_level():
    """The default σ is eq. (5) as printed ("level"). Evidence: vanilla VGG-8 and ResNet-18
    scored under both definitions on the same noise keys fit the paper's vanilla rows
    under "level" and fall to chance under "range" well before the σ the paper reports
    (docs/FINDINGS.md "Which σ the paper means", docs/results/noise_definition_2026-12-03)."""
    device = DeviceModel(sigma=0.4)
    assert (device.weight_bits, device.device_bits, device.state_factor) == (8, 2, 1)
    assert device.normalisation == "level" and device.scale == "layer"
    assert device.noise_std(1.0) == pytest.approx(0.4 * 0.2592, abs=1e-4)


def test_std_factor_matches_spec_constants():
    assert DeviceModel(normalisation="range").bit_weight_norm == pytest.approx(0.7776, abs=1e-4)
    assert DeviceModel().bit_weight_norm == pytest.approx(0.2592, abs=1e-4)


@pytest.mark.parametrize("name, k", [("RRAM1", 1), ("FeFET2", 2), ("RRAM4", 4), ("FeFET6", 6)])
def test_presets(name, k):
    device = DeviceModel.preset(name, sigma=0.3)
    assert device.state_factor == k and device.sigma == 0.3
    assert device.base_sigma_factor == pytest.approx(1 / math.sqrt(0.4 * k * k + 0.6))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"weight_bits": 8, "device_bits": 3}, "weight_bits"),
        ({"device_bits": 0}, "device_bits"),
        ({"normalisation": "bits"}, "normalisation"),
        ({"scale": "global"}, "scale"),
        ({"state_factor": 1.5}, "state_factor"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DeviceModel(**kwargs)


def test_sigma_is_one_real_number_also_under_jit_and_vmap():
    with pytest.raises(ValueError, match="one number, got an array of shape \\(2,\\)"):
        DeviceModel(sigma=np.array([0.1, 100.0]))
    with pytest.raises(ValueError, match="one number"):
        jax.jit(lambda s: DeviceModel(sigma=s).noise_std(1.0))(jnp.array([0.1, 0.4]))
    for bad in (None, "0.4"):
        with pytest.raises(TypeError, match="DeviceModel.sigma must be a number"):
            DeviceModel(sigma=bad)
    per_sigma = jax.vmap(lambda s: DeviceModel(sigma=s).noise_std(1.0))(jnp.array([0.1, 0.4]))
    np.testing.assert_allclose(per_sigma, [DeviceModel(0.1).noise_std(1.0),
                                           DeviceModel(0.4).noise_std(1.0)], rtol=1e-6)


def test_unknown_preset():
    with pytest.raises(ValueError, match="FeFET6"):
        DeviceModel.preset("PCM3", sigma=0.1)


@settings(max_examples=60, deadline=None)
@given(
    device_bits=st.integers(1, 4),
    num_devices=st.integers(1, 6),
    sigma=st.floats(0.0, 2.0, allow_nan=False),
    normalisation=st.sampled_from(["range", "level"]),
)
def test_std_formula_property(device_bits, num_devices, sigma, normalisation):
    device = DeviceModel(sigma, weight_bits=device_bits * num_devices, device_bits=device_bits,
                         normalisation=normalisation)
    weights = [2 ** (j * device_bits) for j in range(num_devices)]
    denominator = sum(weights) if normalisation == "range" else 2 ** (device_bits * num_devices) - 1
    expected = sigma * math.sqrt(sum(w * w for w in weights)) / denominator
    assert device.noise_std(1.0) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # A single device with "range" normalisation passes σ through unchanged.
    if num_devices == 1 and normalisation == "range":
        assert device.noise_std(1.0) == pytest.approx(sigma)


@settings(max_examples=40, deadline=None)
@given(device_bits=st.integers(1, 4), num_devices=st.integers(1, 6))
def test_range_std_is_level_std_times_two_to_the_n_minus_one(device_bits, num_devices):
    """(2^M − 1) / Σ_j 2^{jN} = 2^N − 1: "range" is 3× "level" at the default N = 2."""
    bits = {"weight_bits": device_bits * num_devices, "device_bits": device_bits}
    ratio = (DeviceModel(1.0, normalisation="range", **bits).noise_std(1.0)
             / DeviceModel(1.0, normalisation="level", **bits).noise_std(1.0))
    assert ratio == pytest.approx(2**device_bits - 1, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(0.01, 1.0), preset=st.sampled_from(["RRAM1", "FeFET2", "RRAM4", "FeFET6"]),
       seed=st.integers(0, 2**31 - 1))
def test_range_noise_is_exactly_three_times_level_noise_on_the_same_key(sigma, preset, seed):
    """On the same key, every weight's "range" error is 3× its "level" error (default
    bits), for every preset: the definitions differ by a factor 3 in std and nothing else."""
    import jax
    import numpy as np

    from neft_jax import perturb

    params = {"conv": {"kernel": jax.random.normal(jax.random.key(seed % 97), (3, 3, 2, 4))}}
    key = jax.random.key(seed)
    errors = {d: np.asarray(perturb(params, key, DeviceModel.preset(preset, sigma,
                                                                    normalisation=d))
                            ["conv"]["kernel"] - params["conv"]["kernel"])
              for d in ("range", "level")}
    # W + ΔW is rounded to W's float32 grid: |range − 3·level| ≤ ½ + 3·½ ulp of max|W|.
    ulp = float(np.spacing(np.max(np.abs(np.asarray(params["conv"]["kernel"])))))
    np.testing.assert_allclose(errors["range"], 3 * errors["level"], rtol=1e-5, atol=2 * ulp)
    assert np.std(errors["level"]) > 0
