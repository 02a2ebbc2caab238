"""Crash safety, divergence handling and reproducibility of the experiment runner."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest
from subprocess_env import shared_cache_env
from tiny import TINY, TINY_DATA_DIR, tiny_config

from neft_jax import train as T
from neft_jax.harness import cli
from neft_jax.harness.checkpoints import RunCheckpoints
from neft_jax.harness.data import load_dataset
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.results import write_atomic
from neft_jax.models import create_model
from neft_jax.stats import count_not_converged

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_PY = os.path.join(ROOT, "experiments", "run.py")
CLI = ["--methods", "noise", "--checkpoint-every", "0", "--epochs", "3", "--batch-size", "64",
       "--width", "0.0625",
       "--mc-runs", "2", "--val-mc-runs", "1", "--sigma", "0.2", "--no-progress",
       "--backward-micro-batch", "0",  # whole-batch conv backward: compiles faster
       "--data-dir", TINY_DATA_DIR]  # tests/tiny.py: 1,000 digits, 11 steps of 64 an epoch


def test_divergence_is_reported_and_other_methods_carry_on(tmp_path):
    cfg = tiny_config(tmp_path / "out", methods=("ovf", "noise"), alpha=1e38, sigma=0.2,
                      max_train_steps=3)  # tests/tiny.py: programs shared
    messages = []
    results = run_experiment(cfg, log=messages.append, show_progress=False).to_json()
    ovf, noise = results["methods"]["ovf"], results["methods"]["noise"]
    assert ovf["diverged"] is True
    assert all(e["diverged"] for e in ovf["evaluations"].values())
    assert any("NaN/inf" in m for m in messages)
    assert noise["diverged"] is False
    assert len(noise["evaluations"]["0.2"]["accuracies"]) == TINY["mc_runs"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"]["ovf"]["diverged"] is True


def test_diverged_runs_count_as_not_converged():
    assert count_not_converged([0.95, 0.96, float("nan"), 0.94]) == 1


def test_a_run_that_diverged_after_keeping_an_epoch_is_judged_by_that_epoch():
    """Table III over seeds: seed 1 has no result (NaN before any kept epoch) and does not
    converge; seed 2 diverged later and is judged by its kept epoch's accuracy, which is
    within 5 points of the mean; both are named as diverged."""
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults
    from neft_jax.harness.seeds import aggregate_seeds

    def seed_result(mean, diverged):
        summary = None if mean is None else {"mean": mean, "ekl": 0.5}
        entry = MethodResult(alpha=0.0, diverged=diverged,
                             evaluations={0.3: Evaluation(sigma=0.3, summary=summary)})
        return RunResults(settings={}, methods={"noise": entry})

    cfg = tiny_config("unused", methods=("noise",))
    per_seed = {0: seed_result(90.0, False), 1: seed_result(None, True),
                2: seed_result(92.0, True), 3: seed_result(91.0, False)}
    evaluation = aggregate_seeds(cfg, per_seed).methods["noise"].at(0.3)
    assert evaluation.not_converged == 1 and evaluation.diverged_seeds == [1, 2]
    assert evaluation.summary["mean"] == pytest.approx(91.0)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_atomic(str(path), '{"old": 1}')

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(str(path), '{"new": 2}')
    assert json.loads(path.read_text()) == {"old": 1}


def _final_params(out):
    """Parameters of the latest checkpoint of the noise run in ``out``."""
    dataset = load_dataset("mnist5k", TINY_DATA_DIR)
    model = create_model("vgg8", dataset.num_classes, exits=False, width=0.0625)
    target = T.create_train_state(model, jax.random.key(0), (1, 32, 32, 1),
                                  T.create_optimizer(1e-3, 10), T.make_hparams(0.2, alpha=0.0))
    checkpoints = RunCheckpoints(os.path.join(out, "checkpoints", "noise"))
    state, meta = checkpoints.restore(target)
    checkpoints.close()
    return state.params, meta


def _run(out, *extra, wait=True):
    cmd = [sys.executable, RUN_PY, *CLI, "--out", str(out), *extra]
    env = shared_cache_env()  # subprocesses share this session's compilation cache
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def _signal_after_epoch(out, epoch: int, signum: int, *extra, again: bool = False):
    """Start run.py on ``out``; send ``signum`` once epoch ``epoch``'s checkpoint exists
    (``again``: and keep sending it every 20 ms until the process ends, as an impatient
    user would while it stops)."""
    proc = _run(out, *extra, wait=False)
    saved = out / "checkpoints" / "noise" / "latest" / str(epoch)
    deadline = time.time() + 300
    while not saved.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # an epoch of 11 steps takes ≈ 0.5 s
    assert saved.exists(), f"epoch {epoch}'s checkpoint never appeared"
    os.kill(proc.pid, signum)
    while again and proc.poll() is None:
        time.sleep(0.02)
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            break
    proc.wait()
    return proc


def test_sigkill_and_sigterm_then_resume_give_identical_parameters(tmp_path, capsys):
    """Killed (SIGKILL) after epoch 1, stopped (SIGTERM, then SIGTERM again and again while
    it stops) after epoch 2 of the resumed run, resumed again: the same parameters and Monte
    Carlo numbers as an uninterrupted run. The repeated signals are ignored: one line, exit
    143 (they used to cut the clean-up short, or kill it with no message once the handler
    was gone)."""
    # The uninterrupted run, the refusal and the last resume run in this process (the same
    # command line, as run.py's main); the interrupted runs are real processes, as the
    # signals need.
    assert cli.run_main([*CLI, "--out", str(tmp_path / "full")]) == 0

    _signal_after_epoch(tmp_path / "killed", 1, signal.SIGKILL)
    assert not (tmp_path / "killed" / "checkpoints" / "noise" / "latest" / "3").exists()

    capsys.readouterr()
    assert cli.run_main([*CLI, "--out", str(tmp_path / "killed")]) == 2
    assert "--resume" in capsys.readouterr().err

    stopped = _signal_after_epoch(tmp_path / "killed", 2, signal.SIGTERM, "--resume",
                                  again=True)
    err = stopped.stderr.read().strip().splitlines()
    stopped.stderr.close()
    assert stopped.returncode == 143 and len(err) == 1, err
    assert "stopped by SIGTERM" in err[0] and "of noise" in err[0] and "--resume" in err[0]
    assert not (tmp_path / "killed" / ".lock").exists()  # the clean-up ran to its end

    # The last resume needs no signal: it runs in this process, as run.py's main.
    assert cli.run_main([*CLI, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    params_full, meta_full = _final_params(tmp_path / "full")
    params_resumed, meta_resumed = _final_params(tmp_path / "killed")
    assert meta_full["epoch"] == meta_resumed["epoch"] == 3
    chex.assert_trees_all_equal(params_full, params_resumed)
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert _strip_times(a) == _strip_times(b)


def _strip_times(results):
    evaluations = results["methods"]["noise"]["evaluations"]
    return {s: {k: v for k, v in e.items() if k != "eval_seconds"}
            for s, e in evaluations.items()}


def _private_small_disk_prefix(folder) -> list[str] | None:
    """A command prefix that runs a command in its own mount namespace with ``folder`` a
    400 KiB tmpfs (root, or unprivileged user namespaces); None where neither works."""
    mount = ["sh", "-c", 'mount -t tmpfs -o size=400k tmpfs "$0" && exec "$@"', str(folder)]
    for unshare in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        try:
            probe = subprocess.run([*unshare, *mount, "true"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return [*unshare, *mount]
    return None


def test_a_disk_that_fills_inside_a_checkpoint_save_is_one_line(tmp_path):
    """A real full disk under orbax's first train-state save: one line naming the
    checkpoint being written, exit 1. It used to print the line among 30-60 tracebacks
    from tensorstore's writer threads and asyncio's "Task exception was never retrieved"."""
    disk = tmp_path / "disk"
    disk.mkdir()
    prefix = _private_small_disk_prefix(disk)
    if prefix is None:
        pytest.skip("no private tmpfs: needs root or unprivileged user namespaces")
    full = subprocess.run([*prefix, sys.executable, RUN_PY, *CLI, "--out", str(disk / "r")],
                          capture_output=True, text=True, timeout=600, env=shared_cache_env())
    err = full.stderr.strip().splitlines()
    assert full.returncode == 1 and len(err) == 1, err[:8]
    assert err[0].startswith(f"run.py: error: disk full writing {disk / 'r' / 'checkpoints'}")
    assert "--resume" in err[0]


def test_unwritable_out_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run(blocker / "sub")
    assert result.returncode == 2
    assert "out" in result.stderr and "Traceback" not in result.stderr


def test_resume_after_kill_between_best_and_latest_saves(tmp_path):
    """A kill after saving epoch 2's best but before its latest: the resumed run redoes
    epoch 2 and must be able to save it again (it used to fail: 'step 2 exists')."""
    import jax.numpy as jnp

    from neft_jax.harness.checkpoints import RunCheckpoints

    state = {"w": jnp.arange(3.0)}
    run = RunCheckpoints(tmp_path / "ckpt")
    run.save_latest(1, state, {"epoch": 1})
    run.save_best(1, state, {"epoch": 1})
    run.save_best(2, {"w": jnp.ones(3)}, {"epoch": 2})  # killed before save_latest(2)
    run.close()
    resumed = RunCheckpoints(tmp_path / "ckpt")
    restored, meta = resumed.restore(state)
    assert meta["epoch"] == 1
    resumed.discard_after(meta["epoch"])
    assert resumed.latest_epoch("best") == 1 and resumed.latest_epoch("latest") == 1
    resumed.save_best(2, state, {"epoch": 2})
    resumed.save_latest(2, state, {"epoch": 2})
    resumed.save_latest(2, {"w": jnp.zeros(3)}, {"epoch": 2, "again": True})  # replaces
    again, meta = resumed.restore(state)
    assert meta["again"] and float(again["w"].sum()) == 0.0
    resumed.close()
