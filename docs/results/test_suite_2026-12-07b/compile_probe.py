"""pytest plugin: per test, seconds spent in jax tracing/lowering/backend compile."""
import collections, json, os, time
import jax.monitoring as mon
import pytest

_acc = collections.Counter()
def _listener(event, duration, **kw):
    _acc[event] += duration
mon.register_event_duration_secs_listener(_listener)
_rows = []
_T0 = time.perf_counter() - time.time() + float(os.environ.get('PROBE_T0', time.time()))

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = dict(_acc); t = time.perf_counter()
    yield
    wall = time.perf_counter() - t
    d = {k: round(v - before.get(k, 0.0), 2) for k, v in _acc.items() if v - before.get(k, 0.0) > 0.01}
    _rows.append({"test": item.nodeid, "wall": round(wall, 2), "start": round(t - _T0, 2), "worker": os.environ.get("PYTEST_XDIST_WORKER"), **d})

def pytest_sessionfinish(session):
    out = os.environ.get("PROBE_OUT", "/tmp/probe/out.jsonl")
    with open(out, "a") as f:
        for r in _rows:
            f.write(json.dumps(r) + "\n")
