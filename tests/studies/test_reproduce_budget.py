"""A time-boxed paper reproduction (issue 15): the plan stops before its budget and continues
when rerun; stages reuse each other's cells; jobs of several trainings start only if they
fit; the plan's time estimated from a measured loop rate.

The study lives in experiments/paper/, outside the installed library; the budget itself
(neft_jax.harness.budget) is tested in tests/harness/test_budget.py."""

import json
import os
import sys

import pytest
from tiny import TINY_ARGS

from neft_jax.harness import data as data_lib
from neft_jax.harness.budget import Budget, BudgetExhausted

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
from paper import cli, estimate, reproduce  # noqa: E402
from paper.plan import TABLE2_SIGMAS, VANILLA_SIGMAS, Plan, stage_dir  # noqa: E402
from paper.reproduce import _Runner, trainings_of_plan  # noqa: E402

TINY = [*TINY_ARGS, "--max-train-steps", "1"]  # tests/tiny.py: programs shared


def _finished(out):
    return sorted(p.parent.name for p in out.glob("*_vgg8/cells/*/results.json"))


def test_budgeted_plan_stops_before_the_budget_and_the_same_command_completes(tmp_path,
                                                                              capsys):
    # The digits' first load in a process takes seconds, which a 1 s budget would spend
    # before the first cell (when this test ran first in its process, the plan stopped
    # before measuring anything); the process keeps them, as in a command after its check.
    data_lib.load_dataset("mnist5k")
    out = tmp_path / "plan"
    args = TINY + ["--models", "vgg8", "--sigmas", "0.4", "--seeds", "1",
                   "--stages", "scaled,control", "--out", str(out)]
    # 1. Nothing measured yet: the first cell runs (it is the measurement), then the plan stops.
    assert cli.reproduce_main(args + ["--time-budget", "1"]) == 0
    first = _finished(out)
    assert len(first) == 1 and "stopped before the time budget" in capsys.readouterr().out
    assert "noise_scaled" in (out / "REPORT.md").read_text()
    # the plots, drawn once when the sweep and the plan stopped, not after every cell
    assert (out / "noise_scaled_vgg8" / "accuracy_vs_sigma.png").exists()
    assert (out / "report.png").exists()
    # 2. Now measured (a finished cell's wall time sizes the next: set to 50 s here, since a
    # tiny cell whose programs an earlier test compiled can end in under the 1 s budget):
    # the next cell does not fit in 1 s, so it does not start.
    import json

    path = next(out.glob("*_vgg8/cells/*/results.json"))
    results = json.loads(path.read_text())
    path.write_text(json.dumps({**results, "wall_seconds": 50.0}))
    stamp = os.path.getmtime(path)
    assert cli.reproduce_main(args + ["--time-budget", "1"]) == 0
    printed = capsys.readouterr().out
    assert _finished(out) == first and "stopped before the time budget" in printed
    # 3. Without a budget the same command finishes the rest and keeps the first cell.
    assert cli.reproduce_main(args) == 0
    assert len(_finished(out)) == 2
    assert os.path.getmtime(next(out.glob("noise_scaled_vgg8/cells/*/results.json"))) == stamp
    assert "irs α→0 (control)" in (out / "REPORT.md").read_text()


def _grid(stage, plan, cfg, sigma=None):
    from neft_jax.harness.sweeps import grid_cells

    return grid_cells([cfg.model], [cfg.dataset],
                      *reproduce.grid_of_stage(stage, plan, cfg, sigma))


