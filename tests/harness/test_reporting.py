"""The printed table: legend, clean accuracy, chance level and the verdict line."""

from neft_jax.harness.reporting import format_table, verdict
from neft_jax.harness.results import Evaluation, MethodResult, RunResults

SETTINGS = {"sigma": 0.4, "eval_sigmas": [0.4], "mc_runs": 200, "dataset": "mnist5k",
            "width": 0.125, "epochs": 12, "normalisation": "range"}


def _results(**means_and_cis):
    methods = {m: MethodResult(alpha=0.01 if m == "irs" else 0.0, clean_accuracy=95.0,
                               evaluations={0.4: Evaluation(0.4, {"mean": mean, "ci95": ci,
                                                                  "std": 2.0, "ekl": 0.5})})
               for m, (mean, ci) in means_and_cis.items()}
    return RunResults(settings=dict(SETTINGS), methods=methods)


def test_all_methods_at_chance_say_the_model_learned_nothing_and_what_to_change():
    text = verdict(_results(vanilla=(10.3, 0.3), noise=(10.3, 0.3), irs=(10.1, 0.3),
                            ovf=(10.25, 0.3)))
    assert "learned nothing" in text and "chance (10 %)" in text
    assert "width ×0.125" in text and "12 epochs" in text
    assert "--width" in text and "--epochs" in text and "--sigma" in text


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

    from neft_jax.harness.orchestration import environment
    from neft_jax.harness.reporting import results_csv
    from neft_jax.harness.sweeps import aggregate_over_seeds

    rows = list(csv.DictReader(io.StringIO(results_csv(_results(noise=(16.0 - 2e-15, 1.0),
                                                                irs=(70.0, 2.0))))))
    alpha = {r["method"]: r["alpha"] for r in rows}
    assert alpha == {"noise": "", "irs": "0.01"}  # α only where the method has one
    assert {r["mean"] for r in rows} == {"16.0", "70.0"}  # rounded for reading
    one_seed = aggregate_over_seeds([{"model": "vgg8", "dataset": "mnist5k", "method": "noise",
                                      "sigma": 0.4, "alpha": None, "eval_sigma": 0.4,
                                      "mean": 50.0, "ci95": 1.0, "std": 7.0, "ekl": 0.5,
                                      "runs": 200, "seed": 0, "diverged": False}])
    assert one_seed[0]["ci95"] is None and one_seed[0]["std_over_seeds"] is None
    assert environment()["cpu_model"].strip()  # the CPU model is recorded


def test_sweep_rejects_flags_it_does_not_use(capsys):
    import pytest

    from neft_jax.harness import cli

    for flag in (["--resume"], ["--overwrite"], ["--seed-mode", "vmap"], ["--alpha-search"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.sweep_main([*flag, "--out", "unused"])
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
