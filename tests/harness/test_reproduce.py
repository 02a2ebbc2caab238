"""The one-command reproduction: stages resume, Table III reuses Table II's runs, report."""

import json
import os

import pytest

from neft_jax.harness import cli as reproduce_cli
from neft_jax.harness.reproduce import Plan

TINY = ["--epochs", "1", "--max-train-steps", "2", "--batch-size", "32", "--width", "0.0625",
        "--mc-runs", "3", "--val-mc-runs", "1", "--no-progress"]


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
        assert table3["seeds"] == 2 and table3["not_converged"] in (0, 1, 2)
    text = (out / "REPORT.md").read_text()
    assert "### Table III" in text and " of 2 |" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # A second launch finds everything done and trains nothing.
    assert reproduce_cli.reproduce_main(args) == 0
    assert "training" not in capsys.readouterr().out
    # The report can be rebuilt alone.
    os.remove(out / "REPORT.md")
    assert reproduce_cli.reproduce_main(args + ["--report-only"]) == 0
    assert (out / "REPORT.md").read_text() == text
    # At the paper's four σ the report puts the paper's rows beside ours, bounds marked.
    assert reproduce_cli.reproduce_main(TINY + ["--stages", "table2", "--seeds", "1",
                                                "--out", str(out), "--report-only"]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| noise (paper) | 99.35 | 97.77 | ≤89.56 | ≤13.71 |" in text
    assert "| irs (paper) | 99.53 | 99.3 | 96.9 | 70.31 |" in text


@pytest.mark.parametrize("change", [{"stages": ("table9",)}, {"models": ("vgg11",)},
                                    {"seeds": 0}, {"table3_seeds": True}])
def test_plan_rejects_bad_values(change):
    with pytest.raises(ValueError):
        Plan(**change)


def test_bad_stage_flag_exits_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_cli.reproduce_main(TINY + ["--stages", "table9", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "stages must be names from" in capsys.readouterr().err


def test_ovf_stage_runs_resnet18_at_every_table2_sigma(tmp_path):
    out = tmp_path / "repro"
    args = TINY + ["--models", "resnet18", "--stages", "ovf", "--sigmas", "0.2,0.6",
                   "--seeds", "1", "--backward-micro-batch", "0",  # compiles in half the time
                   "--out", str(out)]
    assert reproduce_cli.reproduce_main(args) == 0
    ovf = json.loads((out / "report.json").read_text())["resnet18"]["table2"]["ovf"]
    assert sorted(ovf) == ["0.2", "0.6"]
    assert all(cell["seeds"] == 1 and 0 <= cell["mean"] <= 100 for cell in ovf.values())
    assert "| ovf (ours) |" in (out / "REPORT.md").read_text()