def test_stages_reuse_each_others_cells_in_either_order(tmp_path):
    """A grid stage links the cells of its grid that another stage of the model has (a
    cell's name is its experiment), whichever ran first, and only those made with this
    command's settings."""
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.results import RunResults
    from neft_jax.harness.sweeps import grid_cells

    assert Plan(sigmas=(0.2, 0.4, 0.6, 0.8)).core_sigmas == (0.4, 0.6)
    assert Plan(sigmas=(0.3,)).core_sigmas == (0.3,)
    plan = Plan(seeds=1, sigmas=(0.4, 0.6), table3_seeds=2, alpha_seeds=1)
    cfg = reproduce.stage_config(ExperimentConfig(), "vgg8")
    out = str(tmp_path)
    core = tmp_path / "core_vgg8" / "cells"
    for cell in _grid("core", plan, cfg, 0.4):
        (core / cell.name).mkdir(parents=True)

    def linked(stage):
        folder = tmp_path / os.path.basename(stage_dir(out, stage, "vgg8")) / "cells"
        return sorted(p.name for p in folder.iterdir() if p.is_symlink()) \
            if folder.is_dir() else []

    for stage in ("table2", "alpha_grid", "control", "scaled"):
        reproduce.link_shared_cells(out, stage, cfg, _grid(stage, plan, cfg))
    assert linked("table2") == ["vgg8-mnist5k-irs-sigma0.4-alphadefault-seed0",
                                "vgg8-mnist5k-noise-sigma0.4-alphanone-seed0",
                                "vgg8-mnist5k-noise_scaled-sigma0.4-alphanone-seed0"]
    assert linked("alpha_grid") == ["vgg8-mnist5k-irs-sigma0.4-alphadefault-seed0"]
    assert linked("control") == ["vgg8-mnist5k-irs-sigma0.4-alpha1e-09-seed0"]
    assert linked("scaled") == ["vgg8-mnist5k-noise_scaled-sigma0.4-alphanone-seed0"]
    link = tmp_path / "table2_vgg8" / "cells" / linked("table2")[0]
    assert not os.path.isabs(os.readlink(link))  # the folder can move
    assert link.resolve() == (core / link.name).resolve()

    # The other order: Table II's σ = 0.6 cells, trained first, serve Table III (its
    # noise injection and IRS, not noise_scaled) and the core stage at 0.6 ...
    table2 = tmp_path / "table2_vgg8" / "cells"
    for cell in _grid("table2", plan, cfg):
        if cell.sigma == 0.6:
            (table2 / cell.name).mkdir(parents=True)
    reproduce.link_shared_cells(out, "table3", cfg, _grid("table3", plan, cfg))
    assert linked("table3") == ["vgg8-mnist5k-irs-sigma0.6-alphadefault-seed0",
                                "vgg8-mnist5k-noise-sigma0.6-alphanone-seed0"]
    # ... except a cell made with other settings, which the core stage trains itself.
    made_otherwise = table2 / "vgg8-mnist5k-noise_scaled-sigma0.6-alphanone-seed0"
    RunResults(settings={"model": "vgg8", "dataset": "mnist5k", "methods": ["noise_scaled"],
                         "sigma": 0.6, "alpha": None, "seed": 0, "epochs": 3},
               methods={}).save(str(made_otherwise / "results.json"))
    reproduce.link_shared_cells(out, "core", cfg, _grid("core", plan, cfg, 0.6))
    assert linked("core") == ["vgg8-mnist5k-irs-sigma0.6-alphadefault-seed0",
                              "vgg8-mnist5k-noise-sigma0.6-alphanone-seed0"]
    # Each cell is counted once in the plan's trainings, as the links make it (the core
    # stage's vanilla is the vanilla stage's cell, one training scored at every σ).
    names = [c.name for stage in ("core", "table2", "table3")
             for _, _, grid in reproduce.stage_grids(stage, plan, cfg)
             for c in grid_cells([cfg.model], [cfg.dataset], *grid)]
    assert "vgg8-mnist5k-vanilla-sigma0-alphanone-seed0" in names
    assert len(trainings_of_plan(ExperimentConfig(), Plan(
        stages=("table2", "table3", "core"), seeds=1, sigmas=(0.4, 0.6), table3_seeds=2))) \
        == len(set(names))
    # A plan before 2026-12-07 ran the vanilla stage as seed-<n>/ folders: the same
    # experiments, which the vanilla stage's cells link to.
    vanilla_cfg, = (c for name, c, _ in reproduce.stage_grids("vanilla", plan, cfg))
    (tmp_path / "vanilla_sweep_vgg8" / "seed-0").mkdir(parents=True)
    reproduce.link_shared_cells(out, "vanilla", vanilla_cfg, _grid("vanilla", plan, cfg))
    assert linked("vanilla") == ["vgg8-mnist5k-vanilla-sigma0-alphanone-seed0"]
    assert (tmp_path / "vanilla_sweep_vgg8" / "cells" / linked("vanilla")[0]).resolve() \
        == (tmp_path / "vanilla_sweep_vgg8" / "seed-0").resolve()


