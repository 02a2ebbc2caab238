"""The printed table: legend, clean accuracy, chance level and the verdict line."""

from neft_jax.harness.reporting import format_table, verdict
from neft_jax.harness.results import Evaluation, MethodResult, RunResults

SETTINGS = {"sigma": 0.4, "eval_sigmas": [0.4], "mc_runs": 200, "dataset": "mnist5k",
            "width": 0.125, "epochs": 12, "normalisation": "range"}


def _results(accuracies=None, **means_and_cis):
    accuracies = accuracies or {}
    methods = {m: MethodResult(alpha=0.01 if m == "irs" else 0.0, clean_accuracy=95.0,
                               evaluations={0.4: Evaluation(0.4, {"mean": mean, "ci95": ci,
                                                                  "std": 2.0, "ekl": 0.5},
                                                            accuracies=accuracies.get(m, []))})
               for m, (mean, ci) in means_and_cis.items()}
    return RunResults(settings=dict(SETTINGS), methods=methods)


def test_all_methods_at_chance_say_the_model_learned_nothing_and_what_to_change():
    text = verdict(_results(vanilla=(10.3, 0.3), noise=(10.3, 0.3), irs=(10.1, 0.3),
                            ovf=(10.25, 0.3)))
    assert "learned nothing" in text and "chance (10 %)" in text
    assert "width ×0.125" in text and "12 epochs" in text
    assert "--width" in text and "--epochs" in text and "--sigma" in text
    assert "--normalisation level" in text  # these settings had 'range' noise
    level = _results(vanilla=(10.3, 0.3))
    level.settings.update(normalisation="level", sigma=0.0)
    level.methods["vanilla"].evaluations = {0.0: level.methods["vanilla"].evaluations[0.4]}
    text = verdict(level)
    assert "learned nothing (even without noise)" in text and "--epochs" in text
    assert "--normalisation" not in text and "--sigma" not in text  # nothing left to lower


def test_two_methods_that_differ_beyond_their_cis_are_named():
    text = verdict(_results(vanilla=(25.9, 0.7), noise=(50.8, 9.7), irs=(72.9, 6.5),
                            ovf=(73.2, 6.6)))
    assert text.startswith("Verdict: at σ = 0.4, ovf scores highest (73.2 ± 6.6 %)")
    assert "beats noise, vanilla beyond their 95 % CIs" in text
    assert "irs is within its CI" in text and "learned nothing" not in text


def test_table_text_has_the_legend_clean_accuracy_and_chance_level():
    text = format_table(_results(noise=(50.8, 9.7), irs=(72.9, 6.5)))
    assert "[std] (EKL, nats)" in text and "72.90 ± 6.50 [2.00] (0.500)" in text
    assert "clean" in text and "95.00" in text and "chance: 10.0 %" in text
    legend = next(line for line in text.splitlines() if line.startswith("cells:"))
    assert "200 Monte Carlo runs" in legend  # the legend is one line
    assert text.rstrip().splitlines()[-1].startswith("Verdict:")


def test_result_files_are_readable():
    import csv
    import io

    from neft_jax.harness.reporting import results_csv
    from neft_jax.harness.runtime import environment
    from neft_jax.harness.sweeps import aggregate_over_seeds

    rows = list(csv.DictReader(io.StringIO(results_csv(_results(noise=(16.0 - 2e-15, 1.0),
                                                                irs=(70.0, 2.0))))))
    alpha = {r["method"]: r["alpha"] for r in rows}
    assert alpha == {"noise": "", "irs": "0.01"}  # α only where the method has one
    assert {r["mean"] for r in rows} == {"16.0", "70.0"}  # rounded for reading
    assert {r["clean_accuracy"] for r in rows} == {"95.0"}  # the table's clean column too
    one_seed = aggregate_over_seeds([{"model": "vgg8", "dataset": "mnist5k", "method": "noise",
                                      "sigma": 0.4, "alpha": None, "eval_sigma": 0.4,
                                      "mean": 50.0, "ci95": 1.0, "std": 7.0, "ekl": 0.5,
                                      "runs": 200, "seed": 0, "diverged": False}])
    assert one_seed[0]["ci95"] is None and one_seed[0]["std_over_seeds"] is None
    cell = {"model": "vgg8", "dataset": "mnist5k", "method": "noise", "sigma": 0.4,
            "alpha": None, "eval_sigma": 0.4, "ci95": 1.0, "std": 7.0, "ekl": 0.5, "runs": 200}
    later, = aggregate_over_seeds([{**cell, "mean": 60.0, "seed": 0, "diverged": True},
                                   {**cell, "mean": 40.0, "seed": 1, "diverged": False}])
    assert later["mean"] == 50.0 and later["ci95"] is not None  # judged by its kept epoch
    never, = aggregate_over_seeds([{**cell, "mean": None, "seed": 0, "diverged": True},
                                   {**cell, "mean": 40.0, "seed": 1, "diverged": False}])
    assert never["mean"] == 40.0 and never["ci95"] is None and never["not_converged"] == 1
    assert environment()["cpu_model"].strip()  # the CPU model is recorded


