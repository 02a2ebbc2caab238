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


def test_the_installed_library_imports_no_study():
    """Studies (``experiments/<study>/`` packages and the ``experiments/*.py`` scripts) use
    the library; no module of ``neft_jax`` (core or harness) imports one of them."""
    studies = {p.parent.name for p in EXPERIMENTS.glob("*/__init__.py")}
    scripts = {p.stem for p in EXPERIMENTS.glob("*.py")}
    assert "scaling" in studies  # experiments/scaling/, the scaling study
    package = pathlib.Path(neft_jax.__file__).parent
    for path in sorted(package.rglob("*.py")):
        top = {name.split(".")[0] for name in _imports(path)}
        found = sorted(top & (studies | scripts | {"experiments"}))
        assert not found, f"{path.relative_to(package)} imports the study {found}"
    assert not (package / "harness" / "scaling.py").exists()
