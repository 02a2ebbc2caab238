"""Output that says what it is (issue 36): one-line flag errors, method names in any case.

Nothing here trains: the commands are stopped by their checks before the first step."""

import sys

import pytest

from neft_jax.harness import cli

PARSERS = [cli.run_parser, cli.sweep_parser, cli.reproduce_parser, cli.scaling_parser]


def _error_line(capsys, printed=None) -> str:
    """The one line on stderr (``printed`` gets what went to stdout)."""
    captured = capsys.readouterr()
    if printed is not None:
        printed.append(captured.out)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# --- item 1: a bad flag is one line; the usage block only with --help ---------------------


@pytest.mark.parametrize("make_parser", PARSERS)
@pytest.mark.parametrize("argv, says", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--mc-runs", "0"], "argument --mc-runs: must be an integer > 0, got '0'"),
])
def test_every_command_reports_a_bad_flag_in_one_line(make_parser, argv, says, capsys):
    parser = make_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(argv)
    assert stop.value.code == 2
    line = _error_line(capsys)
    assert line == f"{parser.prog}: error: {says} (see --help)"
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_the_error_line_names_the_command_as_typed(monkeypatch, capsys):
    for typed, prog in (("/repo/experiments/run.py", "run.py"), ("/usr/bin/neft-run", "neft-run"),
                        ("/usr/bin/pytest", "neft-run")):
        monkeypatch.setattr(sys, "argv", [typed])
        assert cli.run_parser().prog == prog
    monkeypatch.setattr(sys, "argv", ["experiments/sweep.py"])
    with pytest.raises(SystemExit):
        cli.sweep_main(["--sigmas", "x"])
    assert _error_line(capsys).startswith("sweep.py: error: argument --sigmas: ")


# --- item 2: method names in any case, and the nearest name for a typo ---------------------


def test_methods_are_case_insensitive():
    from neft_jax.harness.flags import config_from_args, method_names

    args = cli.run_parser().parse_args(["--methods", "IRS,OVF", "--out", "unused"])
    assert args.methods == ("irs", "ovf")
    assert config_from_args(args, "cpu")[0].methods == ("irs", "ovf")
    assert method_names(["Noise", " vanilla "]) == ("noise", "vanilla")  # a --config list


@pytest.mark.parametrize("make_parser", [cli.run_parser, cli.sweep_parser, cli.scaling_parser])
def test_an_unknown_method_is_one_line_with_the_nearest_name(make_parser, capsys):
    parser = make_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--methods", "noise,irss"])
    assert stop.value.code == 2
    line = _error_line(capsys)
    assert "unknown method 'irss'; did you mean 'irs'?" in line
    assert "vanilla, noise, noise_scaled, irs, ovf" in line


def test_a_sweep_config_file_with_a_typo_in_methods_is_one_line(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["Noise", "OVFF"]\n')
    with pytest.raises(SystemExit) as stop:
        cli.sweep_main(["--config", str(grid), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "unknown method 'OVFF'; did you mean 'ovf'?" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_the_library_and_the_config_name_the_nearest_method():
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.train import validate_method

    with pytest.raises(ValueError, match="unknown method 'nois'; did you mean 'noise'"):
        validate_method("nois")
    with pytest.raises(ValueError, match="methods: unknown method 'IRS'; did you mean 'irs'"):
        ExperimentConfig(methods=("IRS",))
    with pytest.raises(ValueError, match=r"unknown method 'dropout' \(allowed"):
        validate_method("dropout")  # nothing close: no suggestion
