"""pytest plugin: per test file, wall seconds, number of XLA backend compiles, compile seconds.
Use: PYTHONPATH=/tmp/probe python -m pytest -p no:xdist -p compile_count tests/...  """
import collections, time
import jax.monitoring as mon
import pytest

_n = collections.Counter(); _s = collections.Counter()
def _listener(event, duration, **kw):
    _n[event] += 1; _s[event] += duration
mon.register_event_duration_secs_listener(_listener)
_files = collections.defaultdict(lambda: [0, 0.0, 0, 0.0])
BC = "/jax/core/compile/backend_compile_duration"

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    n0, s0, t = _n[BC], _s[BC], time.perf_counter()
    yield
    f = _files[item.nodeid.split("::")[0]]
    f[0] += 1; f[1] += time.perf_counter() - t; f[2] += _n[BC] - n0; f[3] += _s[BC] - s0

def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    tr.write_line("file | tests | wall s | backend compiles | compile s")
    for name, (k, w, n, s) in sorted(_files.items()):
        tr.write_line(f"{name} | {k} | {w:.1f} | {n} | {s:.1f}")
