"""The PyTorch reference benchmark: a clear message without torch, and (where torch is
installed) the same models as ours, so that its figures time the same work."""

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from neft_jax.models import create_model

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "experiments", "bench_torch.py")


def _load():
    spec = importlib.util.spec_from_file_location("bench_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_torch_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    bench_torch = _load()
    with pytest.raises(SystemExit) as stop:
        bench_torch.main(["--models", "vgg8", "--skip-mc", "--steps", "1"])
    assert "pip install torch" in str(stop.value.code)


def test_bad_method_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        _load().main(["--methods", "irs"])
    assert stop.value.code == 2 and "--methods" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vgg8", "resnet18"])
def test_reference_models_have_our_backbones_parameter_count(name):
    torch = pytest.importorskip("torch")
    reference = _load().build_model(name, width=0.125, channels=1)
    theirs = sum(p.numel() for p in reference.parameters())
    ours = create_model(name, 10, exits=False, width=0.125)
    variables = jax.eval_shape(ours.init, jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
    assert theirs == sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    with torch.no_grad():
        assert reference(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
