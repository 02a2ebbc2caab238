"""Many seeds and resumable sweeps."""

import dataclasses
import json
import os

import numpy as np
import pytest
from tiny import TINY as TINY_SETTINGS
from tiny import TINY_ARGS

from neft_jax.harness import cli as sweep_cli
from neft_jax.harness.budget import RELATIVE_COST, estimate_total
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.identity import SettingsChanged, check_seed_count
from neft_jax.harness.orchestration import run_experiment
from neft_jax.harness.seeds import choose_seed_mode, run_seeds
from neft_jax.harness.sweeps import grid_cells, run_sweep

TINY = dict(TINY_SETTINGS, max_train_steps=4)  # tests/tiny.py: programs shared


def test_seeds_equal_separate_runs(tmp_path):
    cfg = ExperimentConfig(methods=("noise",), out=str(tmp_path / "multi"), seed=5, seeds=3,
                           **TINY)
    multi = run_seeds(cfg, log=lambda m: None, show_progress=False).to_json()
    evaluation = multi["methods"]["noise"]["evaluations"]["0.3"]
    for i, seed in enumerate((5, 6, 7)):
        single = run_experiment(ExperimentConfig(methods=("noise",), seed=seed,
                                                 out=str(tmp_path / f"single{seed}"), **TINY),
                                log=lambda m: None, show_progress=False).to_json()
        assert single["methods"]["noise"]["evaluations"]["0.3"]["accuracies"] == json.loads(
            (tmp_path / "multi" / f"seed-{seed}" / "results.json").read_text()
        )["methods"]["noise"]["evaluations"]["0.3"]["accuracies"]
        assert evaluation["seed_means"][i] == pytest.approx(
            single["methods"]["noise"]["evaluations"]["0.3"]["summary"]["mean"])
    assert evaluation["summary"]["runs"] == 3
    means = np.asarray(evaluation["seed_means"])  # Table III's rule by hand: > 5 points off
    assert evaluation["not_converged"] == int(np.sum(np.abs(means - means.mean()) > 5.0))
    assert (tmp_path / "multi" / "results.csv").exists()
    # Resumed with everything finished, the wall time still counts the seeds' training.
    again = run_seeds(dataclasses.replace(cfg, resume=True), log=lambda m: None,
                      show_progress=False)
    per_seed = [json.loads((tmp_path / "multi" / f"seed-{s}" / "results.json").read_text())[
        "wall_seconds"] for s in (5, 6, 7)]
    assert again.wall_seconds >= sum(per_seed) - 0.1 and sum(per_seed) > 0
    # Resumed as something it is not: refused before any file is rewritten (a resume
    # without --seeds relabelled the 3-seed average as one run's, then crashed).
    before = (tmp_path / "multi" / "results.json").read_bytes()
    with pytest.raises(SettingsChanged, match=r"holds a run of seeds \(seed-5, seed-6, "
                                              r"seed-7\); this command has --seeds 1"):
        run_experiment(dataclasses.replace(cfg, seeds=1, resume=True), log=lambda m: None)
    with pytest.raises(SettingsChanged, match="this command has --seeds 2: give --seeds 3"):
        run_seeds(dataclasses.replace(cfg, seeds=2, resume=True), log=lambda m: None)
    assert (tmp_path / "multi" / "results.json").read_bytes() == before
    with pytest.raises(SettingsChanged, match="is one run, not a run of seeds"):
        run_seeds(dataclasses.replace(cfg, out=str(tmp_path / "single5"), resume=True),
                  log=lambda m: None)
    # Killed in its first seed, a run of seeds holds one seed folder: still not one run.
    (tmp_path / "killed" / "seed-5").mkdir(parents=True)
    with pytest.raises(SettingsChanged, match="give the --seeds it was started with"):
        check_seed_count(dataclasses.replace(cfg, out=str(tmp_path / "killed"), seeds=1), "it")


def test_seeds_in_one_vmapped_program_match_sequential_seeds(tmp_path):
    settings = dict(TINY, methods=("irs",), seed=2, seeds=2)
    sequential = run_seeds(ExperimentConfig(out=str(tmp_path / "seq"), seed_mode="sequential",
                                            **settings),
                           log=lambda m: None, show_progress=False).to_json()
    messages = []
    vmapped = run_seeds(ExperimentConfig(out=str(tmp_path / "vmap"), seed_mode="vmap",
                                         **settings),
                        log=messages.append, show_progress=False).to_json()
    assert vmapped["settings"]["seed_mode"] == "vmap"
    assert any("training seeds [2, 3] together" in m for m in messages)
    assert any(m.startswith("seeds: 2 independent runs (2…3) in one vmapped program per "
                            "method (chosen with --seed-mode)") for m in messages)
    for method in ("irs",):
        losses = {}
        for seed in (2, 3):
            runs = [json.loads((tmp_path / mode / f"seed-{seed}" / "results.json").read_text())
                    ["methods"][method] for mode in ("seq", "vmap")]
            a, b = ([h["loss"] for h in run["history"]] for run in runs)
            assert a == pytest.approx(b, rel=1e-4)
            losses[seed] = a[0]
            means = [run["evaluations"]["0.3"]["summary"]["mean"] for run in runs]
            assert means[0] == pytest.approx(means[1], abs=1.0)
        assert losses[2] != pytest.approx(losses[3], rel=1e-3)  # seeds really differ
        seq = sequential["methods"][method]["evaluations"]["0.3"]["seed_means"]
        vm = vmapped["methods"][method]["evaluations"]["0.3"]["seed_means"]
        assert seq == pytest.approx(vm, abs=1.0)
    assert (tmp_path / "vmap" / "seed-3" / "checkpoints" / "irs-alpha0.01" / "best").is_dir()


