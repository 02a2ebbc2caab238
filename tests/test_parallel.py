import json
import os
import subprocess
import sys

import numpy as np
import pytest
from subprocess_env import shared_cache_env

from neft_jax.parallel import maybe_initialize_distributed

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def sharded_results():
    # The session's compilation cache: the models' eager init programs (one device each)
    # are the ones the other tests compiled, so the 8-device process reads them back.
    env = {**shared_cache_env(),
           "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, os.path.join(HERE, "sharded_check.py")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_data_parallel_training_matches_single_device(sharded_results):
    r = sharded_results
    assert r["sharded_batch_devices"] == 8
    # One step: the sharded update equals the single-device one up to float reduction order
    # (which can flip a ReLU / max-pool choice on a few inputs, so not bit-for-bit).
    assert r["step_param_diffs"][0] <= 1e-2 * r["first_update_scale"]
    # A few steps of noisy training amplify those differences a little each step; losses
    # and parameters still agree closely.
    for single, sharded in r["losses"]:
        assert sharded == pytest.approx(single, rel=1e-3)
    assert r["param_max_abs_diff"] <= 1e-3 * r["param_scale"]
    assert r["batch_stats_max_abs_diff"] <= 1e-3
    # the first step from an unreplicated state and a shard_batch batch runs and agrees
    assert r["fresh_state_loss"] == pytest.approx(r["losses"][0][1], rel=1e-5)


def test_sharded_monte_carlo_matches_single_device(sharded_results):
    r = sharded_results
    assert len(r["mc_single"]) == 20
    np.testing.assert_allclose(r["mc_sharded"], r["mc_single"], atol=1e-12)
    assert r["ekl_sharded"] == pytest.approx(r["ekl_single"], rel=1e-5)


def test_distributed_initialize_only_with_environment(monkeypatch):
    calls = []
    monkeypatch.setattr("jax.distributed.initialize", lambda: calls.append(1))
    assert maybe_initialize_distributed({}) is False
    assert maybe_initialize_distributed({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is False
    # a plain sbatch script is one process, whatever --ntasks the job asked for (it crashed
    # in jax.distributed.initialize before 2026-12-07)
    assert maybe_initialize_distributed({"SLURM_JOB_ID": "4242"}) is False
    assert maybe_initialize_distributed({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}) is False
    step = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
            "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert maybe_initialize_distributed(step) is True  # srun: a step of 4 tasks
    assert maybe_initialize_distributed({**step, "SLURM_NTASKS": "1"}) is False
    assert maybe_initialize_distributed({"OMPI_COMM_WORLD_SIZE": "2"}) is True
    assert maybe_initialize_distributed({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}) is True
    assert calls == [1, 1, 1]


def test_the_commands_never_start_jax_distributed(monkeypatch, capsys):
    """run.py runs on one host's devices (many hosts share sweeps as workers): a SLURM
    job's variables must not send it into jax.distributed.initialize."""
    from neft_jax.harness import cli

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "n1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setattr("jax.distributed.initialize", lambda: pytest.fail("initialized"))
    with pytest.raises(SystemExit):  # stops after the parse, where the call used to be
        cli.run_main(["--resume"])
    assert "--resume needs --out" in capsys.readouterr().err


def test_run_experiment_on_eight_devices(sharded_results):
    accuracies = sharded_results["run_experiment_accuracies"]
    assert len(accuracies) == 8 and all(0 <= a <= 100 for a in accuracies)
    # the harness's training loop split its batches over the 8 devices
    assert set(sharded_results["run_experiment_meshes"]) == {8}
    assert set(sharded_results["run_experiment_sharded_steps"]) == {8}