def test_sweep_rejects_flags_it_does_not_use(capsys):
    import pytest

    from neft_jax.harness import cli

    for flag in (["--resume"], ["--overwrite"], ["--seed-mode", "vmap"], ["--alpha-search"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.sweep_main([*flag, "--out", "unused"])
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_verdict_says_whether_irs_and_ovf_beat_noise_scaled_paired_over_the_same_runs():
    """IRS − noise_scaled is judged run by run (same noise keys): a constant +2-point gap
    scores above although both means' CIs (±5) overlap; OVF 2 points below on every run
    scores below; neither is called a win, since one training each says nothing of seeds."""
    base = [50.0, 60.0, 70.0, 80.0]
    accuracies = {"noise_scaled": base, "irs": [a + 2.0 for a in base],
                  "ovf": [a - 2.0 + 0.1 * (i % 2) for i, a in enumerate(base)]}
    text = verdict(_results(accuracies, noise_scaled=(65.0, 5.0), irs=(67.0, 5.0),
                            ovf=(63.05, 5.0)))
    against = text.splitlines()[-1]
    assert against.startswith("Against the fair baseline")
    assert "IRS scores above noise_scaled (+2.0 ± 0.0 points, paired over 4 noise " \
        "instances)" in against and "beats" not in against
    assert "OVF scores below noise_scaled (-2.0 ± 0.1 points" in against
    assert against.endswith("hold each method's one training fixed, so they cannot tell the "
                            "methods apart as trainings: --seeds 3 does.")


def test_verdict_without_paired_runs_compares_the_cis_and_says_no_difference():
    text = verdict(_results(noise_scaled=(65.0, 5.0), irs=(67.0, 5.0)))
    assert "IRS does not differ from noise_scaled (+2.0 points, 95 % CIs overlapping)" in text
    assert "Against the fair baseline" not in verdict(_results(noise=(65.0, 5.0),
                                                               irs=(67.0, 5.0)))


def test_table_title_names_the_noise_definition_preset_and_sigma():
    results = _results(noise=(50.8, 9.7))
    results.settings.update(normalisation="level", device_preset="FeFET2")
    title = format_table(results).splitlines()[0]
    assert "'level' noise (eq. 5), FeFET2, trained at σ = 0.4" in title
    results.settings["normalisation"] = "range"
    assert "'range' noise (authors' code)" in format_table(results).splitlines()[0]


def test_exits_below_chance_are_explained_in_the_table_and_the_plot(tmp_path):
    from neft_jax.harness.reporting import below_chance_exits, plot_feedback_ratio

    results = _results(irs=(67.0, 5.0))
    results.methods["irs"].history = [
        {"epoch": 1, "train_accuracy": 50.0, "feedback_ratio": 0.1,
         "exit_accuracies": [20.0, 30.0]},
        {"epoch": 2, "train_accuracy": 60.0, "feedback_ratio": 0.5,
         "exit_accuracies": [3.1, 40.0]}]
    assert below_chance_exits(results) == [("irs", 1, 3.1)]
    text = format_table(results)
    assert "irs exit 1 ends at 3.1 % training accuracy, below chance" in text
    assert "anti-predicts" in text and text.rstrip().splitlines()[-1].startswith("Verdict:")
    plot_feedback_ratio(results, str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 0
    results.methods["irs"].history[-1]["exit_accuracies"] = [9.0, 40.0]  # within 3 points
    assert below_chance_exits(results) == [] and "anti-predicts" not in format_table(results)


def test_a_seeds_table_and_csv_show_the_count_of_seeds_off_the_mean():
    import csv
    import io

    from neft_jax.harness.reporting import results_csv

    results = _results(noise=(50.0, 9.0))
    results.settings["seeds"] = [0, 1, 2]
    evaluation = results.methods["noise"].evaluations[0.4]
    evaluation.not_converged, evaluation.seed_means = 1, [40.0, 55.0, 55.0]
    assert "50.00 ± 9.00 [2.00] (0.500) 1/3 off" in format_table(results)
    assert "Table III's not converged" in format_table(results)
    row, = csv.DictReader(io.StringIO(results_csv(results)))
    assert row["over"] == "seeds" and row["not_converged"] == "1"
    single, = csv.DictReader(io.StringIO(results_csv(_results(noise=(50.0, 9.0)))))
    assert single["over"] == "monte_carlo_runs" and single["not_converged"] == ""


def test_sweep_plot_error_bars_stay_between_0_and_100_percent():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neft_jax.harness.sweep_plots import _plot_mean_ci

    fig, ax = plt.subplots()
    _plot_mean_ci(ax, [{"sigma": 0.2, "mean": 5.0, "ci95": 20.0},
                       {"sigma": 0.4, "mean": 95.0, "ci95": 20.0}], "sigma", "noise")
    bars = ax.containers[0].lines[2][0].get_segments()
    assert [(seg[0][1], seg[1][1]) for seg in bars] == [(0.0, 25.0), (75.0, 100.0)]
    plt.close(fig)


def test_a_seeds_table_with_one_finite_seed_gives_no_interval():
    results = _results(noise=(50.0, 0.0))
    results.settings["seeds"] = [0, 1]
    evaluation = results.methods["noise"].evaluations[0.4]
    evaluation.summary["runs"], evaluation.not_converged = 1, 1  # the other seed diverged
    assert "50.00 (1 seed: no interval) (0.500) 1/2 off" in format_table(results)


def test_a_sweep_grid_makes_one_cell_per_distinct_alpha():
    from neft_jax.harness.sweeps import grid_cells

    cells = grid_cells(["vgg8"], ["mnist5k"], ["irs", "noise"], [0.4], [None, 0.01, 0.1, 0.1],
                       [0])  # 'default' is the authors' 1e-2 for VGG-8 IRS: listed twice
    assert [(c.method, c.alpha) for c in cells] == [("irs", None), ("irs", 0.1),
                                                    ("noise", None)]
    # The authors' α given as a number is the same folder as 'default' (a later sweep with
    # --alphas 0.01 trained it again, as alpha0.01, beside alphadefault)
    again = grid_cells(["vgg8"], ["mnist5k"], ["irs"], [0.4], [0.01, 0.1], [0])
    assert [c.name for c in again] == [cells[0].name, cells[1].name]


def test_one_value_gives_no_interval_and_no_win():
    """One Monte Carlo run (or one seed with a result) has no spread: its "± 0.0" is no
    interval, so the verdict claims no win and the fair-baseline line no outcome."""
    one = _results({"irs": [62.0], "noise_scaled": [61.9]}, irs=(62.0, 0.0),
                   noise_scaled=(61.9, 0.0))
    for entry in one.methods.values():
        entry.evaluations[0.4].summary["runs"] = 1
    text = verdict(one)
    assert "irs scores highest (62.0 %, one run: no interval), so no method is shown" in text
    assert "beats" not in text and "scores above" not in text
    assert "IRS is compared with noise_scaled (+0.1 points in one noise instance: no " \
        "interval)" in text


def _seeds_results(seed_means: dict, diverged: dict | None = None) -> RunResults:
    """An aggregate over seeds 0, 1, 2: method → each seed's mean (None: no result)."""
    import math

    from neft_jax.stats import summarize_over_seeds

    methods = {}
    for method, means in seed_means.items():
        means = [math.nan if m is None else m for m in means]
        summary, off = summarize_over_seeds(means, [0.5] * len(means))
        methods[method] = MethodResult(alpha=0.01 if method == "irs" else 0.0, evaluations={
            0.4: Evaluation(0.4, summary, seed_means=means, not_converged=off,
                            diverged_seeds=(diverged or {}).get(method, []))})
    return RunResults(settings={**SETTINGS, "seeds": [0, 1, 2], "model": "vgg8"},
                      methods=methods)


def test_over_seeds_the_fair_baseline_is_paired_by_seed_and_divergence_is_shown(tmp_path):
    """Over seeds, IRS − noise_scaled is taken seed by seed on the seeds both have; a method
    with one seed left is not called a winner; diverged seeds show in the table, the CSV and
    the plot's title names the seeds."""
    from neft_jax.harness.reporting import plot_accuracy_vs_sigma, result_rows

    results = _seeds_results({"noise_scaled": [60.0, 70.0, 80.0], "irs": [61.0, 71.2, 80.8],
                              "noise": [30.0, None, None]}, diverged={"noise": [1, 2]})
    text = format_table(results)
    assert ("IRS beats noise_scaled (+1.0 ± 0.5 points over the 3 seeds both have, paired by "
            "seed, Student-t)") in text
    noise_row = next(line for line in text.splitlines() if line.startswith("│ noise "))
    assert "(1 seed: no interval)" in noise_row and "2 diverged" in noise_row
    assert "noise (one seed: no interval) not compared" in text
    rows = {r["method"]: r for r in result_rows(results)}
    assert rows["noise"]["diverged"] is True and rows["noise"]["diverged_seeds"] == 2
    assert rows["irs"]["diverged"] is False and rows["irs"]["diverged_seeds"] == 0
    uneven = _seeds_results({"noise_scaled": [60.0, 70.0, None], "irs": [61.0, None, 80.5]})
    assert "IRS is compared with noise_scaled (+1.0 points in the one seed both have: no " \
        "interval)" in verdict(uneven)
    captured = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.set_title

    def spy(self, label, *args, **kwargs):
        captured["title"] = label
        return original(self, label, *args, **kwargs)

    matplotlib.axes.Axes.set_title = spy
    try:
        plot_accuracy_vs_sigma(results, str(tmp_path / "a.png"))
    finally:
        matplotlib.axes.Axes.set_title = original
    assert "3 seeds × 200 runs; bars: Student-t 95 % over seeds" in captured["title"]


def test_a_sweep_plot_of_one_seed_says_it_has_no_interval_over_seeds(tmp_path, monkeypatch):
    """One seed per cell: the panel's title says so, not "± 95 % CI over seeds"."""
    import matplotlib.axes

    from neft_jax.harness import sweep_plots

    titles = []
    original = matplotlib.axes.Axes.set_title

    def spy(self, text, *args, **kwargs):
        titles.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy)
    row = {"model": "vgg8", "dataset": "mnist5k", "method": "noise", "alpha": None,
           "sigma": 0.4, "eval_sigma": 0.4, "mean": 50.0, "ci95": None, "seeds": 1,
           "diverged": 0}
    sweep_plots.plot_sweep([row], str(tmp_path))
    assert "vgg8 / mnist5k\none seed (no interval over seeds)" in titles
    titles.clear()
    sweep_plots.plot_sweep([row, {**row, "sigma": 0.6, "eval_sigma": 0.6, "seeds": 3,
                                  "ci95": 2.0}], str(tmp_path))
    assert ("vgg8 / mnist5k\nmean ± Student-t 95 % CI over seeds; one-seed cells: "
            "no bar") in titles


def test_the_alpha_search_plot_needs_one_method_at_several_alphas(tmp_path):
    """IRS at one α and OVF at another is no α search: no alpha_search.png; IRS at two α
    is one."""
    from neft_jax.harness import sweep_plots

    row = {"model": "vgg8", "dataset": "mnist5k", "method": "irs", "alpha": 0.01,
           "sigma": 0.4, "eval_sigma": 0.4, "mean": 50.0, "ci95": None, "seeds": 1,
           "diverged": 0}
    sweep_plots.plot_sweep([row, {**row, "method": "ovf", "alpha": 0.001}], str(tmp_path))
    assert not (tmp_path / "alpha_search.png").exists()
    sweep_plots.plot_sweep([row, {**row, "alpha": 0.1}], str(tmp_path))
    assert (tmp_path / "alpha_search.png").exists()
