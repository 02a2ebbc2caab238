"""The drop-in library (``neft_jax``'s core modules) never imports the paper harness, and the
installed package never imports a study (``experiments/``)."""

import ast
import pathlib

import neft_jax

CORE = sorted(p for p in pathlib.Path(neft_jax.__file__).parent.glob("*.py"))


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_modules_never_import_the_harness():
    assert len(CORE) >= 8  # device, perturb, models, conv, losses, train, evaluate, parallel
    for path in CORE:
        harness = sorted(n for n in _imports(path) if n.startswith("neft_jax.harness"))
        assert not harness, f"{path.name} imports {harness}"


def test_importing_the_library_loads_no_harness_module():
    import subprocess
    import sys

    code = ("import sys, neft_jax; "
            "print(sorted(m for m in sys.modules if m.startswith('neft_jax.harness')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


EXPERIMENTS = pathlib.Path(neft_jax.__file__).parents[1] / "experiments"


def _absolute_imports(path: pathlib.Path) -> set[str]:
    """The top-level names ``path`` imports absolutely (a relative import stays inside
    ``neft_jax``, even ``from .paper import x``)."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.add(node.module.split(".")[0])
    return tops


def test_the_installed_library_imports_no_study():
    """Studies (``experiments/<study>/`` packages and the ``experiments/*.py`` scripts) use
    the library; no module of ``neft_jax`` (core or harness) imports one of them."""
    studies = {p.parent.name for p in EXPERIMENTS.glob("*/__init__.py")}
    scripts = {p.stem for p in EXPERIMENTS.glob("*.py")}
    assert {"scaling", "paper"} <= studies  # experiments/scaling/, experiments/paper/
    package = pathlib.Path(neft_jax.__file__).parent
    for path in sorted(package.rglob("*.py")):
        found = sorted(_absolute_imports(path) & (studies | scripts | {"experiments"}))
        assert not found, f"{path.relative_to(package)} imports the study {found}"
    for moved in ("scaling.py", "reproduce.py", "plan.py", "paper_report.py"):
        assert not (package / "harness" / moved).exists(), moved


def test_the_paper_reproduction_is_outside_the_library():
    """The paper's published numbers, the reproduction plan and its report belong to the
    study in ``experiments/paper/``; the library keeps only the authors' hyper-parameters
    (:mod:`neft_jax.harness.paper`), which its configuration uses."""
    from neft_jax.harness import paper

    assert {"ALPHA_GRID", "AUTHORS_ALPHA", "DEFAULT_LR", "default_alpha"} <= set(vars(paper))
    package = pathlib.Path(neft_jax.__file__).parent
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        for name in ("PAPER_TABLE", "run_plan", "reproduce_main"):
            assert name not in text, f"{path.relative_to(package)} names {name}"
    study = EXPERIMENTS / "paper"
    assert {p.name for p in study.glob("*.py")} >= {"plan.py", "reproduce.py", "collect.py",
                                                   "report.py", "published.py", "cli.py"}
    assert (study / "README.md").exists()
