"""tests/slow_tests.txt, the list behind ``pytest -m "not slow"``, names real tests."""

import ast
import pathlib

from conftest import SLOW_TEST_IDS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _test_functions(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_slow_id_names_a_test_function_in_its_file():
    assert len(SLOW_TEST_IDS) >= 19  # at least the 19 marked slow before the list
    for node_id in sorted(SLOW_TEST_IDS):
        file, *names = node_id.split("::")
        path = ROOT / file
        assert path.is_file(), f"{node_id}: no file {file}"
        function = names[-1].split("[", 1)[0]
        assert function in _test_functions(path), f"{node_id}: no test {function!r} in {file}"