@pytest.mark.parametrize("stage, method, count, need", [
    ("alpha", "irs", 5, 300), ("table5", "irs", 2, 120)])
def test_a_stage_of_several_trainings_starts_only_if_all_of_them_fit(tmp_path, stage, method,
                                                                      count, need):
    """The α search and a Table V variant run as one job each: with a budget, each starts
    only if its trainings, at the measured time of cells like them, end in time (a job
    started with seconds left would outrun the budget)."""
    from neft_jax.harness.budget import cost_key
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.sweeps import ALONE

    cfg = ExperimentConfig(model="vgg8", width=1.0, epochs=200)
    budget = Budget(60.0 * count - 1)  # one training less a second would fit
    budget.record(cost_key(method, "vgg8", 1.0, 200), 60.0)
    runner = _Runner(Plan(stages=(stage,), seeds=2, table5_seeds=2), str(tmp_path), print,
                     False, budget, ALONE)
    with pytest.raises(BudgetExhausted, match=f"needs ≈ {need} s"):
        runner.stage(stage, cfg)
    assert not any(tmp_path.iterdir())  # nothing started


def test_a_finished_job_starts_and_the_first_vanilla_cell_is_sized_for_its_sigmas(
        tmp_path, monkeypatch):
    """A rerun counts only the trainings a job has left: a finished α search starts even
    with seconds left (it only reads its results). The vanilla stage's first cell, scored
    at 11 σ where the cells it is sized from score one, is sized by the share of their
    time that scoring took (50 % before any cell says: 6× a cell)."""
    from neft_jax.harness.budget import cost_key
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults
    from neft_jax.harness.sweeps import ALONE

    def finished(folder, method, sigmas):
        os.makedirs(folder)
        RunResults(settings={"eval_sigmas": list(sigmas)}, methods={method: MethodResult(
            alpha=None, evaluations={s: Evaluation(s, {"mean": 50.0}) for s in sigmas})}
        ).save(os.path.join(folder, "results.json"))

    started = []
    monkeypatch.setattr(reproduce, "run_experiment", lambda job, **_: started.append(job))
    monkeypatch.setattr(reproduce, "run_sweep", lambda cells, job, *_, **__: started.append(job))
    cfg = ExperimentConfig(model="vgg8", width=1.0, epochs=200)
    budget = Budget(90.0)
    budget.record(cost_key("noise", "vgg8", 1.0, 200), 60.0)
    runner = reproduce._Runner(Plan(stages=("alpha", "vanilla"), seeds=2), str(tmp_path), print,
                               False, budget, ALONE)
    finished(stage_dir(str(tmp_path), "alpha", "vgg8"), "irs", [0.4])
    runner.stage("alpha", cfg)  # 5 × 69 s of search, but all done: it starts
    assert len(started) == 1 and started[0].alpha_search
    # vanilla at 0.9 × noise's 60 s, × (1 + 0.5 × 10) for its 11 σ: 324 s
    with pytest.raises(BudgetExhausted, match="vanilla-sigma0-alphanone-seed0 needs ≈ 324 s"):
        runner.stage("vanilla", cfg)
    # a finished cell in which scoring its σ took 2 % of the time: 54 × (1 + 0.02 × 10)
    # = 64.8 s, which fits in the 90 s
    cell = tmp_path / "core_vgg8" / "cells" / "a"
    cell.mkdir(parents=True)
    (cell / "results.json").write_text(json.dumps({"wall_seconds": 50.0, "methods": {
        "noise": {"evaluations": {"0.4": {"eval_seconds": 1.0}}}}}))
    runner.stage("vanilla", cfg)
    assert len(started) == 2 and started[1].eval_sigmas == tuple(
        sorted(set(VANILLA_SIGMAS) | set(TABLE2_SIGMAS)))