def test_seed_mode_choice_is_measured_default_and_overridable():
    assert choose_seed_mode("auto", "cpu", 1)[0] == "sequential"
    assert choose_seed_mode("auto", "gpu", 1, width=0.125)[0] == "vmap"
    assert choose_seed_mode("auto", "gpu", 1, width=1.0)[0] == "sequential"  # measured
    assert choose_seed_mode("auto", "gpu", 8)[0] == "sequential"
    assert choose_seed_mode("vmap", "cpu", 1) == ("vmap", "chosen with --seed-mode")
    with pytest.raises(ValueError, match="seed_mode"):
        choose_seed_mode("parallel", "cpu", 1)


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

    first_launch = []

    def kill_in_second_cell(message):
        first_launch.append(message)
        if message.startswith("[2/2]") and "noise" in message:
            raise Killed

    with pytest.raises(Killed):
        run_sweep(cells, base, out, log=kill_in_second_cell, show_progress=False)
    assert any(m.startswith("[1/2]") and "min left for 1 more cell" in m for m in first_launch)
    first = os.path.join(out, "cells", cells[0].name, "results.json")
    mtime = os.path.getmtime(first)
    messages = []
    table = run_sweep(cells, base, out, log=messages.append, show_progress=False)
    assert any("done before, skipped" in m and cells[0].name in m for m in messages)
    assert os.path.getmtime(first) == mtime
    assert {row["method"] for row in table} == {"vanilla", "noise"}
    assert os.path.exists(os.path.join(out, "sweep.csv"))
    assert os.path.exists(os.path.join(out, "accuracy_vs_sigma.png"))


def test_time_left_uses_each_methods_mean_so_far():
    durations = {"noise": [100.0, 120.0], "ovf": [400.0]}
    assert estimate_total(durations, ["noise", "ovf", "ovf"]) == 110.0 + 800.0
    # A method not timed yet counts at the mean cost unit of every cell so far, times its
    # relative cost.
    unit = (100.0 + 120.0 + 400.0 / RELATIVE_COST["ovf"]) / 3
    assert estimate_total(durations, ["irs"]) == pytest.approx(unit * RELATIVE_COST["irs"])
    assert estimate_total(durations, []) == 0.0
    assert np.isnan(estimate_total({}, ["noise"]))


def test_sweep_cli_config_file_and_bad_keys(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('methods = ["vanilla"]\nsigmas = [0.3]\nseeds = 1\n')
    out = tmp_path / "out"
    code = sweep_cli.sweep_main(["--config", str(config), "--out", str(out),
                                 *TINY_ARGS, "--max-train-steps", "2"])
    assert code == 0
    rows = json.loads((out / "sweep.json").read_text())["over_seeds"]
    # vanilla trains clean: one cell at σ = 0, scored clean and at the grid's σ
    assert [(r["method"], r["sigma"], r["eval_sigma"]) for r in rows] == [
        ("vanilla", 0.0, 0.0), ("vanilla", 0.0, 0.3)]
    bad = tmp_path / "bad.toml"
    bad.write_text('sigma_values = [0.3]\n')
    with pytest.raises(SystemExit) as info:
        sweep_cli.sweep_main(["--config", str(bad), "--out", str(tmp_path / "o2")])
    assert info.value.code == 2
    assert "sigma_values" in capsys.readouterr().err


def test_a_sweep_trains_vanilla_once_per_seed_and_scores_it_at_every_sigma(tmp_path, capsys):
    """Vanilla's training is the same at every σ: one cell per seed, scored at each of the
    grid's σ; the same sweep with one σ more scores that cell again without training it."""
    out = tmp_path / "out"

    def sweep(sigmas: str) -> str:
        argv = ["--methods", "vanilla,noise", "--sigmas", sigmas, "--out", str(out),
                *TINY_ARGS, "--max-train-steps", "2"]
        assert sweep_cli.sweep_main(argv) == 0
        return capsys.readouterr().out

    printed = sweep("0.2,0.3")
    assert "sweep: 3 cells" in printed and "vanilla trained clean once per seed" in printed
    assert "[1/3] vgg8-mnist5k-vanilla-sigma0" in printed  # numbered over the whole grid
    assert "[3/3] vgg8-mnist5k-noise-sigma0.3" in printed
    vanilla = out / "cells" / "vgg8-mnist5k-vanilla-sigma0-alphanone-seed0"
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted([
        vanilla.name, "vgg8-mnist5k-noise-sigma0.2-alphanone-seed0",
        "vgg8-mnist5k-noise-sigma0.3-alphanone-seed0"])
    epochs = (vanilla / "metrics.jsonl").read_text()
    rows = json.loads((out / "sweep.json").read_text())["over_seeds"]
    assert {(r["method"], r["sigma"], r["eval_sigma"]) for r in rows} == {
        ("noise", 0.2, 0.2), ("noise", 0.3, 0.3),
        ("vanilla", 0.0, 0.0), ("vanilla", 0.0, 0.2), ("vanilla", 0.0, 0.3)}
    printed = sweep("0.2,0.3,0.4")
    assert printed.count("noise: training") == 1 and "noise-sigma0.4" in printed
    # the cap is named where it stopped a training, not where a finished one was reopened
    assert printed.count("--max-train-steps 2 reached: stopped after 2 steps, in epoch 1/2") == 1
    assert (vanilla / "metrics.jsonl").read_text() == epochs  # scored again, not retrained
    rows = json.loads((out / "sweep.json").read_text())["over_seeds"]
    assert ("vanilla", 0.0, 0.4) in {(r["method"], r["sigma"], r["eval_sigma"]) for r in rows}
    assert json.loads((out / "sweep.json").read_text())["settings"]["epochs"] == 2  # TINY
