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