def test_a_budgeted_plan_estimates_what_fits_from_a_measured_loop_rate(tmp_path):
    """``reproduce.py --rates bench.jsonl`` says before starting how many trainings fit,
    from bench.py's end-to-end row; cells a later stage reuses are counted once."""
    import json

    from neft_jax.harness.config import ExperimentConfig

    base = ExperimentConfig(epochs=10, mc_runs=100, out=str(tmp_path / "plan"))
    plan = Plan(models=("vgg8",), stages=("core", "table2"), seeds=1, sigmas=(0.4, 0.6))
    trainings = trainings_of_plan(base, plan)
    # core: noise, noise_scaled, IRS and the α → 0 control at two σ, and one vanilla cell
    # scored at the 11 σ of the vanilla stage; Table II's noise/IRS cells at those σ are
    # core's, so nothing new.
    assert len(trainings) == 9 and trainings[0] == ("vgg8", "noise", 1)
    assert trainings.count(("vgg8", "vanilla", 11)) == 1
    rates = tmp_path / "bench.jsonl"
    rows = [{"bench": "train", "images_per_s": 1.0, "compile_s": 5.0},
            {"bench": "end_to_end", "loop_images_per_s": 3600.0, "model": "vgg8",
             "method": "noise", "compute": "fp32"}]
    rates.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    line = cli.plan_estimate(base, plan, str(rates), 60.0)
    # A noise cell: 10 epochs × 3,600 images at 3,600/s = 10 s, plus evaluation.
    assert line.startswith("estimate (from the measured loop rate, 3,600 images/s")
    assert "a compile of 5 s per model × method" in line
    assert "9 trainings" in line and "fit in the 60 s budget" in line
    fit = int(line.split("about ")[-1].split(" of them")[0])
    assert 1 <= fit < 9
    # A later row measured with another --val-every is not the plan's loop.
    other = {**rows[1], "loop_images_per_s": 1.0, "val_every": 4}
    rates.write_text("\n".join(json.dumps(r) for r in [*rows, other]) + "\n")
    assert cli.plan_estimate(base, plan, str(rates), 60.0) == line
    with pytest.raises(ValueError, match="cannot read --rates"):
        cli.plan_estimate(base, plan, str(tmp_path / "none"), 60.0)
    # Rates measured otherwise are used, and said to be.
    rates.write_text(json.dumps({**rows[1], "compute": "tf32", "width": 1.0}) + "\n")
    assert cli.plan_estimate(base, plan, str(rates), 60.0).endswith(
        "; the rates were measured with another compute tf32 (the plan's fp32), width 1.0 "
        f"(the plan's {base.width:g})")
    rates.write_text(json.dumps(other) + "\n")  # no usable row: a ValueError, which
    with pytest.raises(ValueError, match=r"no end-to-end row with --val-every 1 \(it has "
                                         r"\[4\]\)"):  # --estimate-only reports, exit 2
        cli.plan_estimate(base, plan, str(rates), 60.0)
    rates.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="no end-to-end row"):
        cli.plan_estimate(base, plan, str(rates), 60.0)


def test_a_stage_run_after_another_sweeps_over_the_other_stages_cells(tmp_path, monkeypatch):
    """run_plan links before each sweep: the core stage, run after Table II, finds Table II's
    noise injection, noise_scaled and IRS cells in its folder (the sweep then skips the
    finished ones) and trains only the α → 0 control; then the vanilla stage's cell."""
    from neft_jax.harness.config import ExperimentConfig

    out = tmp_path / "plan"
    plan = Plan(stages=("core",), seeds=1, sigmas=(0.6,))
    base = ExperimentConfig(epochs=1, mc_runs=2, out=str(out))
    for cell in _grid("table2", plan, reproduce.stage_config(base, "vgg8")):
        (out / "table2_vgg8" / "cells" / cell.name).mkdir(parents=True)
    swept = []
    monkeypatch.setattr(reproduce, "run_sweep", lambda cells, cfg, path, **_: swept.append(
        (path, sorted(p.name for p in (tmp_path / path).glob("cells/*") if p.is_symlink()))))
    reproduce.run_plan(base, plan, str(out), log=lambda m: None, show_progress=False)
    assert swept == [(str(out / "core_vgg8"), [
        "vgg8-mnist5k-irs-sigma0.6-alphadefault-seed0",
        "vgg8-mnist5k-noise-sigma0.6-alphanone-seed0",
        "vgg8-mnist5k-noise_scaled-sigma0.6-alphanone-seed0"]),
        (str(out / "vanilla_sweep_vgg8"), [])]


