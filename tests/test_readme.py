"""README's Python blocks run as they stand, in order, in one namespace."""

import pathlib
import re
import warnings

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. perturb selecting no weight
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.accuracies.shape == (20,)
    assert namespace["logits"].shape == (64, 10)


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
