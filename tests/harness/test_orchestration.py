import csv
import dataclasses
import json
import os

import chex
import numpy as np
import pytest
from checkpoint_damage import damage_newest_save
from tiny import TINY_ARGS, tiny_config

from neft_jax.harness import cli as run_cli
from neft_jax.harness import data as data_lib
from neft_jax.harness.loop import train_runs
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.paper import default_alpha

TINY = [*TINY_ARGS, "--max-train-steps", "2"]  # tests/tiny.py: programs shared


def test_run_py_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    # TINY's whole-batch conv backward: the same path, compiled in ~30 % less time than the
    # CPU default's micro-batches (which the tests of stops and settings run end to end).
    code = run_cli.run_main(TINY + ["--sigma", "0.3", "--sweep", "0.1,0.3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("profile: demo (backend is cpu")
    assert "conv backward in micro-batches of the whole batch" in printed.splitlines()[0]
    assert "REDUCED WIDTH" in printed and "σ=0.1" in printed
    # The table of a finished run: its legend on one line, clean accuracy, chance, verdict.
    legend = [line for line in printed.splitlines() if line.startswith("cells: mean ± 95 % CI")]
    assert len(legend) == 1 and "[std] (EKL, nats)" in legend[0]
    assert "chance: 10.0 %" in legend[0] and "clean" in printed
    assert any(line.startswith("Verdict: ") for line in printed.splitlines())
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"vanilla", "noise", "noise_scaled", "irs", "ovf"}
    for method, entry in results["methods"].items():
        assert set(entry["evaluations"]) == {"0.1", "0.3"}
        for evaluation in entry["evaluations"].values():
            assert len(evaluation["accuracies"]) == 3
            assert all(0 <= a <= 100 for a in evaluation["accuracies"])
            assert evaluation["summary"]["mean"] == pytest.approx(
                np.mean(evaluation["accuracies"]), abs=1e-4)
        assert entry["alpha"] == (default_alpha("vgg8", "mnist5k", method)
                                  if method in ("irs", "ovf") else 0.0)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["method"] for r in rows} == set(results["methods"])
    png = (out / "accuracy_vs_sigma.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (out / "checkpoints" / "irs-alpha0.01" / "best").is_dir()


def _tiny_config(out, **changes):
    return tiny_config(out, **{"methods": ("noise",), **changes})


def test_resume_after_interruption_and_a_flipped_byte_matches_uninterrupted(tmp_path):
    """Killed after epoch 2 of 2 was saved, then 8 bytes of that save flipped: the resumed
    run warns, falls back to epoch 1's save, redoes epoch 2 and ends with the uninterrupted
    run's numbers (corruption is never trained on, so it cannot pass for divergence). The
    uninterrupted run, with a save interval longer than the run, saved only after its
    last epoch: the save schedule does not change results."""
    full = run_experiment(_tiny_config(tmp_path / "full", checkpoint_every=1e9),
                          log=lambda m: None, show_progress=False)
    saved = tmp_path / "full" / "checkpoints" / "noise"
    assert sorted(os.listdir(saved / "latest")) == ["2"] and os.listdir(saved / "best")

    class Interrupt(Exception):
        pass

    def stop_after_last_epoch(message):
        if "epoch 2/2" in message:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(_tiny_config(tmp_path / "cut", checkpoint_every=0),
                       log=stop_after_last_epoch, show_progress=False)
    assert not (tmp_path / "cut" / "results.json").exists()
    damage_newest_save(tmp_path / "cut" / "checkpoints" / "noise" / "latest" / "2", "flip")
    messages = []
    resumed = run_experiment(_tiny_config(tmp_path / "cut", resume=True, checkpoint_every=0),
                             log=messages.append, show_progress=False)
    assert any("checksum mismatch" in m and "falling back to epoch 1" in m for m in messages)
    assert any("resumed noise from epoch 1" in m for m in messages)
    a = full.methods["noise"]
    b = resumed.methods["noise"]
    assert not b.diverged
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.at(0.3).accuracies == b.at(0.3).accuracies
    assert resumed.wall_seconds >= b.train_seconds


def test_a_damaged_save_of_the_kept_epoch_is_trained_again_never_replaced(tmp_path):
    """A finished run whose kept epoch's save is damaged, resumed for one σ more: it used to
    score an earlier best in its place (and rewrite the finished σ). Now the resume stops
    in one line, with the saves from that epoch on deleted, and the next resume trains
    them again: the kept epoch and the finished σ's numbers are the first run's."""
    from neft_jax.harness.checkpoints import CheckpointCorrupt

    cfg = _tiny_config(tmp_path / "run", checkpoint_every=0)
    first = run_experiment(cfg, log=lambda m: None, show_progress=False).methods["noise"]
    kept = tmp_path / "run" / "checkpoints" / "noise" / "best" / str(first.best_epoch)
    damage_newest_save(kept, "flip")
    wider = dataclasses.replace(cfg, resume=True, extra_sigmas=(0.1,))
    with pytest.raises(CheckpointCorrupt, match=f"best/{first.best_epoch}, the kept epoch's "
                       f"state, is corrupt .* every save from epoch {first.best_epoch} on"):
        run_experiment(wider, log=lambda m: None, show_progress=False)
    assert not kept.exists()
    again = run_experiment(wider, log=lambda m: None, show_progress=False).methods["noise"]
    assert again.best_epoch == first.best_epoch
    assert [h["loss"] for h in again.history] == [h["loss"] for h in first.history]
    assert again.at(0.3).accuracies == first.at(0.3).accuracies
    assert again.at(0.1) is not None


def test_a_resume_keeps_the_micro_batch_the_run_trained_with(tmp_path):
    """The conv backward micro-batch changes float rounding: a resume reuses the size in the
    run's settings.json (not the tuner's choice of today); a size given on the resume is
    used, with a warning where it differs; a new run and an old folder are left alone."""
    from neft_jax.harness.identity import trained_with, write_settings_file
    from neft_jax.harness.orchestration import with_recorded_micro_batch

    os.makedirs(tmp_path / "run")
    write_settings_file(str(tmp_path / "run"), _tiny_config(tmp_path / "run",
                                                            backward_micro_batch=4))
    assert trained_with(str(tmp_path / "run")) == {"backward_micro_batch": 4,
                                                   "local_devices": 1}
    resumed = _tiny_config(tmp_path / "run", resume=True, backward_micro_batch=None)
    assert with_recorded_micro_batch(resumed, log=pytest.fail).backward_micro_batch == 4
    warnings = []
    given = dataclasses.replace(resumed, backward_micro_batch=0)
    assert with_recorded_micro_batch(given, log=warnings.append) is given
    assert len(warnings) == 1 and "not the 4 this run trained with" in warnings[0]
    fresh = dataclasses.replace(resumed, resume=False)
    assert with_recorded_micro_batch(fresh, log=pytest.fail) is fresh
    old = _tiny_config(tmp_path / "old", resume=True)  # no settings.json: as before
    assert with_recorded_micro_batch(old, log=pytest.fail) is old
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["trained_with"]["local_devices"] == 1
    settings["trained_with"]["local_devices"] = 4  # as if trained on 4 devices
    (tmp_path / "run" / "settings.json").write_text(json.dumps(settings))
    with_recorded_micro_batch(resumed, log=warnings.append)
    assert "this run trained on 4 devices so far and goes on with 1" in warnings[-1]


def test_a_resumed_run_counts_the_training_time_of_its_earlier_launch(tmp_path):
    from neft_jax.harness.bookkeeping import RunProgress
    from neft_jax.harness.checkpoints import RunCheckpoints

    run = RunProgress(_tiny_config(tmp_path), "noise", 0.0, RunCheckpoints(tmp_path / "c"))
    run.history = [{"epoch": 1, "seconds": 5.0}, {"epoch": 2, "seconds": 7.0}]
    run.start_epoch = 1  # epoch 1 came from the checkpoint, epoch 2 ran in this launch
    assert run.outcome(None, {}, train_seconds=8.0).train_seconds == 13.0


def test_same_seed_same_numbers_and_method_skipped_on_resume(tmp_path, monkeypatch):
    from neft_jax.harness import orchestration

    writes = []  # results' files are written once per trained method (plots ≈ 0.5 s each)
    write_results = orchestration.write_results
    monkeypatch.setattr(orchestration, "write_results",
                        lambda *a: writes.append(1) or write_results(*a))
    first = run_experiment(_tiny_config(tmp_path / "a", max_train_steps=2), log=lambda m: None,
                           show_progress=False)
    assert len(writes) == 1
    second = run_experiment(_tiny_config(tmp_path / "b", max_train_steps=2), log=lambda m: None,
                            show_progress=False)
    # Every number in results.json but timings (and the folder name) is identical.
    a = _without_timings(json.loads((tmp_path / "a" / "results.json").read_text()))
    b = _without_timings(json.loads((tmp_path / "b" / "results.json").read_text()))
    assert a == b
    assert a["methods"]["noise"]["evaluations"]["0.3"]["accuracies"]
    chex.assert_trees_all_equal(first.methods["noise"].history[0]["loss"],
                                second.methods["noise"].history[0]["loss"])
    messages = []
    monkeypatch.setattr(orchestration, "train_runs",
                        lambda *a, **k: pytest.fail("a finished method was trained again"))
    run_experiment(_tiny_config(tmp_path / "a", max_train_steps=2, resume=True),
                   log=messages.append, show_progress=False)
    assert any("already done" in m for m in messages)
    assert len(writes) == 3  # the finished run's files written again, as resumed


def _without_timings(tree):
    if isinstance(tree, dict):
        return {k: _without_timings(v) for k, v in tree.items()
                if "seconds" not in k and k not in ("environment", "out")}
    if isinstance(tree, list):
        return [_without_timings(v) for v in tree]
    return tree


def test_refuses_non_empty_out_and_incompatible_resume(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no run .*choose a new or empty --out"):
        run_experiment(_tiny_config(out), log=lambda m: None, show_progress=False)
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is not empty: pass --resume"):
        run_experiment(_tiny_config(out), log=lambda m: None, show_progress=False)
    (out / "metrics.jsonl").unlink()
    (out / "something.txt").unlink()
    (out / "results.json").write_text(json.dumps({"settings": {"model": "resnet18"},
                                                  "methods": {}}))
    with pytest.raises(ValueError, match="model"):
        run_experiment(_tiny_config(out, resume=True), log=lambda m: None, show_progress=False)


@pytest.mark.parametrize("changes, field", [
    ({"sigma": -1.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
    ({"model": "alexnet"}, "model"), ({"dataset": "imagenet"}, "dataset"),
    ({"methods": ("dropout",)}, "methods"), ({"device_preset": "PCM"}, "device_preset"),
    ({"alpha": 0.0}, "alpha"), ({"epochs": 0}, "epochs"), ({"batch_size": -2}, "batch_size"),
    ({"mc_runs": 0}, "mc_runs"), ({"seed": 1.5}, "seed"), ({"val_every": 0}, "val_every"),
])
def test_config_validation_names_the_field(tmp_path, changes, field):
    with pytest.raises(ValueError, match=field):
        _tiny_config(tmp_path, **changes)


@pytest.mark.parametrize("argv, flag", [
    (["--sigma", "-0.1"], "--sigma"), (["--sigma", "nan"], "--sigma"),
    (["--model", "alexnet"], "--model"), (["--epochs", "0"], "--epochs"),
    (["--mc-runs", "-3"], "--mc-runs"), (["--seed", "1.5"], "--seed"),
    (["--alpha", "0"], "--alpha"), (["--device-preset", "PCM"], "--device-preset"),
    (["--methods", "vanilla,dropout"], "methods"),
    (["--backward-micro-batch", "-1"], "--backward-micro-batch"),
    (["--val-every", "0"], "--val-every"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_cli.run_main(argv + ["--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_tfds_dataset_offline_fails_fast(tmp_path, capsys, monkeypatch):
    """A missing TFDS dataset is one line naming --data-dir and mnist5k, without any
    attempt to reach the network (a download would hang or fail on these machines)."""
    import socket

    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: attempts.append(a))
    code = run_cli.run_main(TINY + ["--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"),
                                "--out", str(tmp_path / "out")])
    assert code == 2 and not attempts
    err = capsys.readouterr().err
    assert "--data-dir" in err and "mnist5k" in err


def test_default_alpha_follows_authors_table():
    assert default_alpha("vgg8", "mnist5k", "irs") == 1e-2
    assert default_alpha("resnet18", "cifar100", "ovf") == 1e-1
    assert default_alpha("vgg8", "cifar100", "irs") == 1e-1  # falls back to CIFAR-10


def test_alpha_search_picks_best_validation_score(tmp_path, monkeypatch):
    import neft_jax.harness.orchestration as orchestration

    monkeypatch.setattr(orchestration, "ALPHA_GRID", (1.0, 1e-3))
    cfg = _tiny_config(tmp_path / "search", methods=("irs",), alpha_search=True,
                       max_train_steps=2)
    results = run_experiment(cfg, log=lambda m: None, show_progress=False)
    entry = results.methods["irs"]
    search = entry.alpha_search
    assert set(search) == {"1", "0.001"}
    assert entry.alpha == max((score, float(alpha)) for alpha, score in search.items())[1]
    assert (tmp_path / "search" / "checkpoints" / "irs-alpha1" / "best").is_dir()
    assert (tmp_path / "search" / "checkpoints" / "irs-alpha0.001" / "latest").is_dir()
    # --keep-checkpoints none: every α the search trained is pruned, not only the chosen one
    none = dataclasses.replace(cfg, out=str(tmp_path / "none"), keep_checkpoints="none")
    run_experiment(none, log=lambda m: None, show_progress=False)
    assert not os.listdir(tmp_path / "none" / "checkpoints")


def test_table_v_ablation_flags_build_fewer_exits_and_equal_coefficients(tmp_path, capsys):
    out = tmp_path / "ablation"
    code = run_cli.run_main(TINY + ["--methods", "irs", "--drop-exit", "2", "--equal-coefficients",
                                "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["drop_exits"] == [2]
    assert results["settings"]["equal_coefficients"] is True
    cfg = _tiny_config(tmp_path / "unused", methods=("irs",), drop_exits=(2,),
                       equal_coefficients=True)
    assert cfg.exits_for("irs") == (1, 3) and cfg.exits_for("noise") is False
    assert cfg.feedback_decay == 1.0
    outcome, = train_runs([dataclasses.replace(cfg, max_train_steps=1)],
                          data_lib.load_dataset("mnist5k"), "irs", 1.0, log=lambda m: None,
                          show_progress=False)
    assert sorted(k for k in outcome.state.params if k.startswith("exit_")) == [
        "exit_1", "exit_3"]


@pytest.mark.parametrize("drop", [(4,), (1, 2, 3), (0,), (2, 2)])
def test_drop_exits_must_name_exits_of_the_model_and_leave_one(tmp_path, drop):
    with pytest.raises(ValueError, match="drop_exits"):
        _tiny_config(tmp_path, drop_exits=drop)


def test_resnet18_configs_know_its_four_exits(tmp_path):
    cfg = _tiny_config(tmp_path, model="resnet18", methods=("irs",), drop_exits=(4,))
    assert cfg.exits_for("irs") == (1, 2, 3)
    with pytest.raises(ValueError, match="drop_exits"):
        _tiny_config(tmp_path, model="resnet18", drop_exits=(5,))


def test_bf16_compute_trains_float32_params_and_differs_from_fp32(tmp_path):
    import jax
    import jax.numpy as jnp

    dataset = data_lib.load_dataset("mnist5k")
    losses = {}
    for compute in ("fp32", "bf16"):
        cfg = _tiny_config(tmp_path / compute, max_train_steps=2, compute=compute)
        with jax.default_matmul_precision(cfg.matmul_precision):
            outcome, = train_runs([cfg], dataset, "noise", 0.0, log=lambda m: None,
                                  show_progress=False)
        assert outcome.model.dtype == (jnp.bfloat16 if compute == "bf16" else jnp.float32)
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(outcome.state.params))
        losses[compute] = outcome.history[0]["loss"]
        assert np.isfinite(losses[compute])
    assert losses["fp32"] != losses["bf16"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


@pytest.mark.parametrize("argv, backend, compute", [
    ([], "gpu", "tf32"),  # the paper profile computes in TF32, like the authors' cuDNN convs
    ([], "cpu", "fp32"),
    (["--profile", "paper"], "cpu", "tf32"),  # tf32 is fp32 arithmetic on CPU
    (["--compute", "bf16"], "gpu", "bf16"),
    (["--profile", "paper", "--compute", "fp32"], "gpu", "fp32"),
])
def test_compute_follows_the_profile_unless_given(argv, backend, compute, tmp_path):
    args = run_cli.run_parser().parse_args([*argv, "--out", str(tmp_path)])
    cfg, line = run_cli.config_from_args(args, backend)
    assert cfg.compute == compute and f"compute {compute}" in line


def test_the_profile_line_names_the_conv_backward_split(tmp_path):
    """run.py's first line: the library's 8 where the tuner is off (as in these tests), the
    whole batch for --backward-micro-batch 0."""
    for argv, text in (([], "8"), (["--backward-micro-batch", "0"], "the whole batch")):
        args = run_cli.run_parser().parse_args([*argv, "--out", str(tmp_path)])
        assert f"conv backward in micro-batches of {text}" in run_cli.config_from_args(
            args, "cpu")[1]


def test_compute_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="compute must be one of"):
        _tiny_config(tmp_path, compute="fp16")


def test_help_describes_each_profile():
    from neft_jax.harness.config import PROFILES

    text = " ".join(run_cli.run_parser().format_help().split())
    for profile in PROFILES.values():
        assert f"{profile.name}: {' '.join(profile.doc.split())}" in text


def test_keep_checkpoints_newest_halves_the_saves_and_a_resume_adding_sigma_trains_nothing(
        tmp_path):
    from neft_jax.harness.orchestration import prune_checkpoints

    cfg = _tiny_config(tmp_path / "run", checkpoint_every=0, keep_checkpoints="newest")
    run_experiment(cfg, log=lambda m: None, show_progress=False)
    saved = tmp_path / "run" / "checkpoints" / "noise"
    assert os.listdir(saved / "latest") == ["2"] and len(os.listdir(saved / "best")) == 1
    messages = []
    wider = run_experiment(dataclasses.replace(cfg, resume=True, extra_sigmas=(0.5,)),
                           log=messages.append, show_progress=False)
    assert any("resumed noise from epoch 2" in m for m in messages)
    assert not any("epoch 1/2" in m or "epoch 2/2" in m for m in messages)  # no training
    assert set(wider.methods["noise"].evaluations) == {0.3, 0.5}
    prune_checkpoints(str(saved), "none")
    assert not saved.exists()
