"""The scaling study (issue 18): points, findings, table and plot from finished cells.

The study lives in experiments/scaling/, outside the installed library."""

import json
import os
import sys

import pytest

from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.results import Evaluation, MethodResult, RunResults
from neft_jax.harness.sweeps import Cell

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
from scaling import cli  # noqa: E402
from scaling.collect import Crossing, Point, Row, StudyReport, StudySettings, findings  # noqa: E402
from scaling.report import write_study_report  # noqa: E402
from scaling.study import parse_points, study_points  # noqa: E402


def test_points_parse_and_run_cheapest_first():
    points = study_points(parse_points("1:4/12,0.125:12/48"))
    assert [(p.width, p.epochs) for p in points] == [(0.125, 12), (0.125, 48), (1.0, 4),
                                                       (1.0, 12)]
    assert parse_points("0.0625:1,0.0625:2,0.0625:1") == {0.0625: (1, 2)}  # a width twice
    for bad in ("1", "1:0", "0:4", "a:b"):
        with pytest.raises(ValueError, match="--points"):
            parse_points(bad)


def _row(width, epochs, method, mean, ci):
    return Row(width=width, epochs=epochs, steps=epochs * 28, method=method, seeds=1, mean=mean,
               ci95=ci, std=None, runs=None, seed_means=(), clean=None, diverged=False,
               wall_seconds=60.0)


def test_findings_name_the_smallest_point_where_methods_separate():
    rows = [_row(0.125, 12, "noise", 10.2, 0.3), _row(0.125, 12, "irs", 10.4, 0.3),
            _row(0.125, 12, "noise_scaled", 10.1, 0.3),
            _row(0.25, 12, "noise", 30.0, 2.0), _row(0.25, 12, "irs", 33.0, 2.0),
            _row(0.25, 12, "noise_scaled", 40.0, 2.0),
            _row(1.0, 4, "noise", 60.0, 1.0), _row(1.0, 4, "irs", 70.0, 1.0),
            _row(1.0, 4, "noise_scaled", 71.0, 1.0)]
    found = findings(rows, chance=10.0)
    assert found.noise_leaves_chance == Point(0.25, 12)
    assert found.noise_scaled_above_noise == Point(0.25, 12)
    assert found.irs_above_noise == Point(1.0, 4)  # at ×0.25 CIs overlap
    assert found.irs_above_noise_scaled is None


def test_report_from_finished_cells(tmp_path):
    base = ExperimentConfig(mc_runs=50, sigma=0.4)
    points = [Point(0.125, 12), Point(0.25, 12)]
    for method, mean in (("noise", 20.0), ("irs", 35.0)):  # only the first point finished
        cell = Cell("vgg8", "mnist5k", method, 0.4, None, 0)
        folder = tmp_path / points[0].name / "cells" / cell.name
        folder.mkdir(parents=True)
        evaluation = Evaluation(sigma=0.4, summary={"mean": mean, "ci95": 1.0, "std": 7.0,
                                                    "runs": 50})
        RunResults(settings={"num_train": 3600, "batch_size": 128, "eval_sigmas": [0.4]},
                   methods={method: MethodResult(alpha=None, evaluations={0.4: evaluation},
                                                 clean_accuracy=97.0)},
                   wall_seconds=120.0).save(str(folder / "results.json"))
    report = write_study_report(base, points, str(tmp_path), ("vanilla", "noise", "irs"))
    assert [(r.method, r.steps) for r in report.rows] == [("noise", 336),
                                                                   ("irs", 336)]
    assert report.findings.irs_above_noise == Point(0.125, 12)
    table = (tmp_path / "SCALING.md").read_text()
    assert "| ×0.125 | 12 | 336 | – | 20.00 ± 1.00 [2.0] | 35.00 ± 1.00 [2.0] |" in table
    assert "vanilla 63.54, noise 97.77, irs 99.3 %" in table  # the paper's σ = 0.4 numbers
    assert "One seed: each ± covers the Monte Carlo runs" in table
    assert "Made with (code, machine, day): unknown, unknown, ." in table  # no environment

    written = json.loads((tmp_path / "scaling.json").read_text())
    assert written == json.loads(json.dumps(report.to_json())) and written["chance"] == 10.0
    # The typed rows are written with the keys scaling.json has always had, in that order.
    assert list(written) == ["settings", "rows", "differences", "chance", "findings"]
    assert list(written["rows"][0]) == ["width", "epochs", "steps", "method", "seeds", "mean",
                                        "ci95", "std", "runs", "seed_means", "clean",
                                        "diverged", "wall_seconds", "diverged_seeds"]
    assert written["findings"]["irs_above_noise"] == {"width": 0.125, "epochs": 12}
    assert list(written["findings"]["across_seeds"]) == ["irs-noise", "noise_scaled-noise",
                                                         "irs-noise_scaled"]
    assert (tmp_path / "differences.png").exists()  # IRS − noise injection, seed 0
    # Every point below 50 %: a second, zoomed row of panels (the figure is taller).
    assert _image_height(tmp_path / "scaling.png") > 700
    # The command line writes the same report from the same cells, training nothing.
    (tmp_path / "SCALING.md").unlink()
    assert cli.scaling_main(["--report-only", "--points", "0.125:12,0.25:12", "--methods",
                             "vanilla,noise,irs", "--sigma", "0.4", "--out",
                             str(tmp_path)]) == 0
    assert (tmp_path / "SCALING.md").read_text() == table
    assert not (tmp_path / points[1].name).exists()  # nothing ran for the unfinished point
    with pytest.raises(SystemExit):  # other settings: a report of nothing, refused
        cli.scaling_main(["--report-only", "--points", "0.125:12,0.25:12", "--methods",
                          "vanilla,noise,irs", "--sigma", "0.4", "--batch-size", "64", "--out",
                          str(tmp_path)])
    assert (tmp_path / "SCALING.md").read_text() == table


