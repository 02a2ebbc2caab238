"""Batch-job reliability (issue 19): one writer per folder, shared sweeps, clean stops,
one-line errors naming the file."""

import contextlib
import dataclasses

import pytest

from neft_jax.harness import cli
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.locking import FolderBusy, FolderLock
from neft_jax.harness.orchestration import prepare_out_dir
from neft_jax.harness.results import RunResults
from neft_jax.harness.sweeps import Cell, run_sweep

TINY = ["--epochs", "1", "--max-train-steps", "1", "--batch-size", "32", "--width", "0.0625",
        "--mc-runs", "2", "--val-mc-runs", "1", "--no-progress"]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with FolderLock(str(out)):
        assert cli.run_main(TINY + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by pid" in err[0] and "another --out" in err[0]
        (out / "results.json").write_text("{}")
        assert cli.run_main(TINY + ["--out", str(out), "--overwrite"]) == 2
        assert (out / "results.json").exists()  # --overwrite did not wipe a locked folder
    FolderLock(str(out)).release()  # free again once the holder is gone


def test_lock_is_held_for_the_run_and_released_after(tmp_path):
    cfg = ExperimentConfig(methods=("noise",), epochs=1, out=str(tmp_path / "r"))
    with contextlib.ExitStack() as locks:
        prepare_out_dir(cfg, locks)
        with pytest.raises(FolderBusy):
            FolderLock(cfg.out)
    FolderLock(cfg.out).release()


def test_sweep_workers_skip_a_cell_another_worker_holds(tmp_path):
    base = ExperimentConfig(epochs=1, max_train_steps=1, batch_size=32, width=0.0625,
                            mc_runs=2, val_mc_runs=1)
    cells = [Cell("vgg8", "mnist5k", "noise", 0.3, None, 0)]
    held = FolderLock(str(tmp_path / "cells" / cells[0].name))
    messages = []
    run_sweep(cells, base, str(tmp_path), log=messages.append, show_progress=False)
    assert any("held by another worker, skipped" in m for m in messages)
    assert not (tmp_path / "cells" / cells[0].name / "results.json").exists()
    held.release()


def test_ctrl_c_and_sigterm_stop_with_one_line_and_the_resume_hint(tmp_path, capsys,
                                                                  monkeypatch):
    import neft_jax.harness.orchestration as orchestration

    for error, code, name in ((KeyboardInterrupt, 130, "SIGINT"), (cli.Stopped, 143, "SIGTERM")):
        def stop(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(orchestration, "run_experiment", stop)
        out = tmp_path / name
        assert cli.run_main(TINY + ["--out", str(out)]) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "--resume" in err[0]


def test_resume_of_a_folder_with_nothing_to_resume_stops(tmp_path, capsys):
    assert cli.run_main(TINY + ["--out", str(tmp_path / "typo"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no run to resume" in err and "Traceback" not in err


def test_unreadable_results_file_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"settings": ')
    assert cli.run_main(TINY + ["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.json" in err[0] and "not a readable results file" in err[0]
    with pytest.raises(ValueError, match="results.json"):
        RunResults.load(str(out / "results.json"))


def test_resume_refuses_another_mc_runs(tmp_path):
    out = tmp_path / "run"
    cfg = ExperimentConfig(methods=("noise",), mc_runs=2, out=str(out))
    out.mkdir()
    RunResults(settings={**cfg.to_dict(), "eval_sigmas": [0.4]}).save(str(out / "results.json"))
    assert prepare_out_dir(dataclasses.replace(cfg, resume=True)) is not None
    with pytest.raises(ValueError, match="mc_runs=2.*mc_runs=4"):
        prepare_out_dir(dataclasses.replace(cfg, mc_runs=4, resume=True))
