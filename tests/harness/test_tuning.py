"""The CPU's backward micro-batch, measured on first use and cached per machine (issue 17)."""

import json

from neft_jax.harness import cli, tuning
from neft_jax.harness.flags import config_from_args


def _fake_measure(calls):
    def measure(shapes, batch, micro_batch):
        calls.append(micro_batch)
        return {0: 3.0, 8: 1.0, 16: 2.0, 32: 1.5}[micro_batch]
    return measure


def test_the_choice_is_measured_once_cached_and_measured_again_for_another_jax(
        tmp_path, monkeypatch):
    monkeypatch.setenv("NEFT_JAX_CACHE_DIR", str(tmp_path))
    calls = []
    first = tuning.tuned_micro_batch("vgg8", 0.125, 128, 1, measure=_fake_measure(calls))
    assert first.micro_batch == 8 and not first.cached and calls == [0, 8, 16, 32]
    again = tuning.tuned_micro_batch("vgg8", 0.125, 128, 1, measure=_fake_measure(calls))
    assert again.cached and again.micro_batch == 8 and len(calls) == 4  # not measured again
    assert "cached" in again.line() and "--retune" in again.line()
    tuning.tuned_micro_batch("vgg8", 0.125, 128, 1, retune=True, measure=_fake_measure(calls))
    assert len(calls) == 8
    real = tuning.machine()
    monkeypatch.setattr(tuning, "machine", lambda: {**real, "jax": "0.0.0-other"})
    other = tuning.tuned_micro_batch("vgg8", 0.125, 128, 1, measure=_fake_measure(calls))
    assert not other.cached and len(calls) == 12
    cache = json.loads((tmp_path / "tuning.json").read_text())
    assert len(cache) == 2  # one entry per machine (here: per jax version)
    # Candidates as large as the batch are not tried.
    small = tuning.tuned_micro_batch("vgg8", 0.125, 16, 1, measure=_fake_measure(calls))
    assert calls[-2:] == [0, 8] and small.micro_batch == 8


def test_a_run_uses_the_tuned_choice_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("NEFT_JAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NEFT_JAX_NO_TUNING")
    monkeypatch.setattr(tuning, "time_convs", _fake_measure([]))
    args = cli.run_parser().parse_args(["--out", str(tmp_path / "r")])
    cfg, lines = config_from_args(args, "cpu")
    assert cfg.backward_micro_batch == 8
    assert "tuning: conv backward in micro-batches of 8" in lines
    args = cli.run_parser().parse_args(["--out", str(tmp_path / "r"),
                                        "--backward-micro-batch", "16"])
    cfg, lines = config_from_args(args, "cpu")  # an explicit choice is not tuned
    assert cfg.backward_micro_batch == 16 and "tuning:" not in lines


def test_conv_timing_runs_on_the_models_shapes():
    shapes = tuning.model_convs("vgg8", 0.0625, 1)
    assert shapes[0][:3] == (32, 1, 4) and shapes[-1][:3] == (8, 32, 32)
    assert tuning.time_convs(shapes[:1], 16, 8, repeats=1) > 0


def test_reproduce_measures_each_model_its_own_micro_batch(tmp_path, monkeypatch):
    import neft_jax.harness.reproduce as reproduce

    monkeypatch.setenv("NEFT_JAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NEFT_JAX_NO_TUNING")

    def measure(shapes, batch, micro_batch):  # ResNet-18 (11 conv shapes) prefers 16
        best = 16 if len(shapes) > 6 else 8
        return 1.0 if micro_batch == best else 2.0

    monkeypatch.setattr(tuning, "time_convs", measure)
    seen = {}
    monkeypatch.setattr(reproduce, "run_plan",
                        lambda *args, micro_batches=None, **kwargs: seen.update(micro_batches))
    monkeypatch.setattr(reproduce, "write_report", lambda *args, **kwargs: None)
    assert cli.reproduce_main(["--models", "vgg8,resnet18", "--out", str(tmp_path / "r"),
                               "--no-progress"]) == 0
    assert seen == {"vgg8": 8, "resnet18": 16}
