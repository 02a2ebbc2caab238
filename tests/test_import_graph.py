"""The modules of ``neft_jax`` import one another without a circle, and stay short.

Every import counts, at module level or inside a function: a function-level import
that closes a circle works only as long as nobody moves it to the top of the file.
"""

import ast
import pathlib

import neft_jax

PACKAGE = pathlib.Path(neft_jax.__file__).parent
#: Modules allowed over :data:`MAX_LINES`: path -> (lines now, why). A module here fails
#: the test when it grows; one that shrinks under the limit must leave the table.
ALLOWED_OVER_400: dict[str, tuple[int, str]] = {}
MAX_LINES = 400


def module_names() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module under ``neft_jax/`` (packages by ``__init__``)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: pathlib.Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``path``) imports, anywhere in the file.

    ``from package import x`` imports the submodule ``package.x`` when there is one, else
    the package itself (its ``__init__``)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imported_modules(name, path, set(names)) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "neft_jax.evaluate" in graph["neft_jax"]  # __init__: from neft_jax import evaluate
    assert "neft_jax.harness.runtime" in graph["neft_jax.harness.tuning"]  # module level
    assert "neft_jax.harness.sweeps" in graph["neft_jax.harness.cli"]  # inside worker_spec


def test_find_cycle_reports_the_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_over_400_lines():
    too_long, grew, stale = [], [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        allowed = ALLOWED_OVER_400.get(rel)
        if allowed is None and lines > MAX_LINES:
            too_long.append(f"{rel}: {lines}")
        elif allowed is not None and lines > allowed[0]:
            grew.append(f"{rel}: {lines} > {allowed[0]}")
        elif allowed is not None and lines <= MAX_LINES:
            stale.append(f"{rel}: {lines} (take it out of ALLOWED_OVER_400)")
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    assert not grew, f"modules over {MAX_LINES} lines that grew: {grew}"
    assert not stale, f"modules back under {MAX_LINES} lines: {stale}"
    assert set(ALLOWED_OVER_400) <= {p.relative_to(PACKAGE).as_posix()
                                     for p in PACKAGE.rglob("*.py")}


def test_runtime_imports_no_other_harness_module():
    """Process and machine concerns sit under the rest of the harness: any module may use
    them without closing a circle."""
    harness = {m for m in import_graph()["neft_jax.harness.runtime"]
               if m.startswith("neft_jax.harness")}
    assert not harness, harness


def test_the_studies_keep_their_modules_short():
    """The paper reproduction and the scaling study left the library (``experiments/paper/``,
    ``experiments/scaling/``) in modules under the same limit."""
    for name in ("paper", "scaling"):
        study = PACKAGE.parent / "experiments" / name
        lines = {p.name: len(p.read_text().splitlines()) for p in study.glob("*.py")}
        assert "report.py" in lines, (name, lines)
        assert all(n <= MAX_LINES for n in lines.values()), (name, lines)
