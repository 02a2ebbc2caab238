"""Output that says what it is (issue 36): one-line flag errors, method names in any case,
no lock file left in a finished folder, missing data refused before tuning, rounded
numbers and package versions in results.json, the worst Monte Carlo runs in the CSV.

Nothing here trains: the commands are stopped by their checks before the first step."""

import contextlib
import csv
import io
import json
import os
import sys

import numpy as np
import pytest

from neft_jax.harness import cli
from neft_jax.harness import locking as locking_lib
from neft_jax.harness.locking import LOCK_NAME, FolderBusy, FolderLock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
from paper import cli as paper_cli  # noqa: E402  (the studies, outside the library)
from scaling import cli as scaling_cli  # noqa: E402

PARSERS = [cli.run_parser, cli.sweep_parser, paper_cli.reproduce_parser, scaling_cli.scaling_parser]


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


@pytest.mark.parametrize("argv, says", [
    (["--alpha", "0.1", "--alpha-search"], "--alpha and --alpha-search exclude each other"),
    (["--alpha", "0.1", "--methods", "noise"], "--alpha: none of the methods "
     "(noise) has eq. (1)'s α; IRS and OVF do"),
    (["--alpha-search", "--methods", "noise"], "--alpha-search: none of the methods (noise)"),
    (["--drop-exit", "1", "--methods", "noise,ovf"], "--drop-exit: none of the methods "
     "(noise, ovf) has exits; IRS does"),
    (["--exit-sigma", "0.2", "--methods", "vanilla"], "--exit-sigma: none of the methods"),
    (["--equal-coefficients", "--methods", "noise"], "--equal-coefficients: none of the"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    (["--drop-exit", "9", "--methods", "irs"], "error: --drop-exit must be distinct exit "
     "numbers in 1..3"),  # the config's check, in the flag's words (it said drop_exits)
    (["--drop-exit", ""], "argument --drop-exit: empty: give at least one exit number"),
    (["--methods", " , "], "argument --methods: no method given"),
    (["--sweep", ""], "argument --sweep: empty: give at least one σ"),
    (["--seed-mode", "vmap"], "--seed-mode vmap: one seed has no seeds to vmap"),
    (["--seed", "1", "--seeds", "2", "--seed-mode", "sequential", "--mc-run", "4"],
     "unrecognized arguments: --mc-run 4"),  # flags are never taken by a prefix
])
def test_a_flag_that_no_method_would_use_is_refused_in_one_line(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.run_main([*argv, "--out", str(tmp_path / "run")])
    assert stop.value.code == 2 and says in _error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("one", ["sigma", "model", "dataset"])
def test_a_sweep_refuses_a_value_and_its_grid_list_together(one, tmp_path, capsys):
    value = {"sigma": "0.3", "model": "vgg8", "dataset": "mnist5k"}[one]
    with pytest.raises(SystemExit):
        cli.sweep_main([f"--{one}", value, f"--{one}s", value, "--out", str(tmp_path / "s")])
    assert f"--{one} and the grid's {one}s (--{one}s or --config) exclude" in _error_line(capsys)


@pytest.mark.parametrize("grid, argv, says", [
    ('seeds = "2"\n', [], "seeds must be a count (an integer >= 1) or a non-empty list"),
    ("seeds = 0\n", [], "seeds must be a count"),
    ("sigmas = [0.2]\n", ["--sigma", "0.3"], "--sigma and the grid's sigmas"),
    ("methods = [\"noise\"]\n", ["--equal-coefficients"], "--equal-coefficients: none of"),
    ("methods = [\"noise\"]\n", ["--alphas", "0.1"], "--alphas: none of the methods (noise)"),
    ('alphas = ["abc"]\nmethods = ["irs"]\n', [], "alphas: 'abc' is not an α"),
    ('seeds = ["a"]\n', [], "seeds: 'a' is not a seed (an integer >= 0)"),
    ("seeds = [1.5]\n", [], "seeds: 1.5 is not a seed"),
    ('seeds = ["inf"]\n', [], "seeds: 'inf' is not a seed"),
    ('sigmas = ["x"]\n', [], "sigmas: 'x' is not a number"),
    ('alphas = []\nmethods = ["irs", "noise"]\n', [], "alphas: empty list"),  # not noise alone
    ("sigmas = []\n", [], "sigmas: empty list"),
    ("datasets = []\n", [], "datasets: empty list"),
    ("methods = []\n", [], "no method given"),
    ("seeds = [0, 1]\n", ["--seed", "5"], "--seed and a list of seeds ([0, 1]) exclude"),
])
def test_a_sweep_grid_file_that_would_run_something_else_is_refused(grid, argv, says,
                                                                   tmp_path, capsys):
    (tmp_path / "grid.toml").write_text(grid)
    with pytest.raises(SystemExit):
        cli.sweep_main([*argv, "--config", str(tmp_path / "grid.toml"), "--out",
                        str(tmp_path / "s")])
    assert says in _error_line(capsys) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--sigmas", "--models", "--datasets", "--alphas"])
def test_an_empty_grid_flag_is_refused_not_taken_as_the_default(flag, tmp_path, capsys):
    """``--sigmas "$UNSET"`` must not sweep the default σ without a word."""
    with pytest.raises(SystemExit) as stop:
        cli.sweep_main([flag, "", "--out", str(tmp_path / "s")])
    assert stop.value.code == 2
    assert f"argument {flag}: empty: give at least one" in _error_line(capsys)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content, says", [
    ("null", "must hold a table of grid keys (models, datasets, methods, sigmas, alphas, "
     "seeds), not a NoneType"),
    ('["sigmas"]', "not a list"),
    ("42", "not a int"),
    ("sigmas = [", "neither JSON"),
])
def test_a_sweep_config_file_that_is_no_table_of_grid_keys_is_one_line(content, says,
                                                                       tmp_path, capsys):
    (tmp_path / "grid.cfg").write_text(content)
    with pytest.raises(SystemExit):
        cli.sweep_main(["--config", str(tmp_path / "grid.cfg"), "--out", str(tmp_path / "s")])
    assert says in _error_line(capsys) and not (tmp_path / "s").exists()


