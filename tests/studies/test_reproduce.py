"""The one-command reproduction: stages resume, Table III reuses Table II's runs, report.

The study lives in experiments/paper/, outside the installed library."""

import json
import os
import re
import sys

import numpy as np
import pytest
from tiny import TINY_ARGS

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
from paper import cli as reproduce_cli  # noqa: E402
from paper.plan import Plan  # noqa: E402

TINY = [*TINY_ARGS, "--max-train-steps", "2"]  # tests/tiny.py: programs shared


def test_table2_and_table3_stages_write_a_report_and_share_runs(tmp_path, capsys):
    out = tmp_path / "repro"
    args = TINY + ["--stages", "table2,table3", "--sigmas", "0.6", "--seeds", "1",
                   "--table3-seeds", "2", "--out", str(out)]
    assert reproduce_cli.reproduce_main(args) == 0
    printed = capsys.readouterr().out
    # Table III's seed 0 is Table II's run at σ = 0.6, linked and not trained again.
    assert "vgg8-mnist5k-noise-sigma0.6-alphanone-seed0: done before, skipped" in printed
    assert os.path.islink(out / "table3_vgg8" / "cells" /
                          "vgg8-mnist5k-irs-sigma0.6-alphadefault-seed0")
    report = json.loads((out / "report.json").read_text())["vgg8"]
    noise = report["table2"]["noise"]["0.6"]
    assert noise["seeds"] == 1 and 0 <= noise["mean"] <= 100
    for method in ("noise", "irs"):
        table3 = report["table3"][method]
        means = np.array([json.loads(p.read_text())["methods"][method]["evaluations"]["0.6"]
                          ["summary"]["mean"] for p in
                          (out / "table3_vgg8" / "cells").glob(f"*-{method}-*/results.json")])
        assert table3["seeds"] == 2 and len(means) == 2  # Table III's rule by hand:
        assert table3["not_converged"] == int(np.sum(np.abs(means - means.mean()) > 5.0))
    text = (out / "REPORT.md").read_text()
    assert "### Table III" in text and " of 2 |" in text
    # How the numbers were made: the settings, and the code, machine and day they came from.
    assert "lr the authors' per model (step schedule), validation 0.1 of" in text
    assert re.search(r"Made with \(code, machine, day\): [0-9a-f]{7}|unknown", text)
    saved = json.loads((out / "report.json").read_text())["vgg8"]
    assert saved["settings"]["model"] == "vgg8" and saved["settings"]["max_train_steps"] == 2
    assert saved["made_with"][0]["date"][:2] == "20"
    assert "its σ is 'level' noise, FINDINGS 0; ≤x: the paper gives only a bound" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # A second launch finds everything done and trains nothing.
    assert reproduce_cli.reproduce_main(args) == 0
    assert "training" not in capsys.readouterr().out
    # The report can be rebuilt alone.
    os.remove(out / "REPORT.md")
    assert reproduce_cli.reproduce_main(args + ["--report-only"]) == 0
    assert (out / "REPORT.md").read_text() == text
    # Without the run's flags it would be a report of nothing: refused, nothing rewritten.
    capsys.readouterr()
    assert reproduce_cli.reproduce_main(args + ["--report-only", "--epochs", "7"]) == 2
    assert "none of the" in capsys.readouterr().err and (out / "REPORT.md").read_text() == text
    # At the paper's four σ the report puts the paper's rows beside ours, bounds marked.
    assert reproduce_cli.reproduce_main(TINY + ["--stages", "table2", "--seeds", "1",
                                                "--out", str(out), "--report-only"]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| noise (paper) | 99.35 | 97.77 | ≤89.56 | ≤13.71 |" in text
    assert "| irs (paper) | 99.53 | 99.3 | 96.9 | 70.31 |" in text


def test_vanilla_trains_once_per_seed_and_serves_every_sigma(tmp_path, capsys):
    """Vanilla trains clean, so it is the same model at every σ: the vanilla stage trains
    one cell per seed, scored at the sweep's σ and the plan's, and the core stage and
    Table II take their vanilla numbers from it instead of training it again."""
    from paper.plan import VANILLA_SIGMAS

    out = tmp_path / "repro"
    args = TINY + ["--stages", "vanilla", "--sigmas", "0.4,0.6", "--seeds", "1",
                   "--out", str(out)]
    assert reproduce_cli.reproduce_main(args) == 0
    cell, = (out / "vanilla_sweep_vgg8" / "cells").iterdir()
    assert cell.name == "vgg8-mnist5k-vanilla-sigma0-alphanone-seed0"
    scored = json.loads((cell / "results.json").read_text())["methods"]["vanilla"]
    assert sorted(map(float, scored["evaluations"])) == sorted(VANILLA_SIGMAS)
    report = json.loads((out / "report.json").read_text())["vgg8"]
    assert report["table2"]["vanilla"]["0.6"]["mean"] == pytest.approx(
        scored["evaluations"]["0.6"]["summary"]["mean"])
    assert all(report["vanilla_sweep"][f"{s:g}"]["seeds"] == 1 for s in VANILLA_SIGMAS)
    assert report["vanilla_sweep"]["0.4"]["seed_means"] == [
        scored["evaluations"]["0.4"]["summary"]["mean"]]
    # The core stage at both σ has its vanilla: nothing of vanilla is left to train ...
    rates = tmp_path / "bench.jsonl"
    rates.write_text(json.dumps({"bench": "end_to_end", "loop_images_per_s": 3600.0,
                                 "model": "vgg8", "method": "noise"}) + "\n")

    def estimate(*flags):
        capsys.readouterr()
        assert reproduce_cli.reproduce_main(TINY + ["--seeds", "1", "--out", str(out),
                                                    "--estimate-only", "--rates", str(rates),
                                                    *flags]) == 0
        return capsys.readouterr().out

    # (noise, noise_scaled, IRS and the control at two σ)
    assert "8 trainings (1 more finished before)" in estimate("--stages", "core",
                                                              "--sigmas", "0.4,0.6")
    # ... but a plan with a σ the cell was not scored at scores it there (the cell is not
    # done), and a cell made with other settings is not reused.
    assert ": 1 trainings, about" in estimate("--stages", "vanilla", "--sigmas", "0.4,0.5")
    assert ": 1 trainings, about" in estimate("--stages", "vanilla", "--sigmas", "0.4,0.6",
                                              "--mc-runs", "4")
    from neft_jax.harness.sweeps import cell_done

    assert cell_done(str(cell), "vanilla") and cell_done(str(cell), "vanilla", [0.4, 0.6])
    assert not cell_done(str(cell), "vanilla", [0.4, 0.5])


@pytest.mark.parametrize("change", [{"stages": ("table9",)}, {"models": ("vgg11",)},
                                    {"seeds": 0}, {"table3_seeds": True}])
def test_plan_rejects_bad_values(change):
    with pytest.raises(ValueError):
        Plan(**change)


def test_a_mistyped_stage_names_the_nearest():
    with pytest.raises(ValueError, match="unknown stage 'tabel2'; did you mean 'table2'"):
        Plan(stages=("tabel2",))


def test_the_alpha_stage_without_a_held_out_split_is_refused_before_anything_trains(
        tmp_path, capsys):
    code = reproduce_cli.reproduce_main(TINY + ["--stages", "table2,alpha", "--val-fraction",
                                                "0", "--out", str(tmp_path / "r")])
    assert code != 0 and not (tmp_path / "r").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--val-fraction 0 leaves out" in err[0]


@pytest.mark.parametrize("flags, says", [
    (["--model", "resnet18"], "--model: the plan trains the models of --models"),
    (["--sigma", "0.6"], "--sigma: each stage sets its own σ"),
    (["--alpha", "0.1"], "--alpha: every stage trains IRS/OVF at the authors' α"),
    (["--resume"], "--resume: reproduce.py always continues; rerun the same command"),
    (["--drop-exit", "1"], "--drop-exit: the table5 stage trains IRS without each exit"),
    (["--equal-coefficients"], "--equal-coefficients: the table5 stage trains its equal-"),
    (["--models", "vgg9"], "unknown model 'vgg9'; did you mean 'vgg8'?"),
    (["--stages", ""], "--stages is empty"),
    (["--report-only", "--out", "{tmp}/none"], "--report-only: no reproduction in"),
    (["--out", "{tmp}/file"], "is a file"),
    (["--estimate-only", "--rates", "{tmp}/none.jsonl"], "cannot read --rates"),
    (["--estimate-only", "--rates", "{tmp}/file"], "no end-to-end row (bench.py --end-to-end)"),
    (["--report-only", "--out", "{tmp}"], "holds no finished result of this study"),
])
def test_flags_the_plan_cannot_honour_are_one_line_before_anything_is_made(
        tmp_path, capsys, flags, says):
    """Flags the plan sets per stage (a half-applied --alpha trained Table V at it and
    Table II at the authors'), a mistyped model, and an --out or --rates that cannot be
    used: one line, status 2, nothing written; before, some were tracebacks."""
    (tmp_path / "file").write_text("")
    before = sorted(os.listdir(tmp_path))
    try:
        code = reproduce_cli.reproduce_main(TINY + [f.format(tmp=tmp_path) for f in flags])
    except SystemExit as exit_info:  # parser.error
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert sorted(os.listdir(tmp_path)) == before


def test_sweep_models_in_any_case_each_once_and_a_mistyped_one_named(tmp_path, capsys):
    from neft_jax.harness import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.sweep_main(["--models", "vgg9", "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2
    assert "unknown model 'vgg9'; did you mean 'vgg8'?" in capsys.readouterr().err
    from neft_jax.harness.flags import model_names

    assert model_names("VGG8, vgg8,ResNet18") == ("vgg8", "resnet18")


def test_bad_stage_flag_exits_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_cli.reproduce_main(TINY + ["--stages", "table9", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "stages must be names from" in capsys.readouterr().err


def test_ovf_stage_runs_at_each_of_the_plans_sigmas(tmp_path):
    out = tmp_path / "repro"
    args = TINY + ["--models", "vgg8", "--stages", "ovf", "--sigmas", "0.2,0.6",
                   "--seeds", "1", "--backward-micro-batch", "0",  # compiles in half the time
                   "--out", str(out)]
    assert reproduce_cli.reproduce_main(args) == 0
    ovf = json.loads((out / "report.json").read_text())["vgg8"]["table2"]["ovf"]
    assert sorted(ovf) == ["0.2", "0.6"]
    assert all(cell["seeds"] == 1 and 0 <= cell["mean"] <= 100 for cell in ovf.values())
    assert "| ovf (ours) |" in (out / "REPORT.md").read_text()


def test_the_report_shows_the_core_cells_seed_by_seed_with_paired_differences(tmp_path):
    """REPORT.md's core section: each cell's mean, clean accuracy and (IRS) feedback size,
    and a − b within each seed, paired over the same noise instances (the CI of the
    differences, not of the two means)."""
    import numpy as np
    from paper.plan import CONTROL_ALPHA
    from paper.report import write_report

    from neft_jax.harness.config import ExperimentConfig

    rng = np.random.default_rng(0)
    shared = rng.normal(50.0, 5.0, 200)  # one noise instance moves every method alike
    offsets = {("noise", None): 0.0, ("irs", 0.01): 3.0, ("irs", CONTROL_ALPHA): 10.0}
    for seed in (0, 1):
        for (method, alpha), offset in offsets.items():
            accuracies = shared + offset + seed + rng.normal(0, 0.1, 200)
            _save_cell(tmp_path / "core_vgg8", method, alpha, seed, accuracies)
    # vanilla: the vanilla stage's cell (trained clean, scored at every σ) is the core's
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults

    vanilla = (tmp_path / "vanilla_sweep_vgg8" / "cells"
               / "vgg8-mnist5k-vanilla-sigma0-alphanone-seed0")
    vanilla.mkdir(parents=True)
    RunResults(settings={"model": "vgg8", "dataset": "mnist5k", "methods": ["vanilla"],
                         "sigma": 0.0, "alpha": None, "seed": 0, "eval_sigmas": [0.0, 0.4]},
               methods={"vanilla": MethodResult(alpha=None, clean_accuracy=95.0, evaluations={
                   s: Evaluation(s, {"mean": m, "ci95": 0.5, "ekl": 0.9}, accuracies=[m] * 4)
                   for s, m in ((0.0, 95.0), (0.4, 30.0))})}).save(str(vanilla / "results.json"))
    # a plan before 2026-12-07 trained vanilla in the core stage too: never mixed with the
    # vanilla stage's cells, which replace them
    _save_cell(tmp_path / "core_vgg8", "vanilla", None, 1, [50.0] * 10)
    report = write_report(str(tmp_path), Plan(stages=("core",), seeds=2),
                          ExperimentConfig())["vgg8"]
    differences = {(d.a, d.b): d.per_seed for d in report.core_differences}
    assert set(differences) == {("irs", "noise"), ("control", "noise"), ("irs", "control")}
    irs_noise = differences[("irs", "noise")]
    assert [p.seed for p in irs_noise] == [0, 1]
    assert all(abs(p.difference - 3.0) < 0.05 and p.ci95 < 0.05 for p in irs_noise)
    text = (tmp_path / "REPORT.md").read_text()
    assert "| irs − control | 0.4 | -7.00 ± 0.0" in text
    assert "| irs | 0.4 | 1 |" in text and "| 99.3 | 81.0 | 150 % | 0.0, 7.5, 2.0 |" in text
    assert "| control | 0.4 | 0 |" in text and "| – | 81.0 | < 0.01 % |" in text
    assert "| noise | 0.4 | 0 |" in text and "| 97.77 | 80.0 | – | – |" in text
    assert "| vanilla | 0.4 | 0 | 30.00 ± 0.50 | 63.54 | 95.0 | – | – |" in text
    assert "| vanilla | 0.4 | 1 |" not in text
    assert re.search(r"\| vanilla \| 30\.00[^|]*\| 63\.54 \|", text)  # over seeds, σ = 0.4
    # the core cells over seeds, each beside the paper's Table II (none for the control)
    assert "| method | σ=0.4 | paper |" in text
    assert re.search(r"\| irs \| \d+\.\d+ ± \d+\.\d+ \(n=2\) \| 99\.3 \|", text)
    assert re.search(r"\| irs \(α = 1e-9: control\) \| [^|]+ \| – \|", text)
    # EKL at σ = 0.4 from the core cells when Table II's did not run
    ekl = text[text.index("### EKL"):text.index("### Table III")]
    assert "| irs (control) | 0.600 |" in ekl and "| noise | 0.600 |" in ekl
    assert "| vanilla | 0.900 |" in ekl  # Table II's vanilla, from the vanilla stage
    assert re.search(r"\* At σ = 0\.4, irs is below control in every seed, beyond each seed's "
                     r"paired CI; over the 2 seeds -7\.\d\d ± \d\.\d\d, an interval that "
                     r"excludes 0\.", text)


def test_which_alpha_names_the_alphas_whose_feedback_beats_the_control():
    from paper.cells import AlphaGrid, CoreDifference
    from paper.report import which_alpha

    from neft_jax.stats import SeedDifference, across_seeds

    def against_control(alpha, *per_seed):
        mean, t_ci95 = across_seeds([d for d, _ in per_seed])
        return CoreDifference(0.4, f"irs α={alpha}", "control", tuple(
            SeedDifference(i, d, ci) for i, (d, ci) in enumerate(per_seed)), mean, t_ci95)

    grid = AlphaGrid(cells=(), over_seeds={"1": (60.0, 5.0, 3), "0.1": (75.0, 1.0, 3),
                                           "0.01": (74.0, 2.0, 3)},
                     differences=(against_control("1", (-9.0, 1.0), (-8.0, 1.0), (-9.5, 1.0)),
                                  against_control("0.1", (2.0, 0.5), (2.2, 0.5), (1.9, 0.5)),
                                  against_control("0.01", (2.0, 0.5), (0.2, 0.5), (5.0, 0.5))))
    assert which_alpha(grid) == (
        "Which α? The highest mean over seeds is at α = 0.1 (75.00 %). IRS is above its "
        "α → 0 control beyond the paired CI in every seed at α = 0.1, and by a Student-t "
        "interval over the seeds that excludes 0 at α = 0.1.")


def test_the_verdict_says_in_how_many_seeds_and_whether_the_seeds_separate():
    from paper.cells import CoreDifference
    from paper.report import difference_verdict

    from neft_jax.stats import SeedDifference, across_seeds

    def difference(*per_seed):
        mean, t_ci95 = across_seeds([d for d, _ in per_seed])
        return CoreDifference(0.4, "irs", "control", tuple(
            SeedDifference(i, d, ci) for i, (d, ci) in enumerate(per_seed)), mean, t_ci95)

    assert difference_verdict(difference((2.0, 0.5), (2.2, 0.5), (1.9, 0.5))) == (
        "At σ = 0.4, irs is above control in every seed, beyond each seed's paired CI; over "
        "the 3 seeds +2.03 ± 0.38, an interval that excludes 0.")
    assert difference_verdict(difference((-30.0, 1.0), (-5.0, 1.0))).endswith(
        "below control in every seed, beyond each seed's paired CI; over the 2 seeds "
        "-17.50 ± 158.83, an interval that includes 0: not separated.")
    assert "above control in 1 of 3 seeds, below in 1, equal in 1;" in difference_verdict(
        difference((1.0, 0.5), (-1.0, 0.5), (0.0, 0.5)))
    # Seeds that agree to the image leave no spread: no interval, not "excludes 0".
    assert difference_verdict(difference((-0.03, 0.1), (-0.03, 0.1))).endswith(
        "over the 2 seeds -0.03 with no spread between them: no usable interval.")
    assert difference_verdict(difference((0.3, 0.5))).endswith(
        "above control in the one seed, beyond the paired CI in 0 of 1; one seed gives no "
        "interval over seeds.")


def test_the_alpha_grid_stage_trains_and_evaluates_every_alpha(tmp_path, capsys):
    out = tmp_path / "repro"
    args = TINY + ["--stages", "alpha_grid", "--sigmas", "0.4", "--alpha-seeds", "1",
                   "--out", str(out)]
    assert reproduce_cli.reproduce_main(args) == 0
    grid = json.loads((out / "report.json").read_text())["vgg8"]["alpha_grid"]
    finished = sorted(c["method"] for c in grid["cells"]) + [f"irs α={a}" for a, _ in
                                                             grid["diverged"]]
    assert sorted(finished) == sorted(f"irs α={a:g}" for a in (1, 0.1, 0.01, 1e-3, 1e-4))
    assert all(c["best_val"] is not None and c["feedback_ratio"] is not None
               for c in grid["cells"])
    assert (out / "alpha_grid.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert reproduce_cli.reproduce_main(args) == 0  # finished: nothing trains again
    assert "training" not in capsys.readouterr().out


def test_a_cifar10_report_sets_table_iv_beside_ours_and_never_mnists_numbers(tmp_path):
    """On CIFAR-10 the paper's column is Table IV (IRS with noise injection) and Table III's
    CIFAR-10 column at σ = 0.4; MNIST's Tables II, III and V stand beside MNIST runs only."""
    from paper.published import published_ablation, published_accuracy, published_not_converged
    from paper.report import write_report

    from neft_jax.harness.config import ExperimentConfig

    assert published_accuracy("cifar10", "vgg8", "irs", 0.3) == (77.01, False)
    assert published_accuracy("mnist5k", "vgg8", "noise", 0.6) == (89.56, True)
    assert published_accuracy("cifar10", "vgg8", "noise", 0.4) is None
    assert published_accuracy("cifar100", "resnet18", "irs", 0.4) is None
    assert published_not_converged("cifar10", "resnet18", "noise", 0.4) == 1
    assert published_not_converged("cifar10", "resnet18", "noise", 0.6) is None
    assert published_not_converged("mnist", "vgg8", "noise", 0.6) == 9
    assert published_ablation("cifar10", "vgg8", "all exits") is None
    for seed in (0, 1):
        for method, alpha in (("noise", None), ("irs", 0.01)):
            _save_cell(tmp_path / "core_vgg8", method, alpha, seed, [60.0 + seed] * 10,
                       dataset="cifar10")
    write_report(str(tmp_path), Plan(stages=("core",), seeds=2, sigmas=(0.4,)),
                 ExperimentConfig(dataset="cifar10"), plots=False)
    text = (tmp_path / "REPORT.md").read_text()
    assert "Tables II, V and III's first column are MNIST's; on cifar10" in text
    assert re.search(r"\| irs \| 60\.50 [^|]*\| 68\.5 \|", text)  # Table IV at σ = 0.4
    assert "99.3" not in text and "97.77" not in text  # MNIST's Table II


def _save_cell(stage_folder, method, alpha, seed, accuracies, diverged=False,
               dataset="mnist5k"):
    """A finished cell's results.json at σ = 0.4 (α 0.01 is the authors': named default),
    with one epoch of history for IRS (feedback ratio α·150, exits' accuracies)."""
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults

    label = "default" if alpha == 0.01 else ("none" if alpha is None else f"{alpha:g}")
    name = f"vgg8-{dataset}-{method}-sigma0.4-alpha{label}-seed{seed}"
    history = [{"epoch": 1, "feedback_ratio": 150 * alpha,
                "exit_accuracies": [0.0, 7.5, 2.0]}] if method == "irs" else []
    accuracies = [float(a) for a in accuracies]
    # as the harness writes a cell that diverged before keeping an epoch: no summary
    evaluations = {0.4: Evaluation(0.4, None, diverged=True) if diverged else Evaluation(
        0.4, {"mean": sum(accuracies) / len(accuracies), "ci95": 0.7, "ekl": 0.6},
        accuracies=accuracies)}
    (stage_folder / "cells" / name).mkdir(parents=True)
    RunResults(
        settings={"model": "vgg8", "dataset": dataset, "methods": [method], "sigma": 0.4,
                  "alpha": None if alpha == 0.01 else alpha, "seed": seed, "eval_sigmas": [0.4]},
        methods={method: MethodResult(alpha=alpha, clean_accuracy=80.0 + seed, history=history,
                                      best_val_accuracy=90.0 + seed, diverged=diverged,
                                      evaluations=evaluations)},
    ).save(str(stage_folder / "cells" / name / "results.json"))


def test_the_alpha_grid_report_sets_each_alpha_against_the_baselines_of_its_seed(tmp_path):
    """REPORT.md's α grid: every cell (best validation, feedback size, exits), diverged
    cells named, each α over its seeds, and IRS(α) − control / noise / noise_scaled within
    each seed (paired) and over the seeds (Student-t); alpha_grid.png drawn."""
    import numpy as np
    from paper.plan import CONTROL_ALPHA
    from paper.report import write_report

    from neft_jax.harness.config import ExperimentConfig

    rng = np.random.default_rng(1)
    shared = rng.normal(50.0, 5.0, 200)
    # seed-to-seed spread: IRS(α = 1e-3) − control is -2 at seed 0 and -4 at seed 1
    core = {("noise", None): 0.0, ("noise_scaled", None): 6.0, ("irs", CONTROL_ALPHA): 10.0,
            ("irs", 0.01): 3.0}
    grid = {1e-3: (8.0, 6.0), 0.01: (3.0, 3.0)}
    for seed in (0, 1):
        for (method, alpha), offset in core.items():
            _save_cell(tmp_path / "core_vgg8", method, alpha, seed,
                       shared + offset + rng.normal(0, 0.1, 200))
        for alpha, offsets in grid.items():
            _save_cell(tmp_path / "alpha_grid_vgg8", "irs", alpha, seed,
                       shared + offsets[seed] + rng.normal(0, 0.1, 200))
    _save_cell(tmp_path / "alpha_grid_vgg8", "irs", 1.0, 0, [], diverged=True)
    report = write_report(str(tmp_path), Plan(stages=("core", "alpha_grid"), seeds=2),
                          ExperimentConfig())["vgg8"].alpha_grid
    assert [(c.method, c.seed) for c in report.cells] == [
        ("irs α=0.01", 0), ("irs α=0.01", 1), ("irs α=0.001", 0), ("irs α=0.001", 1)]
    assert report.diverged == (("1", 0),)
    differences = {(d.a, d.b): d for d in report.differences}
    d = differences[("irs α=0.001", "control")]
    assert [round(p.difference, 1) for p in d.per_seed] == [-2.0, -4.0]
    # over two seeds: mean -3, half-width t(0.975, 1) · std / √2 = 12.706 · 1.414 / 1.414
    assert d.mean == pytest.approx(-3.0, abs=0.05) and d.t_ci95 == pytest.approx(12.7, abs=0.3)
    assert round(differences[("irs α=0.01", "noise_scaled")].mean, 1) == -3.0
    assert round(differences[("irs α=0.001", "noise")].mean, 1) == 7.0
    text = (tmp_path / "REPORT.md").read_text()
    assert "### α grid" in text and "| 1 | 0 | diverged |" in text
    assert "| 0.001 | 1 |" in text and "| 81.0 | 91.00 | 15 % | 0.0, 7.5, 2.0 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| irs α=0.001 − control |"))
    assert row.startswith("| irs α=0.001 − control | 0.4 | -") and row.endswith(" (n=2) |")
    assert "| -3.00 ± 12." in row
    assert re.search(r"Which α\? The highest mean over seeds is at α = 0\.001 \(5\d\.\d\d %\)\. "
                     r"IRS is above its α → 0 control beyond the paired CI in every seed at "
                     r"α = none, and by a Student-t interval over the seeds that excludes 0 at "
                     r"α = none\.", text)
    assert (tmp_path / "alpha_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["vgg8"]["alpha_grid"][
        "over_seeds"]["0.001"]["seeds"] == 2


def test_a_plans_multi_seed_runs_are_split_between_workers_and_skip_held_folders(tmp_path):
    from paper.reproduce import _Runner

    from neft_jax.harness.budget import Budget
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.locking import FolderBusy
    from neft_jax.harness.sweeps import Worker

    ran, messages = [], []
    job = ExperimentConfig(methods=("vanilla",), out=str(tmp_path / "job"))
    second = _Runner(Plan(), str(tmp_path), messages.append, False, Budget(None), Worker(2, 2))
    for name in ("vanilla", "table5 drop1", "table5 drop2"):
        second.seeds_run(name, lambda job, name=name, **_: ran.append(name), job)
    assert ran == ["table5 drop1"]  # positions 0 and 2 are worker 1's

    def held(job, **_):
        raise FolderBusy("'x' is in use by pid 1 on h")

    alone = _Runner(Plan(), str(tmp_path), messages.append, False, Budget(None), Worker())
    alone.seeds_run("stage alpha of vgg8", held, job)
    assert messages == ["stage alpha of vgg8: held by another worker, skipped"]


def test_the_report_warns_that_the_papers_numbers_are_not_range_noise():
    from paper.published import paper_noise_note

    assert "not comparable with these 'range' numbers" in paper_noise_note("range")
    assert "not comparable" not in paper_noise_note("level")


def test_a_seed_without_a_mean_is_named_and_left_out_of_n(tmp_path):
    """A seed that diverged before keeping an epoch has no mean: the cell's mean and its
    Student-t interval are over the other seeds, n says so, REPORT.md names the diverged
    seed, and Table III counts it not converged of all three."""
    from paper.report import write_report

    from neft_jax.harness.config import ExperimentConfig

    for seed, level in ((0, 60.0), (1, 70.0)):
        _save_cell(tmp_path / "table2_vgg8", "noise", None, seed, [level] * 10)
    _save_cell(tmp_path / "table2_vgg8", "noise", None, 2, [], diverged=True)
    write_report(str(tmp_path), Plan(stages=("table2",), seeds=3, sigmas=(0.4,)),
                 ExperimentConfig(), plots=False)
    cell = json.loads((tmp_path / "report.json").read_text())["vgg8"]["table2"]["noise"]["0.4"]
    assert (cell["seeds"], cell["diverged"], cell["mean"]) == (2, 1, 65.0)
    assert cell["ci95"] == pytest.approx(12.706 * np.std([60, 70], ddof=1) / np.sqrt(2),
                                         rel=1e-3)
    assert "| 65.00 ± 63.53 (n=2; 1 more diverged) |" in (tmp_path / "REPORT.md").read_text()


def _save_variant(folder, seed_means, stored_ci95=1.0):
    """A finished Table V variant: IRS at σ = 0.4 over seeds 0…n−1, its summary's stored
    interval ``stored_ci95`` (what results.json files before 53f7d12 held)."""
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults

    seeds = list(range(len(seed_means)))
    folder.mkdir(parents=True)
    RunResults(
        settings={"model": "vgg8", "dataset": "mnist5k", "methods": ["irs"], "sigma": 0.4,
                  "alpha": None, "seed": 0, "seeds": seeds, "eval_sigmas": [0.4]},
        methods={"irs": MethodResult(alpha=0.01, evaluations={0.4: Evaluation(0.4, {
            "mean": float(np.mean(seed_means)), "ci95": stored_ci95, "ekl": 0.5},
            seed_means=list(seed_means), not_converged=0)})},
    ).save(str(folder / "results.json"))


def test_table_v_sets_each_variant_beside_all_exits_over_the_same_seeds(tmp_path):
    """Table V's "all exits" is IRS over the variants' own seeds: a seed Table II has and
    the variants lack stays out, and the table5 stage's own cells (seeds beyond Table II's)
    come in; every interval is Student-t from the seeds' means, whatever the file stored."""
    from paper.report import write_report
    from paper.reproduce import grid_of_stage, stage_config

    from neft_jax.harness.config import ExperimentConfig

    plan = Plan(stages=("table2", "table5"), seeds=2, table5_seeds=3, sigmas=(0.4,))
    for name in ("drop1", "drop2", "drop3", "equal"):
        _save_variant(tmp_path / f"table5_vgg8_{name}", [70.0, 71.0, 72.0])
    for seed in (0, 1):  # Table II's IRS, and a seed 3 the variants never ran
        _save_cell(tmp_path / "table2_vgg8", "irs", 0.01, seed, [80.0 + seed] * 10)
    _save_cell(tmp_path / "table2_vgg8", "irs", 0.01, 3, [10.0] * 10)
    _save_cell(tmp_path / "table5_vgg8", "irs", 0.01, 2, [82.0] * 10)
    write_report(str(tmp_path), plan, ExperimentConfig(), plots=False)
    table5 = json.loads((tmp_path / "report.json").read_text())["vgg8"]["table5"]
    assert table5["all exits"]["seed_means"] == [80.0, 81.0, 82.0]
    assert table5["all exits"]["seeds"] == 3
    assert table5["without exit 1"]["ci95"] == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    # The stage trains the all-exit seeds Table II has not (only those): seed 2.
    cfg = stage_config(ExperimentConfig(), "vgg8")
    methods, sigmas, alphas, seeds = grid_of_stage("table5", plan, cfg)
    assert (list(methods), list(sigmas), list(alphas), seeds) == (["irs"], [0.4], [None], [2])
    assert grid_of_stage("table5", Plan(seeds=3, table5_seeds=2), cfg) is None


def test_table_iii_runs_at_the_datasets_own_sigma():
    """Table III's CIFAR-10 column is at σ = 0.4 (MNIST's at 0.6): the plan trains there."""
    from paper.reproduce import grid_of_stage, stage_config

    from neft_jax.harness.config import ExperimentConfig

    for dataset, sigma in (("cifar10", 0.4), ("mnist5k", 0.6)):
        cfg = stage_config(ExperimentConfig(dataset=dataset), "vgg8")
        assert grid_of_stage("table3", Plan(), cfg)[1] == [sigma]
