"""``experiments/noise_definition.py`` (which σ the paper means): its command line refuses
what it cannot run in one line, before anything trains or a folder is made."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
import noise_definition  # noqa: E402


@pytest.mark.parametrize("flags, says", [
    (["--out", "{tmp}/file"], "is a file"),
    (["--cells", "vgg8:x:10"], "is not MODEL:WIDTH:EPOCHS"),
    (["--cells", "alexnet:1:10"], "model 'alexnet' is not one of"),
    (["--cells", "vgg8:0:10"], "width must be"),
    (["--seeds", "-1"], "argument --seeds: must be an integer >= 0"),
    (["--mc-runs", "0"], "argument --mc-runs: must be an integer > 0"),
    (["--sigmas", "abc"], "argument --sigmas: expected a number"),
    (["--sigmas", "0.3,0.4"], "has σ = 0.2, 0.4, 0.6, 0.8 only; got 0.3"),
    (["--report-only", "--out", "{tmp}/none"], "--report-only: no study in"),
])
def test_bad_input_is_one_line_and_nothing_is_made(tmp_path, capsys, flags, says):
    """Each of these was a traceback before 2026-12-07 (and --out naming a file left a
    half-made study)."""
    (tmp_path / "file").write_text("")
    args = [f.format(tmp=tmp_path) for f in flags]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "study")]
    with pytest.raises(SystemExit) as exit_info:
        noise_definition.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and says in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_cells_are_model_width_epochs_times_seeds_in_any_case():
    cells = noise_definition.parse_cells("VGG8:1:10,resnet18:0.25:12", [0, 1])
    assert [c.name for c in cells] == ["vgg8-w1-e10-seed0", "vgg8-w1-e10-seed1",
                                       "resnet18-w0.25-e12-seed0", "resnet18-w0.25-e12-seed1"]


def test_the_report_of_some_of_the_papers_sigmas_names_each_cells_machine(tmp_path):
    """A study at σ = 0.2, 0.4 only: the RMS is over those two (it was a KeyError), and
    each cell's machine and date are named, not the first cell's for all."""
    import json

    for seed, machine, date in ((0, "CPU A", "2026-01-01"), (1, "GPU B", "2026-03-01")):
        folder = tmp_path / f"vgg8-w1-e10-seed{seed}"
        folder.mkdir()
        rows = {d: {"0": {"summary": {"mean": 95.0}},
                    **{f"{s:g}": {"summary": {"mean": m, "ci95": 1.0}}
                       for s, m in ((0.2, 90.0), (0.4, 60.0))}}
                for d in ("range", "level")}
        (folder / "cell.json").write_text(json.dumps({
            "cell": {"model": "vgg8", "width": 1.0, "epochs": 10, "seed": seed},
            "mc_runs": 10, "clean_test_accuracy": 95.0, "evaluations": rows,
            "machine": machine, "date": date}))
    text = noise_definition.report(str(tmp_path), (0.2, 0.4))
    rms = ((90.0 - 98.8) ** 2 + (60.0 - 63.54) ** 2) / 2
    assert f"| {rms ** 0.5:.1f} |" in text and "over σ = 0.2, 0.4." in text
    assert "Machine and date: CPU A, 2026-01-01; GPU B, 2026-03-01;" in text
    # Only the cells --cells and --seeds name are tabled; the others, and a cell not
    # scored at every σ of the report, are named in one line.
    text = noise_definition.report(str(tmp_path), (0.2, 0.4),
                                   noise_definition.parse_cells("vgg8:1:10", [0]))
    assert "seed 0" in text and "seed 1" not in text
    assert "Not tabled: 1 more finished cell in this folder" in text
    assert " of 1 cells (mean RMS" in text  # the verdict over the tabled cell only
    text = noise_definition.report(str(tmp_path), (0.2, 0.6))
    assert "(not scored at every σ)" in text and "Closer to" not in text
