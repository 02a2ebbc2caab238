"""README's Python blocks run as they stand, in order, in one namespace."""

import pathlib
import re
import warnings

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
