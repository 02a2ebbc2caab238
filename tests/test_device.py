import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neft_jax import DeviceModel


def test_default_is_rram1_8bit_2bit_range():
    device = DeviceModel(sigma=0.4)
    assert (device.weight_bits, device.device_bits, device.state_factor) == (8, 2, 1)
    assert device.normalisation == "range" and device.scale == "layer"


def test_std_factor_matches_spec_constants():
    assert DeviceModel().bit_weight_norm == pytest.approx(0.7776, abs=1e-4)
    assert DeviceModel(normalisation="level").bit_weight_norm == pytest.approx(0.2592, abs=1e-4)


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