def _image_height(path) -> int:
    import matplotlib.image

    return matplotlib.image.imread(str(path)).shape[0]


def test_the_plot_zooms_only_when_every_point_is_low(tmp_path):
    from scaling.report import plot_study

    settings = StudySettings(model="vgg8", dataset="mnist5k", sigma=0.4, normalisation="x",
                             device_preset="x", mc_runs=50, batch_size=128, seeds=(0,),
                             points=())
    low = (_row(0.125, 12, "noise", 12.0, 1.0), _row(1.0, 4, "noise", 15.0, 1.0))
    high = low + (_row(1.0, 12, "noise", 80.0, 1.0),)
    for rows, name in ((low, "low.png"), (high, "high.png")):
        plot_study(StudyReport(settings, rows, (), 10.0, findings(rows, 10.0)), ("noise",),
                   str(tmp_path / name))
    assert _image_height(tmp_path / "low.png") > 1.5 * _image_height(tmp_path / "high.png")


def test_scaling_cli_refuses_bad_points(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.scaling_main(["--points", "0.5:", "--out", "unused"])
    assert exit_.value.code == 2 and "--points" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.scaling_main(["--report-only", "--out", "no/such/folder"])
    assert exit_.value.code == 2 and "no study" in capsys.readouterr().err


def test_several_seeds_give_the_mean_and_ci_over_seeds(tmp_path):
    import dataclasses

    base = ExperimentConfig(mc_runs=50, sigma=0.4, seeds=2)
    point = Point(0.5, 8)
    for seed, mean in ((0, 20.0), (1, 24.0)):
        cell = Cell("vgg8", "mnist5k", "noise", 0.4, None, seed)
        folder = tmp_path / point.name / "cells" / cell.name
        folder.mkdir(parents=True)
        evaluation = Evaluation(sigma=0.4, summary={"mean": mean, "ci95": 1.0, "runs": 50})
        RunResults(settings={"num_train": 3600, "batch_size": 128, "eval_sigmas": [0.4]},
                   methods={"noise": MethodResult(alpha=None, evaluations={0.4: evaluation})},
                   wall_seconds=60.0).save(str(folder / "results.json"))
    row, = write_study_report(base, [point], str(tmp_path), ("noise",)).rows
    assert row.seeds == 2 and row.mean == pytest.approx(22.0)
    assert row.ci95 == pytest.approx(12.7062 * 2.0, rel=1e-4)  # t(0.975, 1) · std / √2
    assert row.seed_means == (20.0, 24.0)  # the plot marks each seed's mean
    text = (tmp_path / "SCALING.md").read_text()
    assert "over seeds [0, 1]" in text
    assert "Student-t 95 % interval over the n = 2 seeds' means, 12.71·std/√n" in text
    one, = write_study_report(dataclasses.replace(base, seeds=1), [point], str(tmp_path),
                              ("noise",)).rows
    assert one.seeds == 1 and one.mean == 20.0 and one.ci95 == 1.0


def _save_cell(tmp_path, point, method, seed, accuracies):
    import numpy as np

    from neft_jax.stats import summarize

    cell = Cell("vgg8", "mnist5k", method, 0.4, None, seed)
    folder = tmp_path / point.name / "cells" / cell.name
    folder.mkdir(parents=True)
    evaluation = Evaluation(sigma=0.4, summary=summarize(accuracies),
                            accuracies=list(np.asarray(accuracies, float)))
    RunResults(settings={"num_train": 3600, "batch_size": 128, "eval_sigmas": [0.4]},
               methods={method: MethodResult(alpha=None, evaluations={0.4: evaluation})},
               wall_seconds=60.0).save(str(folder / "results.json"))


def test_differences_are_paired_within_a_seed_and_t_intervals_over_seeds(tmp_path):
    import numpy as np
    from scipy.stats import t

    base = ExperimentConfig(mc_runs=4, sigma=0.4, seeds=3)
    point = Point(1.0, 12)
    # noise varies a lot between seeds; IRS is noise + a seed's offset on the same runs.
    offsets = {0: 2.0, 1: 3.0, 2: 2.5}
    for seed, level in ((0, 30.0), (1, 45.0), (2, 38.0)):
        runs = level + np.array([-3.0, 1.0, 0.0, 2.0])
        _save_cell(tmp_path, point, "noise", seed, runs)
        _save_cell(tmp_path, point, "irs", seed, runs + offsets[seed] + [0.1, -0.1, 0.1, -0.1])
    _save_cell(tmp_path, point, "noise_scaled", 0, [29.0, 31.0, 30.0, 28.0])  # one seed only
    report = write_study_report(base, [point], str(tmp_path), ("noise", "irs", "noise_scaled"))
    by_pair = {(d.a, d.b): d for d in report.differences}
    irs = by_pair[("irs", "noise")]
    assert [p.difference for p in irs.per_seed] == pytest.approx([2.0, 3.0, 2.5])
    assert irs.per_seed[0].ci95 == pytest.approx(1.96 * 0.11547 / 2, rel=1e-3)  # paired
    assert irs.mean == pytest.approx(2.5)
    assert irs.t_ci95 == pytest.approx(t.ppf(0.975, 2) * 0.5 / 3 ** 0.5)
    # Across seeds IRS is above noise: the t interval excludes 0 ...
    assert report.findings.across_seeds[("irs", "noise")] == Crossing(1.0, 12, 1)
    # ... while the rows' CIs over seeds overlap (the seeds' spread is ≈ 15 points).
    assert report.findings.irs_above_noise is None
    # One seed of noise_scaled: a per-seed difference, no interval, no finding, and its
    # row is not compared with the three-seed rows.
    scaled = by_pair[("noise_scaled", "noise")]
    assert scaled.seeds == 1 and scaled.t_ci95 is None
    assert report.findings.across_seeds[("noise_scaled", "noise")] is None
    text = (tmp_path / "SCALING.md").read_text()
    assert "| ×1 | 12 | IRS − noise injection | +2.00 ± 0.11 | +3.00 ± 0.11 | +2.50 ± 0.11 " \
           "| +2.50 ± 1.24 (n = 3) |" in text
    assert "- IRS − noise injection: width ×1, 12 epochs, IRS above" in text
    assert "29.50 ± 1.27 (1 seed) [1.0]" in text
    # The differences are drawn too: one panel per pair that has a common seed (3 here).
    import matplotlib.image

    height, width = matplotlib.image.imread(str(tmp_path / "differences.png")).shape[:2]
    assert width > 2.5 * height


def test_a_seed_that_diverged_is_judged_by_its_kept_epoch_and_n_counts_means():
    """method.md §5: a seed that diverged after keeping an epoch counts with that epoch's
    score; one that kept none has no mean and is left out of n. One mean left gives no
    interval, and no 'separated' finding can rest on it."""
    from scaling.collect import collect, separated

    point = Point(1.0, 12)

    def seed(mean, diverged=False):
        summary = None if mean is None else {"mean": mean, "ci95": 1.0, "runs": 10,
                                             "ekl": 0.5}
        entry = MethodResult(alpha=0.0, diverged=diverged, clean_accuracy=90.0,
                             evaluations={0.4: Evaluation(0.4, summary)})
        results = RunResults(settings={"num_train": 896, "batch_size": 32}, methods={},
                             wall_seconds=60.0)
        return results, entry, entry.at(0.4)

    finished = {(point, "noise"): {0: seed(60.0), 1: seed(61.0), 2: seed(20.0, True)},
                (point, "irs"): {0: seed(70.0), 1: seed(None, True), 2: seed(None, True)}}
    noise, irs = collect([point], ["noise", "irs"], finished)
    assert (noise.seeds, noise.diverged_seeds, noise.seed_means) == (3, 1, (60.0, 61.0, 20.0))
    assert noise.mean == pytest.approx(47.0)
    assert (irs.seeds, irs.diverged_seeds, irs.mean, irs.ci95) == (1, 2, 70.0, None)
    assert not separated(irs, noise) and not separated(irs, irs)