def test_the_estimate_counts_only_what_is_left_in_the_folder(tmp_path):
    """A continued plan's estimate leaves out the trainings finished in OUT: a grid cell
    finished in any stage's folder (it is linked, not trained) and a finished seed of a
    multi-seed job; before, it counted the whole plan every time."""
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults

    def finish(folder, method, sigma, settings=None):
        settings = settings or {"methods": [method], "sigma": sigma}
        RunResults(settings={**settings, "eval_sigmas": [sigma]},
                   methods={method: MethodResult(alpha=None, evaluations={
                       sigma: Evaluation(sigma, {"mean": 50.0})})}).save(
            str(folder / "results.json"))

    base = ExperimentConfig(epochs=10, mc_runs=100, out=str(tmp_path / "unused"))
    plan = Plan(models=("vgg8",), stages=("table2", "table5"), seeds=1, sigmas=(0.4,),
                table5_seeds=2)
    out = tmp_path / "plan"
    whole = trainings_of_plan(base, plan)
    # Table II's three methods; all-exit IRS at Table V's seed 1, which Table II (1 seed)
    # does not train; 4 Table V variants × 2 seeds
    assert len(whole) == 3 + 1 + 4 * 2
    assert trainings_of_plan(base, plan, str(out)) == whole  # nothing there yet
    cell = "vgg8-mnist5k-noise_scaled-sigma0.4-alphanone-seed0"
    (out / "core_vgg8" / "cells" / cell).mkdir(parents=True)  # another stage made it
    from neft_jax.harness.sweeps import Cell, cell_config

    made = cell_config(reproduce.stage_config(base, "vgg8"),  # with the plan's settings
                       Cell("vgg8", "mnist5k", "noise_scaled", 0.4, None, 0), "unused")
    finish(out / "core_vgg8" / "cells" / cell, "noise_scaled", 0.4, made.to_dict())
    (out / "table5_vgg8_drop1" / "seed-1").mkdir(parents=True)
    finish(out / "table5_vgg8_drop1" / "seed-1", "irs", 0.4)
    left = trainings_of_plan(base, plan, str(out))
    assert len(left) == len(whole) - 2
    assert ("vgg8", "noise_scaled", 1) not in left
    rows = [{"bench": "end_to_end", "loop_images_per_s": 3600.0, "model": "vgg8",
             "method": "noise"}]
    line = estimate.estimate_from_rates(base, plan, rows, None, 3600, 400, 1000, out=str(out))
    assert f"): {len(whole) - 2} trainings (2 more finished before), about " in line


def test_estimate_only_prints_the_whole_plans_estimate_and_trains_nothing(tmp_path, capsys):
    import json

    rates = tmp_path / "bench.jsonl"
    rates.write_text(json.dumps({"bench": "end_to_end", "loop_images_per_s": 3600.0,
                                 "model": "vgg8", "method": "noise"}) + "\n")
    out = tmp_path / "plan"
    args = [*TINY, "--stages", "core", "--seeds", "1", "--out", str(out), "--estimate-only"]
    assert cli.reproduce_main(args + ["--rates", str(rates)]) == 0
    printed = capsys.readouterr().out
    assert "estimate (from the measured loop rate, 3,600 images/s" in printed
    assert "9 trainings" in printed  # 4 methods at σ = 0.4 and 0.6, and vanilla once
    assert "[1/" not in printed and not _finished(out)  # no cell started
    with pytest.raises(SystemExit) as refused:
        cli.reproduce_main(args)
    assert refused.value.code == 2 and "--estimate-only needs --rates" in capsys.readouterr().err
    # --stages all: every stage, in the program's order.
    everything = [a if a != "core" else "all" for a in args] + ["--rates", str(rates)]
    assert cli.reproduce_main(everything) == 0
    printed = capsys.readouterr().out
    assert f"stages {list(reproduce.BUDGET_STAGES)}" in printed and "priority order" in printed


