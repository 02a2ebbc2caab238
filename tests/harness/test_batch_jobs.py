"""Batch-job reliability (issue 19): one writer per folder, shared sweeps, clean stops,
one-line errors naming the file."""

import contextlib
import dataclasses
import json
import os
import signal

import pytest
from checkpoint_damage import damage_newest_save
from stops import ctrl_c_at_the_end_of_epoch_1
from subprocess_env import shared_cache_env
from tiny import TINY as TINY_SETTINGS
from tiny import TINY_ARGS, tiny_config

from neft_jax.harness import cli
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.locking import FolderBusy, FolderLock
from neft_jax.harness.orchestration import prepare_out_dir
from neft_jax.harness.results import RunResults
from neft_jax.harness.sweeps import Cell, run_sweep

TINY = [*TINY_ARGS, "--max-train-steps", "1"]  # tests/tiny.py: programs shared


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


def test_overwrite_deletes_only_what_a_run_wrote_and_refuses_a_folder_without_a_run(
        tmp_path, capsys):
    out = tmp_path / "project"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "src" / "model.py").write_text("mine")
    assert cli.run_main(TINY + ["--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no run" in err[0] and "notes.txt" in err[0]
    assert (out / "notes.txt").read_text() == "mine" and (out / "src" / "model.py").exists()
    assert cli.run_main(TINY + ["--out", str(out)]) == 2  # nor a hint that cannot work
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds no run" in err[0] and "choose a new or empty --out" in err[0]
    assert "--resume" not in err[0]

    for name in ("checkpoints/noise", "seed-0/checkpoints", "seed-notes", "seed-1b"):
        (out / name).mkdir(parents=True)
    for name in ("results.json", "metrics.jsonl", "results.csv.tmp-12"):
        (out / name).write_text("{}")
    cfg = ExperimentConfig(methods=("noise",), epochs=1, out=str(out), overwrite=True)
    assert prepare_out_dir(cfg) is None
    left = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert left == ["notes.txt", "seed-1b", "seed-notes", "src"]  # seed folders are seed-<n>
    assert (out / "notes.txt").read_text() == "mine"


def test_an_out_below_a_file_names_that_file(tmp_path):
    (tmp_path / "notes").write_text("")
    cfg = ExperimentConfig(methods=("noise",), epochs=1, out=str(tmp_path / "notes" / "a" / "b"))
    with pytest.raises(ValueError, match="notes' is a file, not a folder"):
        prepare_out_dir(cfg)


def test_lock_is_held_for_the_run_and_released_after(tmp_path):
    cfg = ExperimentConfig(methods=("noise",), epochs=1, out=str(tmp_path / "r"))
    with contextlib.ExitStack() as locks:
        prepare_out_dir(cfg, locks)
        with pytest.raises(FolderBusy):
            FolderLock(cfg.out)
    FolderLock(cfg.out).release()


def test_sweep_workers_skip_a_cell_another_worker_holds(tmp_path):
    base = ExperimentConfig(**TINY_SETTINGS, max_train_steps=1)
    cells = [Cell("vgg8", "mnist5k", "noise", 0.3, None, 0)]
    held = FolderLock(str(tmp_path / "cells" / cells[0].name))
    messages = []
    run_sweep(cells, base, str(tmp_path), log=messages.append, show_progress=False)
    assert any("held by another worker, skipped" in m for m in messages)
    assert not (tmp_path / "cells" / cells[0].name / "results.json").exists()
    assert f"0 of 1 cells finished; not yet: {cells[0].name}" in messages[-1]
    held.release()


def test_sweep_workers_skip_a_cell_another_worker_finished_since_they_began(tmp_path,
                                                                           monkeypatch):
    """Workers sharing a sweep by locks: a cell another worker finished after this one
    listed its work is skipped, not resumed as a 0 s cell (which the time budget would
    then take for a measurement)."""
    import neft_jax.harness.sweeps as sweeps
    from neft_jax.harness.budget import Budget
    from neft_jax.harness.results import Evaluation, MethodResult

    base = ExperimentConfig(**TINY_SETTINGS, max_train_steps=1)
    cells = [Cell("vgg8", "mnist5k", "noise", s, None, 0) for s in (0.3, 0.5)]
    ran = []

    def first_cell_while_the_other_worker_finishes_the_second(cfg, **_):
        ran.append(cfg.out)
        path = tmp_path / "cells" / cells[1].name
        os.makedirs(path, exist_ok=True)
        settings = sweeps.cell_config(base, cells[1], str(path)).to_dict()
        RunResults(settings={**settings, "eval_sigmas": [0.5]}, methods={"noise": MethodResult(
            alpha=None, evaluations={0.5: Evaluation(0.5, {"mean": 50.0})})},
            wall_seconds=30.0).save(str(tmp_path / "cells" / cells[1].name / "results.json"))

    monkeypatch.setattr(sweeps, "run_experiment",
                        first_cell_while_the_other_worker_finishes_the_second)
    monkeypatch.setattr(sweeps, "write_combined", lambda *_, **__: [])
    messages, budget = [], Budget(1000.0)
    run_sweep(cells, base, str(tmp_path), log=messages.append, show_progress=False,
              budget=budget)
    assert ran == [str(tmp_path / "cells" / cells[0].name)]
    assert f"[2/2] {cells[1].name}: done by another worker, skipped" in messages
    assert sum(len(d) for d in budget.durations.values()) == 1  # the first cell only


def test_a_sweep_draws_its_plots_once_when_it_ends_or_stops(tmp_path, monkeypatch):
    """sweep.json/csv after every cell, the plots (≈ 1 s) once: at the end, or when the
    sweep stops (here a stop after the second cell)."""
    import neft_jax.harness.sweep_plots as sweep_plots
    import neft_jax.harness.sweeps as sweeps
    from neft_jax.harness.results import Evaluation, MethodResult

    base = ExperimentConfig(**TINY_SETTINGS, max_train_steps=1)
    cells = [Cell("vgg8", "mnist5k", "noise", s, None, 0) for s in (0.2, 0.3, 0.4)]

    def finish(cfg, **_):
        if cfg.sigma == 0.4:
            raise cli.Stopped("SIGTERM")
        os.makedirs(cfg.out, exist_ok=True)
        RunResults(settings={**cfg.to_dict(), "eval_sigmas": [cfg.sigma]},  # the cell's
                   methods={"noise": MethodResult(alpha=None, evaluations={cfg.sigma: Evaluation(
                       cfg.sigma, {"mean": 50.0, "ci95": 1.0}, accuracies=[50.0, 50.0])})},
                   ).save(os.path.join(cfg.out, "results.json"))

    drawn = []
    monkeypatch.setattr(sweeps, "run_experiment", finish)
    monkeypatch.setattr(sweep_plots, "plot_sweep", lambda table, out: drawn.append(len(table)))
    run_sweep(cells[:2], base, str(tmp_path / "ends"), log=lambda _: None,
              show_progress=False)
    assert drawn == [2]  # once, at the end
    with pytest.raises(cli.Stopped):
        run_sweep(cells, base, str(tmp_path / "stops"), log=lambda _: None,
                  show_progress=False)
    assert drawn == [2, 2]  # once, with both finished cells, when the third is stopped
    assert len(json.loads((tmp_path / "stops" / "sweep.json").read_text())["cells"]) == 2


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


def test_a_resume_may_add_methods_but_not_drop_any(tmp_path):
    out = tmp_path / "run"
    cfg = ExperimentConfig(methods=("noise",), mc_runs=2, out=str(out))
    out.mkdir()
    RunResults(settings={**cfg.to_dict(), "eval_sigmas": [0.4]}).save(str(out / "results.json"))
    (out / "checkpoints" / "noise").mkdir(parents=True)  # noise has begun: it may not be dropped
    grown = dataclasses.replace(cfg, methods=("noise", "irs"), resume=True)
    assert prepare_out_dir(grown) is not None  # noise's finished result stays, irs trains
    with pytest.raises(ValueError, match=r"methods=\['noise'\] → methods=\['irs'\]"):
        prepare_out_dir(dataclasses.replace(cfg, methods=("irs",), resume=True))


# --- checkpoints verified (issue 19, item 4) -----------------------------------------------


@pytest.mark.parametrize("how", ["flip", "truncate", "metadata"])
def test_a_damaged_checkpoint_falls_back_to_the_save_before_it(tmp_path, how):
    import jax.numpy as jnp

    from neft_jax.harness.checkpoints import CheckpointCorrupt, RunCheckpoints

    target = {"w": jnp.zeros(1000)}
    checkpoints = RunCheckpoints(tmp_path / "ckpt")
    checkpoints.save_latest(1, {"w": jnp.arange(1000.0)}, {"epoch": 1})
    checkpoints.save_latest(2, {"w": jnp.arange(1000.0) + 1}, {"epoch": 2})
    checkpoints.close()
    damage_newest_save(tmp_path / "ckpt" / "latest" / "2", how)
    warnings = []
    state, meta = RunCheckpoints(tmp_path / "ckpt").restore(target, log=warnings.append)
    assert meta == {"epoch": 1} and float(state["w"][5]) == 5.0
    assert len(warnings) == 1 and "latest/2" in warnings[0] and "falling back to epoch 1" \
        in warnings[0] and "\n" not in warnings[0]

    damage_newest_save(tmp_path / "ckpt" / "latest" / "1", how)
    with pytest.raises(CheckpointCorrupt, match="no intact checkpoint left in .*latest.*"
                       "--overwrite"):
        RunCheckpoints(tmp_path / "ckpt").restore(target, log=warnings.append)


def test_an_out_path_the_checkpointer_cannot_use_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "job[1]"
    assert cli.run_main(TINY + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot hold checkpoints" in err[0] and "job[1]" in err[0]
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


# --- Monte Carlo saved per σ, clean stops, one-line errors (items 3, 5) --------------------


def test_monte_carlo_keeps_finished_sigmas_when_stopped_and_on_a_wider_resume(tmp_path,
                                                                              monkeypatch):
    """Ctrl-C during the second σ: the first σ's evaluation is kept; the resumed run, asked
    for one more σ, evaluates only the σ it has not got."""
    from neft_jax.harness import evaluation

    cfg = tiny_config(tmp_path / "run", methods=("noise",), max_train_steps=1,
                      extra_sigmas=(0.1,))
    evaluated = []
    real = evaluation.monte_carlo

    def counting(model, variables, test_set, keys, device, **kwargs):
        if kwargs.get("progress") is None:  # the per-epoch validation
            return real(model, variables, test_set, keys, device, **kwargs)
        if len(evaluated) == 2 and stop_at_third:  # σ = 0 and 0.1 done, then Ctrl-C
            raise KeyboardInterrupt
        evaluated.append(device.sigma)
        return real(model, variables, test_set, keys, device, **kwargs)

    monkeypatch.setattr(evaluation, "monte_carlo", counting)
    from neft_jax.harness.orchestration import run_experiment

    stop_at_third = True
    with pytest.raises(KeyboardInterrupt) as stop:
        run_experiment(cfg, log=lambda m: None, show_progress=False)
    assert "Monte Carlo evaluation of noise" in stop.value.__notes__[0]
    assert evaluated == [0.0, 0.1]
    stop_at_third = False
    results = run_experiment(dataclasses.replace(cfg, resume=True, extra_sigmas=(0.1, 0.2)),
                             log=lambda m: None, show_progress=False)
    assert evaluated == [0.0, 0.1, 0.2, 0.3]  # σ = 0 and 0.1 were not evaluated again
    assert set(results.methods["noise"].evaluations) == {0.1, 0.2, 0.3}


def test_a_stop_names_the_epoch_and_method_and_a_second_ctrl_c_is_ignored(tmp_path, capsys,
                                                                          monkeypatch):
    """A real SIGINT at the end of epoch 1, and a second one while the stop cleans up (as
    the folder's lock is released): the second is ignored, so the clean-up ends (the lock
    file is gone) and the user sees one line. It used to raise inside the clean-up."""
    ctrl_c_at_the_end_of_epoch_1(monkeypatch, real_signal=True)
    release = FolderLock.release

    def release_under_a_second_ctrl_c(self):
        os.kill(os.getpid(), signal.SIGINT)
        release(self)

    monkeypatch.setattr(FolderLock, "release", release_under_a_second_ctrl_c)
    out, before = tmp_path / "r", signal.getsignal(signal.SIGINT)
    assert cli.run_main(TINY + ["--methods", "irs", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped by SIGINT in epoch 1/2 of irs" in err[0]
    assert "--resume" in err[0]
    assert not (out / ".lock").exists()
    assert signal.getsignal(signal.SIGINT) is before  # restored: the test owns the process


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import neft_jax.harness.orchestration as orchestration

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/scratch/run/results.json")
        except OSError as error:  # as orbax does: wrapped in another error
            raise RuntimeError("checkpoint save failed") from error

    monkeypatch.setattr(orchestration, "run_experiment", full)
    assert cli.run_main(TINY + ["--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full writing /scratch/run/results.json" in err[0]
    assert "--resume" in err[0]


def test_library_logs_stay_quiet_unless_verbose():
    import logging

    cli.quiet_library_logs(verbose=False)
    assert not logging.getLogger("absl").isEnabledFor(logging.ERROR)
    cli.quiet_library_logs(verbose=True)
    assert logging.getLogger("absl").isEnabledFor(logging.INFO)
    cli.quiet_library_logs(verbose=False)


# --- sweeps shared by many workers (item 2) ------------------------------------------------


def test_a_static_worker_split_covers_every_cell_once():
    from neft_jax.harness.sweeps import Worker

    workers = [Worker(i, 3) for i in (1, 2, 3)]
    assert all(sum(w.takes(p) for w in workers) == 1 for p in range(10))
    with pytest.raises(ValueError, match="I/N"):
        Worker.parse("4/3")


def test_a_worker_trains_only_its_share(tmp_path):
    from neft_jax.harness.sweeps import Worker

    base = ExperimentConfig(**TINY_SETTINGS, max_train_steps=1)
    cells = [Cell("vgg8", "mnist5k", "noise", 0.3, None, 0)]
    run_sweep(cells, base, str(tmp_path), log=lambda m: None, show_progress=False,
              worker=Worker(2, 2))  # cell 0 is worker 1's
    assert not (tmp_path / "cells" / cells[0].name).exists()


def test_workers_with_other_settings_on_one_out_are_refused_not_tabled_together(tmp_path):
    """Worker 1 made cell 0 with 1 epoch; worker 2, started with 2 epochs, used to train
    cell 1 and table the two side by side. Every cell of the grid is checked now."""
    from neft_jax.harness.identity import SettingsChanged
    from neft_jax.harness.sweeps import Worker

    base = ExperimentConfig(**TINY_SETTINGS, max_train_steps=1)
    cells = [Cell("vgg8", "mnist5k", "noise", s, None, 0) for s in (0.3, 0.2)]
    run_sweep(cells, base, str(tmp_path), log=lambda m: None, show_progress=False,
              worker=Worker(1, 2))
    other = dataclasses.replace(base, epochs=base.epochs + 1)
    with pytest.raises(SettingsChanged, match=f"epochs={base.epochs} → epochs={other.epochs}"):
        run_sweep(cells, other, str(tmp_path), log=lambda m: None, show_progress=False,
                  worker=Worker(2, 2))
    assert not (tmp_path / "cells" / cells[1].name).exists()


def test_two_sweep_workers_on_one_folder_train_every_cell_exactly_once(tmp_path):
    """Two real sweep.py processes started together on one --out (as an array job would):
    every cell is trained by exactly one of them, and the combined table has every cell."""
    import json
    import os
    import subprocess
    import sys


    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "sweep"
    cmd = [sys.executable, os.path.join(root, "experiments", "sweep.py"), "--methods", "noise",
           "--sigmas", "0.1,0.2", *TINY, "--out", str(out)]
    env = shared_cache_env()  # subprocesses share this session's compilation cache
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    logs = [worker.communicate(timeout=600) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in logs]
    assert sum(stdout.count("noise: training") for stdout, _ in logs) == 2
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 2
    for cell in cells:  # one epoch, trained once: one line
        assert len((cell / "metrics.jsonl").read_text().splitlines()) == 1
    table = json.loads((out / "sweep.json").read_text())["over_seeds"]
    assert sorted(row["sigma"] for row in table) == [0.1, 0.2]


def test_monte_carlo_keys_of_any_sigma_and_unchanged_for_the_usual_ones():
    import jax

    from neft_jax.harness.evaluation import MC_KEY_OFFSET, mc_keys

    before = jax.random.split(jax.random.fold_in(jax.random.key(3), MC_KEY_OFFSET + 400000), 2)
    assert (jax.random.key_data(mc_keys(3, 0.4, 2)) == jax.random.key_data(before)).all()
    # ... and the published runs' keys themselves (seed 3, σ = 0.4; offset 2**20), so a change
    # of the offset cannot pass either
    assert MC_KEY_OFFSET == 2**20 and jax.random.key_data(mc_keys(3, 0.4, 2)).tolist() == [
        [13599631, 1180106153], [2235356215, 3160343360]]
    assert mc_keys(3, 1e9, 2).shape == (2,)  # σ·1e6 past 32 bits wraps instead of failing
