"""No silently wrong result (issue 37): every cell and checkpoint knows the settings that
made it, and is reused only with the same settings; bad batch sizes and data files are one
line; checkpoint metadata is checksummed; metrics.jsonl keeps one line per epoch; a stop
says what was saved."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from stops import ctrl_c_at_the_end_of_epoch_1
from subprocess_env import shared_cache_env
from tiny import TINY_ARGS, tiny_config

from neft_jax.harness import cli
from neft_jax.harness import data as data_lib
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.results import Evaluation, MethodResult, RunResults

# The studies (experiments/scaling/, experiments/paper/) live outside the installed library.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Training runs (real processes too) use tests/tiny.py's settings and noise only, so their
# programs are the suite's shared ones, compiled once in the session cache; one training step
# where the check needs no more (max_train_steps is part of a result's settings, so every
# command of a test passes the same value).
NOISE = [*TINY_ARGS, "--methods", "noise"]
ONE_STEP = [*NOISE, "--max-train-steps", "1"]
TINY = ["--epochs", "1", "--max-train-steps", "1", "--batch-size", "32", "--width", "0.0625",
        "--mc-runs", "2", "--val-mc-runs", "1", "--no-progress"]


def _command(script: str, *args: str, wait: bool = True):
    cmd = [sys.executable, os.path.join(ROOT, "experiments", script), *args]
    env = shared_cache_env()  # subprocesses share this session's compilation cache
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- item 1: a sweep reuses a cell only when it was made with the same settings ------------


def test_a_sweep_with_other_settings_on_the_same_out_is_refused_naming_them(tmp_path,
                                                                           capsys):
    out = tmp_path / "SW"
    first = [*ONE_STEP, "--seeds", "2", "--out", str(out)]
    # Set-up, in-process through the same command: a finished two-seed sweep.
    assert cli.sweep_main(first) == 0
    capsys.readouterr()
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 2
    stored = json.loads((cells[0] / "settings.json").read_text())  # visible in the folder
    assert stored["settings"]["width"] == 0.0625 and stored["settings"]["epochs"] == 2
    assert len(stored["fingerprint"]) == 10
    results = cells[0] / "results.json"
    mtime, table = results.stat().st_mtime, (out / "sweep.csv").read_text()
    assert "settings" in table.splitlines()[0]  # the rows name the settings they average

    # The same folder with another width, epochs and Monte Carlo runs: a real sweep.py
    # refuses, in one line naming them.
    other = _command("sweep.py", *first, "--width", "0.05", "--epochs", "3", "--mc-runs", "4")
    line = _one_error_line(other)
    assert line.startswith("sweep.py: error: ") and str(cells[0]) in line
    for change in ("width=0.0625 → width=0.05", "epochs=2 → epochs=3",
                   "mc_runs=3 → mc_runs=4"):
        assert change in line
    assert "another --out" in line and "1 more cell differs too" in line
    assert results.stat().st_mtime == mtime

    # One seed's cell deleted and the grid rerun with more epochs: the other seed's cell is
    # not averaged with a new one into one row; nothing trains.
    shutil.rmtree(cells[1])
    assert cli.sweep_main([*first, "--epochs", "3"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "epochs=2 → epochs=3" in line and "width" not in line
    assert not cells[1].exists() and (out / "sweep.csv").read_text() == table

    # The first command again: its finished cell is reused, the deleted one trained again.
    assert cli.sweep_main(first) == 0
    assert "done before, skipped" in capsys.readouterr().out
    assert results.stat().st_mtime == mtime and (cells[1] / "results.json").exists()


# --- item 2: --resume checks the checkpoints' settings ---------------------------------------


def test_a_resume_after_a_kill_in_the_first_method_checks_the_checkpoints_settings(tmp_path,
                                                                                 capsys):
    out = tmp_path / "run"
    args = [*NOISE, "--checkpoint-every", "0", "--out", str(out)]
    proc = _command("run.py", *args, wait=False)
    saved = out / "checkpoints" / "noise" / "latest" / "1"
    deadline = time.time() + 500
    while not saved.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert saved.exists(), "epoch 1's checkpoint never appeared"
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 2 of noise, its only method
    proc.wait()

    changed = _command("run.py", *args, "--resume", "--sigma", "0.2", "--epochs", "5",
                       "--width", "0.05")
    line = _one_error_line(changed)
    for change in ("sigma=0.4 → sigma=0.2", "epochs=2 → epochs=5",
                   "width=0.0625 → width=0.05"):
        assert change in line
    assert "--resume" in line and "new --out" in line and "--overwrite" in line

    # A run of an earlier version has neither settings.json nor, killed in its first method,
    # results.json: its checkpoints' settings alone refuse, and a new width is named as
    # such, not taken for a corrupt checkpoint (the same command, in-process: the real
    # process's one-line refusal is checked just above).
    for name in ("settings.json", "results.json"):  # results.json: if the kill came late
        if (out / name).exists():
            os.remove(out / name)
    capsys.readouterr()
    assert cli.run_main([*args, "--resume", "--width", "0.05"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert "width=0.0625 → width=0.05" in line and "checkpoints of noise" in line
    assert "corrupt" not in line


def test_a_method_added_by_a_stopped_resume_may_be_dropped_until_it_has_begun(tmp_path):
    """A resume that added OVF and was stopped before OVF began left settings.json listing
    it; the original command must still resume the folder. Once OVF has a checkpoint or a
    result, dropping it is refused (its work would leave the run's settings)."""
    from neft_jax.harness.identity import (
        SettingsChanged,
        check_run_folder,
        started_methods,
        write_settings_file,
    )

    out = tmp_path / "run"
    (out / "checkpoints" / "noise").mkdir(parents=True)
    write_settings_file(str(out), tiny_config(out, methods=("noise", "ovf")))
    original = tiny_config(out, methods=("noise",), resume=True)
    assert started_methods(str(out)) == {"noise"}
    check_run_folder(original, "--resume", "remedy")  # accepted
    (out / "checkpoints" / "ovf-alpha0.001").mkdir()
    assert started_methods(str(out)) == {"noise", "ovf"}
    with pytest.raises(SettingsChanged, match="methods"):
        check_run_folder(original, "--resume", "remedy")


def test_resume_and_overwrite_together_are_refused_and_nothing_is_deleted(tmp_path, capsys):
    out = tmp_path / "done"
    out.mkdir()
    (out / "results.json").write_text('{"settings": {}, "methods": {}}')
    assert cli.run_main(TINY + ["--out", str(out), "--resume", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume and --overwrite" in err[0] and str(out) in err[0]
    assert (out / "results.json").exists()


# --- item 4: a batch larger than the training set --------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--backward-micro-batch", "0"]])
def test_a_batch_larger_than_the_training_set_is_one_line_before_tuning(tmp_path, capsys,
                                                                        monkeypatch, extra):
    import neft_jax.harness.orchestration as orchestration

    tuned = []
    monkeypatch.setattr(orchestration, "with_tuned_micro_batch",
                        lambda cfg, log: tuned.append(cfg) or cfg)
    args = TINY + ["--batch-size", "5000", "--out", str(tmp_path / "o"), *extra]
    assert cli.run_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size 5000 is larger than the training set" in err[0]
    assert "3600 images" in err[0] and "--batch-size 3600 or less" in err[0]
    assert not tuned and not (tmp_path / "o" / "results.json").exists()


# --- item 5: bad data files ------------------------------------------------------------------


def _write_bad_file(path, how: str) -> None:
    digits = np.zeros((50, 28, 28), np.uint8)
    labels = np.arange(50) % 10
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        np.savez_compressed(path, images=digits, labels=labels)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "wrong keys":
        np.savez(path, pictures=digits, labels=labels)
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "pickled":
        np.savez(path, images=np.array([{"a": 1}], dtype=object), labels=labels)
    elif how == "float pixels":  # cast to uint8, pixels in [0, 1] were black, unseen
        np.savez(path, images=digits / 255.0, labels=labels)
    elif how == "labels 1 … 10":
        np.savez(path, images=digits, labels=labels + 1)


@pytest.mark.parametrize("how, says", [
    ("empty", "the file is empty"), ("truncated", "truncated or damaged"),
    ("wrong keys", "no 'images' array"), ("random bytes", "not an npz (zip) archive"),
    ("pickled", "pickled data, which is never loaded"),
    ("float pixels", "images are float64, not the raw uint8 pixels 0 … 255"),
    ("labels 1 … 10", "labels must be digits 0 … 9, got int64 1 … 10")])
def test_a_bad_mnist5k_file_is_one_line_naming_it(tmp_path, capsys, how, says):
    path = tmp_path / "mnist5k.npz"
    _write_bad_file(path, how)
    with pytest.raises(ValueError, match=re.escape(says)) as error:
        data_lib.load_dataset("mnist5k", str(tmp_path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert cli.run_main(TINY + ["--data-dir", str(tmp_path), "--out",
                                str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and says in err[0]


def test_a_data_dir_that_does_not_exist_is_an_error(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert cli.run_main(TINY + ["--data-dir", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--data-dir '{missing}' does not exist" in err[0]


# --- item 6: checksummed metadata, one metrics line per epoch, what a stop saved -------------


def test_edited_checkpoint_metadata_fails_its_checksum(tmp_path):
    import jax.numpy as jnp

    from neft_jax.harness.checkpoints import RunCheckpoints

    checkpoints = RunCheckpoints(tmp_path / "ckpt")
    for epoch in (1, 2):
        checkpoints.save_latest(epoch, {"w": jnp.arange(4.0)},
                                {"epoch": epoch, "best_val_accuracy": 10.0 * epoch})
    checkpoints.close()
    path = tmp_path / "ckpt" / "latest" / "2" / "metadata" / "metadata"
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "best_val_accuracy": 99.0}))
    warnings = []
    _, restored = RunCheckpoints(tmp_path / "ckpt").restore({"w": jnp.zeros(4)},
                                                            log=warnings.append)
    assert restored == {"epoch": 1, "best_val_accuracy": 10.0}
    assert len(warnings) == 1 and "metadata checksum mismatch" in warnings[0]
    assert "falling back to epoch 1" in warnings[0]


def test_a_resume_keeps_one_metrics_line_per_epoch_and_a_stop_says_what_was_saved(tmp_path,
                                                                                 capsys):
    from neft_jax.harness.orchestration import run_experiment

    # tests/tiny.py's programs; 113 steps: epoch 1's 112 and one of epoch 2.
    cfg = tiny_config(tmp_path / "run", methods=("noise",), max_train_steps=113,
                      checkpoint_every=1e9)

    def stop_after_epoch_1(message):
        if "epoch 1/2" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stop:  # epoch 1 logged, never saved
        run_experiment(cfg, log=stop_after_epoch_1, show_progress=False)
    assert "in epoch 1/2 of noise (no epoch of noise saved yet)" in stop.value.__notes__[0]
    assert cli.run_hint(cfg.out).startswith("no method finished yet in ")
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1]

    run_experiment(dataclasses.replace(cfg, resume=True), log=lambda m: None,
                   show_progress=False)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2]  # epoch 1 done again: its line replaced, not repeated
    assert cli.run_hint(cfg.out).startswith(f"finished methods saved in {cfg.out}: noise")


def test_a_stop_before_any_save_does_not_claim_saved_epochs(tmp_path, capsys, monkeypatch):
    ctrl_c_at_the_end_of_epoch_1(monkeypatch)
    assert cli.run_main(ONE_STEP + ["--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in epoch 1/2 of noise (no epoch of noise saved yet)" in err[0]
    assert "no method finished yet" in err[0] and "finished epochs" not in err[0]
    assert "--resume" in err[0]


# --- reports: cells made with other settings are never mixed in -----------------------------


def _fake_cell(folder, method, mean, **settings):
    folder.mkdir(parents=True)
    evaluation = Evaluation(sigma=0.4, summary={"mean": mean, "ci95": 1.0, "std": 7.0,
                                                "runs": 50})
    RunResults(settings={"model": "vgg8", "dataset": "mnist5k", "methods": [method],
                         "sigma": 0.4, "alpha": None, "num_train": 3600, "batch_size": 128,
                         "eval_sigmas": [0.4], **settings},
               methods={method: MethodResult(alpha=None, evaluations={0.4: evaluation})},
               wall_seconds=60.0).save(str(folder / "results.json"))


def test_reports_leave_out_and_never_average_cells_made_with_other_settings(tmp_path):
    from scaling.collect import Point
    from scaling.report import write_study_report

    from neft_jax.harness.sweeps import Cell, aggregate_over_seeds, collect_rows

    base = ExperimentConfig(mc_runs=50, sigma=0.4)
    point = Point(0.125, 12)
    cells = [Cell("vgg8", "mnist5k", "noise", 0.4, None, seed) for seed in (0, 1)]
    _fake_cell(tmp_path / point.name / "cells" / cells[0].name, "noise", 20.0, seed=0,
               epochs=12, mc_runs=50)
    _fake_cell(tmp_path / point.name / "cells" / cells[1].name, "noise", 60.0, seed=1,
               epochs=3, mc_runs=50)  # made with other settings
    table = aggregate_over_seeds(collect_rows(cells, str(tmp_path / point.name)))
    assert sorted((row["seeds"], row["mean"]) for row in table) == [(1, 20.0), (1, 60.0)]
    assert len({row["settings"] for row in table}) == 2

    report = write_study_report(dataclasses.replace(base, seeds=2), [point], str(tmp_path),
                                ("noise",))
    assert [(r.seeds, r.mean) for r in report.rows] == [(1, 20.0)]
    assert len(report.other_settings) == 1 and "epochs=3 → epochs=12" in \
        report.other_settings[0]
    assert "Left out: 1 finished cell made with other settings" in \
        (tmp_path / "SCALING.md").read_text()


def test_a_plan_or_study_with_other_settings_is_refused_before_anything_trains(tmp_path):
    """reproduce.py and scaling.py reuse cells by name too: a finished cell made with
    other epochs stops the launch before any cell trains, naming the change and counting
    the cells made otherwise in every point or stage, not only the first one's."""
    from paper.reproduce import Plan, run_plan
    from scaling.collect import Point
    from scaling.study import run_study

    from neft_jax.harness.identity import SettingsChanged
    from neft_jax.harness.sweeps import Cell

    base = ExperimentConfig(epochs=12, mc_runs=50, sigma=0.4, out=str(tmp_path / "unused"))
    points = [Point(0.125, 12), Point(0.25, 12)]
    cell = Cell("vgg8", "mnist5k", "noise", 0.4, None, 0)
    for point in points:
        _fake_cell(tmp_path / "study" / point.name / "cells" / cell.name, "noise", 20.0,
                   seed=0, epochs=3, mc_runs=50)
    with pytest.raises(SettingsChanged, match="epochs=3 → epochs=12.*1 more cell differs too"):
        run_study(base, points, str(tmp_path / "study"), methods=("noise",),
                  log=lambda m: None, show_progress=False)

    cell = Cell("vgg8", "mnist5k", "noise", 0.6, None, 0)
    _fake_cell(tmp_path / "plan" / "table2_vgg8" / "cells" / cell.name, "noise", 20.0,
               seed=0, sigma=0.6, epochs=3, mc_runs=50)
    cell = Cell("vgg8", "mnist5k", "noise_scaled", 0.4, None, 0)
    _fake_cell(tmp_path / "plan" / "noise_scaled_vgg8" / "cells" / cell.name, "noise_scaled",
               20.0, seed=0, epochs=3, mc_runs=50)
    trained = []
    with pytest.raises(SettingsChanged, match="epochs=3 → epochs=12.*1 more cell differs too"):
        run_plan(base, Plan(models=("vgg8",), stages=("table2", "scaled"), seeds=1,
                            sigmas=(0.6,)),
                 str(tmp_path / "plan"), log=trained.append, show_progress=False)
    assert not any("training" in m for m in trained)