def test_sigmas_that_would_share_a_cell_folder_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.sweep_main(["--methods", "noise", "--sigmas", "0.4,0.4000001", "--out",
                        str(tmp_path / "s")])
    assert "would share the folder vgg8-mnist5k-noise-sigma0.4-alphanone-seed0" in \
        _error_line(capsys)


def test_resume_without_out_is_refused_and_a_stop_names_the_folder(tmp_path, capsys):
    """A run started without --out gets a new folder; its stop hint must name it, and
    --resume without --out (which would make yet another folder) is refused."""
    with pytest.raises(SystemExit):
        cli.run_main(["--resume"])
    assert "--resume needs --out" in _error_line(capsys)
    assert cli.run_hint(str(tmp_path / "r")).endswith(
        f"rerun the same command with --resume --out {tmp_path / 'r'} to continue")


def test_run_py_refuses_a_sweeps_folder_even_with_overwrite(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "cells").mkdir(parents=True)
    (sweep / "accuracy_vs_sigma.png").write_bytes(b"png")
    assert cli.run_main(["--overwrite", "--out", str(sweep)]) == 2
    assert "holds a sweep (cells/, sweep.json), not a run" in capsys.readouterr().err
    assert (sweep / "accuracy_vs_sigma.png").exists()


def test_a_config_file_of_another_extension_is_read_as_json_or_toml(tmp_path):
    from neft_jax.harness.flags import read_grid_file

    (tmp_path / "a.cfg").write_text("sigmas = [0.2]\n")
    (tmp_path / "b.cfg").write_text('{"sigmas": [0.3]}')
    assert read_grid_file(str(tmp_path / "a.cfg")) == {"sigmas": [0.2]}
    assert read_grid_file(str(tmp_path / "b.cfg")) == {"sigmas": [0.3]}


def test_reproduce_takes_one_of_its_only_modes(capsys):
    with pytest.raises(SystemExit):
        paper_cli.reproduce_parser().parse_args(["--check-only", "--report-only"])
    assert "not allowed with argument --check-only" in _error_line(capsys)


# --- item 2: method names in any case, and the nearest name for a typo ---------------------


def test_methods_are_case_insensitive():
    from neft_jax.harness.flags import config_from_args, method_names

    args = cli.run_parser().parse_args(["--methods", "IRS,OVF", "--out", "unused"])
    assert args.methods == ("irs", "ovf")
    assert config_from_args(args, "cpu")[0].methods == ("irs", "ovf")
    assert method_names(["Noise", " vanilla "]) == ("noise", "vanilla")  # a --config list


@pytest.mark.parametrize("make_parser",
                         [cli.run_parser, cli.sweep_parser, scaling_cli.scaling_parser])
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


# --- item 3: a released lock leaves no lock file, and a folder it made empty goes ----------


def test_a_released_lock_deletes_its_file_and_the_empty_folder_it_made(tmp_path):
    made = tmp_path / "new" / "run"
    lock = FolderLock(str(made))
    assert (made / LOCK_NAME).exists()
    lock.release()
    assert not made.exists() and (tmp_path / "new").exists()

    kept = tmp_path / "kept"
    kept.mkdir()
    with FolderLock(str(kept)):  # an existing (empty) folder is not this lock's to delete
        pass
    assert kept.exists() and os.listdir(kept) == []
    with FolderLock(str(made)):
        (made / "results.json").write_text("{}")
    assert os.listdir(made) == ["results.json"]  # made here, but results are kept
    FolderLock(str(made)).release()  # free again; deleting the file twice is harmless


