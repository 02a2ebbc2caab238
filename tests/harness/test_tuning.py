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


def _fresh_tuning(tmp_path, monkeypatch, measure):
    monkeypatch.setenv("NEFT_JAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NEFT_JAX_NO_TUNING")
    monkeypatch.setattr(tuning, "time_convs", measure)
    monkeypatch.setattr(tuning, "_RETUNE", {"requested": False, "done": set()})
    monkeypatch.setattr(tuning, "_SHOWN", set())


def test_a_run_uses_the_tuned_choice_says_so_once_and_retune_measures_again(
        tmp_path, monkeypatch):
    calls = []
    _fresh_tuning(tmp_path, monkeypatch, _fake_measure(calls))
    args = cli.run_parser().parse_args(["--out", str(tmp_path / "r")])
    cfg, lines = config_from_args(args, "cpu")
    assert cfg.backward_micro_batch is None and "measured on this CPU on first use" in lines
    logged = []
    tuned = tuning.with_tuned_micro_batch(cfg, logged.append)
    assert tuned.backward_micro_batch == 8 and len(calls) == 4
    assert any("tuning: conv backward in micro-batches of 8" in line for line in logged)
    logged.clear()
    assert tuning.with_tuned_micro_batch(cfg, logged.append).backward_micro_batch == 8
    assert logged == [] and len(calls) == 4  # cached, and said once per process
    # --retune measures each shape once more in this process, then uses that.
    args = cli.run_parser().parse_args(["--out", str(tmp_path / "r"), "--retune"])
    cfg, _ = config_from_args(args, "cpu")
    tuning.with_tuned_micro_batch(cfg, logged.append)
    tuning.with_tuned_micro_batch(cfg, logged.append)
    assert len(calls) == 8
    # An explicit choice is neither measured nor announced.
    args = cli.run_parser().parse_args(["--out", str(tmp_path / "r"),
                                        "--backward-micro-batch", "16"])
    cfg, lines = config_from_args(args, "cpu")
    logged.clear()
    assert tuning.with_tuned_micro_batch(cfg, logged.append).backward_micro_batch == 16
    assert "micro-batches of 16" in lines and logged == [] and len(calls) == 8


def test_conv_timing_runs_on_the_models_shapes():
    shapes = tuning.model_convs("vgg8", 0.0625, 1)
    assert shapes[0][:3] == (32, 1, 4) and shapes[-1][:3] == (8, 32, 32)
    resnet = tuning.model_convs("resnet18", 1.0, 3)  # read from the model: 17 3×3 + 3 1×1
    assert len(resnet) == 11 and sum(count for *_, count in resnet) == 17 + 3
    assert resnet[0] == (32, 3, 64, 3, 1, 1) and resnet[-1] == (4, 512, 512, 3, 1, 3)
    assert (32, 64, 128, 1, 2, 1) in resnet  # the first strided shortcut
    assert tuning.time_convs(shapes[:1], 16, 8, repeats=1) > 0


def test_each_run_gets_its_own_models_and_widths_choice(tmp_path, monkeypatch):
    """The choice is made per run (model × width × batch), so a reproduction of both models
    or a width sweep never trains one model with another's micro-batch."""
    import neft_jax.harness.orchestration as orchestration
    from neft_jax.harness.config import ExperimentConfig

    def measure(shapes, batch, micro_batch):  # ResNet-18 (11 conv shapes) and width 1 prefer 16
        best = 16 if len(shapes) > 6 or shapes[1][2] == 128 else 8
        return 1.0 if micro_batch == best else 2.0

    _fresh_tuning(tmp_path, monkeypatch, measure)
    seen = {}
    monkeypatch.setattr(orchestration, "_run_experiment",
                        lambda cfg, *rest: seen.update({(cfg.model, cfg.width):
                                                        cfg.backward_micro_batch}))
    for model, width in (("vgg8", 0.125), ("resnet18", 0.125), ("vgg8", 1.0)):
        orchestration.run_experiment(ExperimentConfig(model=model, width=width,
                                                      out=str(tmp_path / model)),
                                     log=lambda message: None)
    assert seen == {("vgg8", 0.125): 8, ("resnet18", 0.125): 16, ("vgg8", 1.0): 16}


def test_commands_keep_compiled_programs_in_the_user_cache(tmp_path):
    """A command run again reads its compiled programs from the cache folder, even a program
    that compiles in milliseconds; the variable NEFT_JAX_NO_XLA_CACHE and a folder jax
    already has are respected."""
    import os
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp\n"
            "from neft_jax.harness.runtime import use_compilation_cache\n"
            "print(use_compilation_cache())\n"
            "print(float(jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((64, 64))).sum()))\n")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["NEFT_JAX_CACHE_DIR"] = str(tmp_path)

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.strip()

    first = run().splitlines()
    assert first[0] == str(tmp_path / "xla")
    cached = [tmp_path / "xla" / name for name in os.listdir(tmp_path / "xla")]
    assert any(path.name.startswith("jit__lambda") for path in cached)
    for path in cached:  # a damaged entry is compiled again (jax warns), same result
        path.write_bytes(b"damaged")
    assert run().splitlines() == first
    # One process for both refusals: NEFT_JAX_NO_XLA_CACHE first, then, without it, a folder
    # jax already has (set in-process: the config JAX_COMPILATION_CACHE_DIR would set).
    respected = ("import os, jax\n"
                 "from neft_jax.harness.runtime import use_compilation_cache\n"
                 "print(use_compilation_cache())\n"
                 "del os.environ['NEFT_JAX_NO_XLA_CACHE']\n"
                 f"jax.config.update('jax_compilation_cache_dir', {str(tmp_path / 'own')!r})\n"
                 "print(use_compilation_cache())\n")
    both = subprocess.run([sys.executable, "-c", respected],
                          env={**env, "NEFT_JAX_NO_XLA_CACHE": "1"}, capture_output=True,
                          text=True, check=True).stdout.split()
    assert both == ["None", "None"]
