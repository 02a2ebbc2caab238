"""The method registry: one entry per method, read by the train step and the harness."""

import dataclasses

import jax
import jax.numpy as jnp
import optax
import pytest

from neft_jax import methods, train
from neft_jax.device import DeviceModel


def test_every_method_has_one_entry_with_its_rules():
    assert methods.METHODS == ("vanilla", "noise", "noise_scaled", "irs", "ovf")
    assert train.METHODS == methods.METHODS and train.DEFAULT_METHODS == methods.METHODS
    assert methods.PAPER_METHODS == ("vanilla", "noise", "irs", "ovf")
    assert methods.FEEDBACK_METHODS == ("irs", "ovf")
    assert [m for m in methods.METHODS if methods.uses_exits(m)] == ["irs"]
    assert {m: methods.method_spec(m).validation_sigma(0.4) for m in methods.METHODS} == {
        "vanilla": 0.0, "noise": 0.4, "noise_scaled": 0.4, "irs": 0.4, "ovf": 0.4}
    assert methods.label("irs") == "IRS" and methods.label("noise") == "noise injection"
    assert methods.FAIR_BASELINE in methods.METHODS
    assert not methods.uses_feedback(methods.FAIR_BASELINE)


def test_an_unknown_method_is_refused_with_the_nearest_name():
    with pytest.raises(ValueError, match="did you mean 'irs'"):
        methods.method_spec("irss")
    with pytest.raises(ValueError, match="unknown method"):
        methods.validate_method(["irs"])


def test_a_new_method_is_one_registry_entry(monkeypatch):
    """A method added to the registry trains through make_train_step unchanged: here noise
    injection at twice the temperature, a scaled loss with an explicit divisor."""
    new = dataclasses.replace(methods.REGISTRY["noise_scaled"], name="noise_half",
                              label="noise ÷ 2")
    monkeypatch.setitem(methods.REGISTRY, "noise_half", new)

    def apply(params, x):
        return x @ params["kernel"]

    params = {"kernel": jnp.ones((3, 2)) * 0.1}
    state = train.create_train_state(apply, None, None, optax.sgd(0.1),
                                     train.make_hparams(0.1), params=params)
    step = train.make_train_step(apply, "noise_half", DeviceModel(), logit_divisor=2.0,
                                 jit=False)
    batch = {"image": jnp.ones((4, 3)), "label": jnp.array([0, 1, 0, 1])}
    state, metrics = step(state, batch, jax.random.key(0))
    assert set(metrics) == {"loss", "accuracy"} and jnp.isfinite(metrics["loss"])