def test_a_lock_file_deleted_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch):
    """The holder releases (deletes the lock file) after the next writer opened it and
    before that writer locks it: the writer locks a file no longer at the path, sees it,
    and locks the new one, so a third writer is still refused."""
    folder = tmp_path / "run"
    folder.mkdir()
    holder = FolderLock(str(folder))
    flock = locking_lib.fcntl.flock
    raced = []

    def flock_after_the_holder_released(fd, operation):
        if operation & locking_lib.fcntl.LOCK_EX and not raced:
            raced.append(os.fstat(fd).st_ino)
            holder.release()
        return flock(fd, operation)

    monkeypatch.setattr(locking_lib.fcntl, "flock", flock_after_the_holder_released)
    writer = FolderLock(str(folder))
    assert raced  # the race happened
    at_path = os.stat(folder / LOCK_NAME)
    assert os.fstat(writer._fd).st_ino == at_path.st_ino
    with pytest.raises(FolderBusy, match="in use by pid"):
        FolderLock(str(folder))
    writer.release()
    assert os.listdir(folder) == []


def test_a_run_folder_keeps_no_lock_file_after_the_run(tmp_path):
    from neft_jax.harness.config import ExperimentConfig
    from neft_jax.harness.orchestration import prepare_out_dir

    cfg = ExperimentConfig(methods=("noise",), epochs=1, out=str(tmp_path / "r"))
    with contextlib.ExitStack() as locks:
        prepare_out_dir(cfg, locks)
        assert (tmp_path / "r" / LOCK_NAME).exists()
    assert os.listdir(tmp_path / "r") == ["settings.json"]


# --- item 4: missing data stops every command before tuning, leaving no folder -------------


TINY = ["--epochs", "1", "--width", "0.0625"]


@pytest.mark.parametrize("main, extra", [
    (cli.run_main, TINY), (cli.run_main, [*TINY, "--seeds", "2"]), (cli.sweep_main, TINY),
    (paper_cli.reproduce_main, [*TINY, "--stages", "table2"]),
    (scaling_cli.scaling_main, ["--points", "0.0625:1"]),
])
def test_missing_data_stops_before_tuning_and_leaves_no_folder(main, extra, tmp_path, capsys,
                                                               monkeypatch):
    from neft_jax.harness import orchestration, seeds

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuning started")

    monkeypatch.setattr(orchestration, "with_tuned_micro_batch", no_tuning)
    monkeypatch.setattr(seeds, "with_tuned_micro_batch", no_tuning)
    out = tmp_path / "out"
    code = main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"), "--out", str(out),
                 "--no-progress", *extra])
    assert code == 2
    printed = []
    line = _error_line(capsys, printed)
    assert "error: Dataset 'cifar10' is not prepared" in line and "--data-dir" in line
    assert "tuning: timing" not in printed[0]  # nor did the tuner log
    assert not out.exists()


# --- item 5: rounded numbers and package versions in results.json --------------------------


def test_results_json_rounds_measured_numbers_but_not_settings_or_alpha(tmp_path):
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults, rounded

    settings = {"eval_sigmas": [0.4], "lr": 0.00123456789, "alpha": 0.00123456789}
    evaluation = Evaluation(0.4, {"mean": 94.19999999999999, "runs": 2, "ekl": 0.0123456789},
                            accuracies=[94.19999999999999, 94.2], eval_seconds=1.234567891)
    results = RunResults(settings=settings, wall_seconds=12.3456789, methods={
        "irs": MethodResult(alpha=0.00123456789, evaluations={0.4: evaluation},
                            history=[{"epoch": 1, "loss": 2.302585093, "feedback_ratio": 1e-9}]),
        "ovf": MethodResult(alpha=1e-9)})
    results.save(str(tmp_path / "results.json"))
    text = (tmp_path / "results.json").read_text()
    assert "94.19999" not in text
    saved = json.loads(text)
    irs = saved["methods"]["irs"]
    assert irs["evaluations"]["0.4"]["accuracies"] == [94.2, 94.2]
    assert irs["evaluations"]["0.4"]["summary"] == {"mean": 94.2, "runs": 2, "ekl": 0.0123457}
    assert irs["history"] == [{"epoch": 1, "loss": 2.30259, "feedback_ratio": 1e-9}]
    assert irs["alpha"] == 0.00123456789 and saved["methods"]["ovf"]["alpha"] == 1e-9
    assert saved["settings"] == settings and saved["wall_seconds"] == 12.3457
    assert RunResults.load(str(tmp_path / "results.json")).methods["irs"].at(0.4).mean == 94.2
    assert rounded([float("nan"), True, 3, None, "x"])[1:] == [True, 3, None, "x"]
    assert np.isnan(rounded(float("nan")))


