"""README's and docs/usage.md's code blocks: the Python blocks run as they stand, in order,
in one namespace; every command of the bash blocks is accepted as written (the trainings
they start take minutes to hours, so their flags are parsed and turned into the run's
settings, not run; the runs themselves are tested elsewhere with tiny settings)."""

import pathlib
import re
import shlex
import subprocess
import sys
import warnings

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. perturb selecting no weight
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.accuracies.shape == (20,)
    assert namespace["scored"].accuracies.shape == (20,)  # the own-model training example
    assert namespace["logits"].shape == (64, 10)


def test_usage_python_blocks_run():
    """docs/usage.md's Python blocks (your own model: NNX training, a plain function) run
    as they stand, in order, in one namespace."""
    usage = README.parent / "docs" / "usage.md"
    blocks = re.findall(r"```python\n(.*?)```", usage.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for block in blocks:
            exec(compile(block, str(usage), "exec"), namespace)
    assert namespace["nnx_result"].accuracies.shape == (20,)
    assert namespace["result"].accuracies.shape == (20,)


def test_layout_table_names_every_module():
    """README's Layout table lists each module of the package under its real file name."""
    text = README.read_text()
    table = text[text.index("| module | what it holds |"):text.index("Tests mirror this:")]
    named = set(re.findall(r"`(?:neft_jax/|harness/)?(\w+\.py)`", table))
    package = README.parent / "neft_jax"
    modules = {p.name for p in package.glob("*.py")} | {p.name for p in
                                                         package.glob("harness/*.py")}
    assert modules - {"__init__.py"} <= named, sorted(modules - named - {"__init__.py"})
    assert named <= modules, sorted(named - modules)


def test_ci_runs_readme_test_command():
    """.ci/run runs README's test command (with -q added), so CI tests what users run."""
    install_then_test = r"```bash\n(python3 -m pip install -e '\.\[dev\]' && python3 -m pytest.*)"
    readme = re.search(install_then_test, README.read_text()).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert readme.replace("python3 -m pytest", "python3 -m pytest -q") in ci.splitlines()


DOCUMENTED = (README, README.parent / "docs" / "usage.md")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file name, words) of every command in the ```bash blocks of README and usage.md:
    continuation lines joined, comments and leading ``VAR=value`` settings dropped, ``&&``
    chains split."""
    commands = []
    for path in DOCUMENTED:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True) + ["&&"]
                while "&&" in words:
                    part, words = words[:words.index("&&")], words[words.index("&&") + 1:]
                    while part and re.fullmatch(r"[A-Z_]+=\S*", part[0]):
                        part = part[1:]
                    if part:
                        commands.append((path.name, part))
    return commands


def _accepts(parser, argv: list[str]):
    """``parser``'s arguments of ``argv``; a refused flag fails the test naming it."""
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{parser.prog} refuses the documented {' '.join(argv)!r}")


def test_every_documented_command_is_accepted(monkeypatch, capsys, tmp_path):
    """Each command a reader copies from README or usage.md names a file that exists and
    flags its command accepts, with values that make valid settings."""
    from neft_jax.harness import cli
    from neft_jax.harness.flags import config_from_args

    monkeypatch.syspath_prepend(str(README.parent / "experiments"))
    import gpu_paper_keep
    import noise_definition
    from paper.cli import reproduce_parser
    from scaling.cli import scaling_parser
    from scaling.study import parse_points, study_points

    def settings(parser, argv):
        return config_from_args(_accepts(parser, argv), "cpu")

    def vanilla_cells(argv):
        args = _accepts(noise_definition.noise_definition_parser(), argv)
        return noise_definition.parse_cells(args.cells, args.seeds)

    studies = {
        "experiments/run.py": lambda argv: settings(cli.run_parser(), argv),
        "experiments/sweep.py": lambda argv: settings(cli.sweep_parser(), argv),
        "experiments/reproduce.py": lambda argv: settings(reproduce_parser(), argv),
        "experiments/scaling.py": lambda argv: study_points(parse_points(
            _accepts(scaling_parser(), argv).points)),
        "experiments/noise_definition.py": vanilla_cells,
        # its runs: tests/harness/test_gpu_paper_script.py
        "experiments/gpu_paper_keep.py": lambda argv: _accepts(gpu_paper_keep.keep_parser(),
                                                               argv),
    }
    commands = documented_commands()
    seen, done = set(), set()
    for where, words in commands:
        if tuple(words) in done:  # the same command twice (usage.md's GPU sections)
            continue
        done.add(tuple(words))
        if words[:2] == ["python3", "-m"] and words[2] in ("pip", "pytest"):
            # pip install -e . (or '.[dev]'); the test command is CI's, tested above
            assert words[2] == "pytest" or words[3:5] == ["install", "-e"], (where, words)
            seen.add(words[2])
        elif words[:3] == ["python3", "-m", "neft_jax.harness.mnist5k"]:
            assert len(words) == 4, (where, words)  # one folder: run it, into a new one
            folder = tmp_path / f"digits{len(seen)}"
            folder.mkdir()
            subprocess.run([sys.executable, *words[1:3], str(folder)], check=True,
                           capture_output=True)
            assert (folder / "mnist5k.npz").is_file()
            seen.add(words[2])
        elif words[0] == "bash":  # the script's runs: tests/harness/test_gpu_paper_script.py
            script = README.parent / words[1]
            assert script.is_file(), (where, words)
            subprocess.run(["bash", "-n", str(script)], check=True)
            seen.add(words[1])
        else:
            assert words[0] == "python3" and words[1] in studies, (where, words)
            studies[words[1]](words[2:])
            seen.add(words[1])
    capsys.readouterr()
    assert seen >= {"pip", "pytest", "experiments/run.py", "experiments/sweep.py",
                    "experiments/reproduce.py", "experiments/scaling.py",
                    "experiments/noise_definition.py", "neft_jax.harness.mnist5k",
                    "experiments/gpu_paper.sh", "experiments/gpu_paper_keep.py"}, seen
    assert len(commands) >= 20