def test_a_time_boxed_plan_takes_the_paper_scale_programs_order_across_models():
    """Issue 33's order: VGG-8's core cells at σ = 0.4 then 0.6, its α grid, Table II with
    the vanilla sweep, Table III, ResNet-18's core cells at σ = 0.4, Table V; then the
    rest model by model. A plain plan (or one with --stages) goes model by model."""
    from paper.plan import BUDGET_STAGES, Step

    plan = Plan(models=("vgg8", "resnet18"), stages=BUDGET_STAGES, order="priority")
    steps = plan.steps()
    assert steps[:8] == (Step("vgg8", "core", 0.4), Step("vgg8", "core", 0.6),
                         Step("vgg8", "alpha_grid"), Step("vgg8", "table2"),
                         Step("vgg8", "vanilla"), Step("vgg8", "table3"),
                         Step("resnet18", "core", 0.4), Step("vgg8", "table5"))
    assert Step("resnet18", "core", 0.6) in steps[8:]
    assert len(steps) == len(set(steps)) == 2 * (len(BUDGET_STAGES) + 1)  # core: two steps
    one = Plan(models=("vgg8",), stages=("core", "table5"), order="priority")
    assert one.steps() == (Step("vgg8", "core", 0.4), Step("vgg8", "core", 0.6),
                           Step("vgg8", "table5"))
    assert Plan(models=("vgg8", "resnet18"), stages=("table5", "core")).steps() == (
        Step("vgg8", "table5"), Step("vgg8", "core"), Step("resnet18", "table5"),
        Step("resnet18", "core"))
    with pytest.raises(ValueError, match="order must be one of"):
        Plan(order="fastest")


def test_the_alpha_grid_trains_every_alpha_at_its_seeds_reusing_the_authors_alpha():
    """The α grid: IRS at σ = 0.4 at each α of the search × ``alpha_seeds`` seeds; the
    authors' α is the core stage's cell (named alphadefault), so it is not trained twice."""
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.sweeps import grid_cells

    base = ExperimentConfig(model="vgg8", dataset="mnist5k")
    plan = Plan(stages=("core", "alpha_grid"), seeds=3, alpha_seeds=2)
    methods, sigmas, alphas, seeds = reproduce.grid_of_stage("alpha_grid", plan, base)
    assert (methods, sigmas, alphas, seeds) == (["irs"], [0.4], [1.0, 0.1, 1e-2, 1e-3, 1e-4],
                                                [0, 1])
    names = [c.name for c in grid_cells(["vgg8"], ["mnist5k"], methods, sigmas, alphas, seeds)]
    assert "vgg8-mnist5k-irs-sigma0.4-alphadefault-seed1" in names
    core = {c.name for c in _grid("core", plan, base)}
    assert sorted(set(names) & core) == [f"vgg8-mnist5k-irs-sigma0.4-alphadefault-seed{s}"
                                         for s in (0, 1)]  # the cells it shares with core
    # ResNet-18's authors' α on MNIST is 1e-1: that one is its reused cell.
    resnet = reproduce.grid_of_stage("alpha_grid", plan, ExperimentConfig(
        model="resnet18", dataset="mnist5k"))
    assert [c.alpha for c in grid_cells(["resnet18"], ["mnist5k"], *resnet)][:5] == [
        1.0, None, 1e-2, 1e-3, 1e-4]
    # Counted once: core at two σ (8 trainings a seed and vanilla once, 3 seeds) + 4 new
    # α × 2 seeds.
    assert len(trainings_of_plan(base, plan)) == 27 + 8


def test_the_share_of_a_cell_spent_scoring_one_sigma_is_read_from_finished_cells(tmp_path):
    """The vanilla stage scores 11 σ where the cells it is sized from score one: the share
    of a cell's time one σ took (its results.json) scales the estimate."""
    import json

    from paper.reproduce import evaluation_share

    assert evaluation_share(str(tmp_path), "vgg8") == 0.5  # nothing measured: cautious
    for name, wall, scored in (("a", 28.0, 0.8), ("b", 40.0, 2.0)):
        cell = tmp_path / "core_vgg8" / "cells" / name
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({"wall_seconds": wall, "methods": {
            "noise": {"evaluations": {"0.4": {"eval_seconds": scored}}}}}))
    assert evaluation_share(str(tmp_path), "vgg8") == pytest.approx((0.8 / 28 + 2 / 40) / 2)
    assert evaluation_share(str(tmp_path), "resnet18") == 0.5  # another model's cells
    # a vanilla stage's cell, scored at several σ, is not one σ's share
    cell = tmp_path / "vanilla_sweep_vgg8" / "cells" / "c"
    cell.mkdir(parents=True)
    (cell / "results.json").write_text(json.dumps({"wall_seconds": 30.0, "methods": {
        "vanilla": {"evaluations": {"0": {"eval_seconds": 0.1},
                                    "0.4": {"eval_seconds": 1.0}}}}}))
    assert evaluation_share(str(tmp_path), "vgg8") == pytest.approx((0.8 / 28 + 2 / 40) / 2)