def test_results_json_names_the_package_versions():
    from importlib import metadata

    import jax

    from neft_jax.harness.runtime import environment

    packages = environment()["packages"]
    assert list(packages) == ["neft_jax", "jax", "jaxlib", "flax", "optax"]
    assert packages["jax"] == jax.__version__ and packages["flax"] == metadata.version("flax")
    assert packages["neft_jax"]


def test_results_json_names_the_code_commit_and_whether_it_was_edited():
    import subprocess

    import neft_jax
    from neft_jax.harness.runtime import environment

    source = os.path.dirname(neft_jax.__file__)
    head = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    code = environment()["code"]
    if head.returncode != 0:  # not a git checkout: nothing to name
        assert code is None
        return
    assert code["commit"] == head.stdout.strip() and isinstance(code["dirty"], bool)


# --- item 6: the worst Monte Carlo runs (1 % and 5 % quantiles, min) in the CSV/JSON -------


def test_result_csv_and_sweep_json_carry_the_quantiles_and_min(tmp_path):
    from neft_jax.harness.reporting import results_csv
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults
    from neft_jax.harness.sweeps import Cell, collect_rows
    from neft_jax.stats import summarize

    accuracies = list(np.random.default_rng(0).uniform(40.0, 90.0, 200).round(1))
    evaluation = Evaluation(0.4, summarize(accuracies, ekl=0.5), accuracies=accuracies)
    results = RunResults(settings={"eval_sigmas": [0.4], "normalisation": "level"},
                         methods={"noise": MethodResult(alpha=0.0, evaluations={0.4: evaluation})},
                         environment={"code": {"commit": "0123456789ab", "dirty": True},
                                      "backend": "cpu", "cpu_model": "CPU X",
                                      "date": "2026-12-07T18:00:00+00:00"})
    row, = csv.DictReader(io.StringIO(results_csv(results)))
    expected = {"q01": np.quantile(accuracies, 0.01), "q05": np.quantile(accuracies, 0.05),
                "min": min(accuracies)}
    for name, value in expected.items():
        assert float(row[name]) == pytest.approx(value, rel=1e-5)  # 6 significant digits
    assert float(row["min"]) <= float(row["q01"]) <= float(row["q05"]) <= float(row["mean"])

    cell = Cell("vgg8", "mnist5k", "noise", 0.4, None, 0)
    folder = tmp_path / "cells" / cell.name
    folder.mkdir(parents=True)
    results.save(str(folder / "results.json"))
    cell_row, = collect_rows([cell], str(tmp_path))
    for name, value in expected.items():
        assert cell_row[name] == pytest.approx(value, rel=1e-5)
    # each cell says how it was made: noise definition, code, machine, day
    assert {k: cell_row[k] for k in ("normalisation", "code", "machine", "date")} == {
        "normalisation": "level", "code": "0123456+dirty", "machine": "CPU X",
        "date": "2026-12-07"}


def test_a_sweep_lists_each_cell_once_and_keeps_out_of_other_commands_folders(tmp_path,
                                                                             capsys):
    """A σ or seed listed twice made one training count as two seeds (CI 0); a run.py
    folder or a folder of one's own files got a sweep's plots and cells written into it."""
    from neft_jax.harness.flags import grid_values, seed_value

    assert grid_values("sigmas", "0.4,0.2,0.4", float, "a number") == [0.4, 0.2]
    assert grid_values("seeds", [0, 0, 3], seed_value, "a seed") == [0, 3]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        cli.sweep_main(["--out", str(run)])
    assert stop.value.code == 2
    err = _error_line(capsys)
    assert "holds what a sweep does not write (results.json)" in err
    assert sorted(os.listdir(run)) == ["results.json"]


def test_the_devices_line_says_when_the_batch_keeps_training_on_one_device(monkeypatch):
    """With 4 devices and batch 130 training ran on one device under a line that said
    'data-parallel training'."""
    import jax

    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert "data-parallel training" in cli.devices_line(128)
    line = cli.devices_line(130)
    assert "data-parallel" not in line and "TRAINING ON ONE DEVICE: batch 130 is not a " \
        "multiple of 4, --batch-size 128 or 132 trains on all" in line
    line = cli.devices_line(128, vmapped_seeds=True)  # one program on one device
    assert "data-parallel" not in line and "TRAINING ON ONE DEVICE: the vmapped seeds" in line
    monkeypatch.setattr(jax, "local_device_count", lambda: 8)
    assert cli.devices_line(4).endswith("--batch-size 8 trains on all)")
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert cli.devices_line(130).startswith("devices: 1 × ")
