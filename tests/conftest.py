import atexit
import os
import shutil
import subprocess
import sys
import tempfile


def _xla_flags_for_tests() -> str:
    """XLA:CPU's flags for the test session: XLA's older elemental emitter for fusions, which
    compiles the tests' small programs ≈ 20-30 % faster and computes the same bits (a tiny
    VGG-8's IRS/OVF/noise steps and Monte Carlo, compared bit for bit on an AMD EPYC of family
    25 model 17, 2026-12-06; docs/studies/test_suite.md). Only when this XLA still knows the
    flag (an unknown flag would abort every process): one probe in pytest's main process,
    whose environment the workers and the tests' subprocesses inherit."""
    base = "--xla_cpu_multi_thread_eigen=true"
    fast = base + " --xla_cpu_use_fusion_emitters=false"
    code = "import jax.numpy as j; j.zeros(2).block_until_ready()"
    probe = subprocess.run([sys.executable, "-c", code],
                           env={**os.environ, "XLA_FLAGS": fast, "JAX_PLATFORMS": "cpu"},
                           capture_output=True, timeout=300)
    return fast if probe.returncode == 0 else base


if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = _xla_flags_for_tests()
# Runs use the library's backward micro-batch (8) instead of measuring one per machine
# (tests/harness/test_tuning.py tests the measurement).
os.environ["NEFT_JAX_NO_TUNING"] = "1"

# One user cache folder for the whole test session, never the user's own: pytest's main
# process makes it and names it in the environment before pytest-xdist starts its workers,
# so every worker and every command a test starts inherits it. Its xla/ folder is the
# compilation cache that the commands use by default (neft_jax.harness.runtime), and this
# session's processes use it too: many tests compile the same small programs (e.g. a
# width-×0.0625 VGG-8 train step, a model's eager init), and a later test, in any process,
# reads them back. It also keeps the parsed mnist5k digits. It starts empty on every run,
# as on a fresh clone, and is removed at the end.
_OWNER = "NEFT_JAX_TEST_SESSION_CACHE" not in os.environ
_SESSION_CACHE = os.environ.setdefault("NEFT_JAX_TEST_SESSION_CACHE",
                                       tempfile.mkdtemp(prefix="neft-jax-test-cache-"))
os.environ["NEFT_JAX_CACHE_DIR"] = _SESSION_CACHE
if _OWNER:
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(_SESSION_CACHE, "xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _tiny_digits():
    """The tiny runs' 1,000 digits (tests/tiny.py), written once per session, before any
    test (in-process or in a subprocess) reads them with --data-dir."""
    from tiny import write_tiny_digits

    write_tiny_digits()


def _slow_test_ids() -> set[str]:
    """The node ids listed in tests/slow_tests.txt (comments and blank lines skipped)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")
    with open(path) as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return {line for line in lines if line}


SLOW_TEST_IDS = _slow_test_ids()


def pytest_collection_modifyitems(config, items):
    """Mark the tests of tests/slow_tests.txt ``slow`` (``-m "not slow"`` skips them)."""
    for item in items:
        if item.nodeid in SLOW_TEST_IDS:
            item.add_marker(pytest.mark.slow)
