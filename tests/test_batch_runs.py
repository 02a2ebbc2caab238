"""Many seeds and resumable sweeps."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import sweep as sweep_cli  # noqa: E402

from neft_jax.experiment import ExperimentConfig, run_experiment  # noqa: E402
from neft_jax.multiseed import run_seeds  # noqa: E402
from neft_jax.sweep import grid_cells, run_sweep  # noqa: E402

TINY = dict(epochs=1, batch_size=64, width=0.0625, mc_runs=3, val_mc_runs=1, sigma=0.3,
            max_train_steps=4)


def test_seeds_equal_separate_runs(tmp_path):
    cfg = ExperimentConfig(methods=("noise",), out=str(tmp_path / "multi"), seed=5, **TINY)
    multi = run_seeds(cfg, 3, log=lambda m: None, show_progress=False)
    evaluation = multi["methods"]["noise"]["evaluations"]["0.3"]
    for i, seed in enumerate((5, 6, 7)):
        single = run_experiment(ExperimentConfig(methods=("noise",), seed=seed,
                                                 out=str(tmp_path / f"single{seed}"), **TINY),
                                log=lambda m: None, show_progress=False)
        assert single["methods"]["noise"]["evaluations"]["0.3"]["accuracies"] == json.loads(
            (tmp_path / "multi" / f"seed-{seed}" / "results.json").read_text()
        )["methods"]["noise"]["evaluations"]["0.3"]["accuracies"]
        assert evaluation["seed_means"][i] == pytest.approx(
            single["methods"]["noise"]["evaluations"]["0.3"]["summary"]["mean"])
    assert evaluation["summary"]["runs"] == 3
    assert evaluation["not_converged"] in (0, 1, 2, 3)
    assert (tmp_path / "multi" / "results.csv").exists()


def test_grid_cells_multiply_alpha_only_for_feedback_methods():
    cells = grid_cells(["vgg8"], ["mnist5k"], ["noise", "irs"], [0.2, 0.4], [1.0, 0.1], [0, 1])
    assert len(cells) == 2 * 2 * 1 + 2 * 2 * 2
    assert len({c.name for c in cells}) == len(cells)


def test_sweep_killed_midway_resumes_without_redoing_cells(tmp_path):
    base = ExperimentConfig(out=str(tmp_path / "unused"), **TINY)
    cells = grid_cells(["vgg8"], ["mnist5k"], ["vanilla", "noise"], [0.3], [None], [0])
    out = str(tmp_path / "sweep")

    class Killed(Exception):
        pass

    def kill_in_second_cell(message):
        if message.startswith("[2/2]") and "noise" in message:
            raise Killed

    with pytest.raises(Killed):
        run_sweep(cells, base, out, log=kill_in_second_cell, show_progress=False)
    first = os.path.join(out, "cells", cells[0].name, "results.json")
    mtime = os.path.getmtime(first)
    messages = []
    table = run_sweep(cells, base, out, log=messages.append, show_progress=False)
    assert any("done before, skipped" in m and cells[0].name in m for m in messages)
    assert os.path.getmtime(first) == mtime
    assert {row["method"] for row in table} == {"vanilla", "noise"}
    assert os.path.exists(os.path.join(out, "sweep.csv"))
    assert os.path.exists(os.path.join(out, "accuracy_vs_sigma.png"))


def test_sweep_cli_config_file_and_bad_keys(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('methods = ["vanilla"]\nsigmas = [0.3]\nseeds = 1\n')
    out = tmp_path / "out"
    code = sweep_cli.main(["--config", str(config), "--out", str(out), "--epochs", "1",
                           "--max-train-steps", "2", "--batch-size", "64", "--width", "0.0625",
                           "--mc-runs", "2", "--val-mc-runs", "1", "--no-progress"])
    assert code == 0
    rows = json.loads((out / "sweep.json").read_text())["over_seeds"]
    assert len(rows) == 1 and rows[0]["method"] == "vanilla"
    bad = tmp_path / "bad.toml"
    bad.write_text('sigma_values = [0.3]\n')
    with pytest.raises(SystemExit) as info:
        sweep_cli.main(["--config", str(bad), "--out", str(tmp_path / "o2")])
    assert info.value.code == 2
    assert "sigma_values" in capsys.readouterr().err
