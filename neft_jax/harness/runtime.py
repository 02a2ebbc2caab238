"""Process and machine concerns: what machine this is, the user's cache folder, the XLA
compilation cache, SIGINT/SIGTERM as one clean stop, and a full disk told apart from other errors.

Imports nothing else of the harness, so any module may use it (the tuner's cache key,
``results.json``'s environment, the command line's set-up).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import logging
import os
import platform
import re
import signal
import sys

#: Bytes of compiled programs kept in the user's cache (least recently used go first).
XLA_CACHE_BYTES = 2 << 30
#: Packages whose versions ``results.json`` records (their numbers depend on them).
PACKAGES = ("neft_jax", "jax", "jaxlib", "flax", "optax")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, with family/model numbers), else platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
                f"model {fields.get('model', '?')})")
    except OSError:
        return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None where it cannot be read)."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["neft_jax"] is None:  # a source tree that is not installed
        import neft_jax

        versions["neft_jax"] = getattr(neft_jax, "__version__", None)
    return versions


def environment() -> dict:
    """Where the numbers were made: package versions, backend and devices, Python, CPU, and
    the date."""
    import jax

    return {
        "jax": jax.__version__, "packages": package_versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
        "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "code": code_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def made_with(environment: dict) -> tuple[str, str, str]:
    """(code, machine, date) of a results file's ``environment``: the commit (``+dirty`` when
    its tracked files differed; ``unknown`` outside git), the CPU model on a CPU or the
    accelerator's kind, and the day."""
    code = environment.get("code") or {}
    commit = (code.get("commit") or "unknown")[:7] + ("+dirty" if code.get("dirty") else "")
    machine = (environment.get("cpu_model") if environment.get("backend") == "cpu"
               else environment.get("device_kind") or environment.get("backend"))
    return commit, str(machine or "unknown"), str(environment.get("date") or "")[:10]


@functools.cache
def code_version() -> dict | None:
    """The git commit of the neft_jax source that runs, and whether its tracked files differ
    from it (``dirty``); None outside a git checkout (an installed wheel, a copied tree)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def user_cache_dir() -> str:
    """``$NEFT_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/neft_jax``, else ``~/.cache/neft_jax``."""
    return os.environ.get("NEFT_JAX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "neft_jax")


def use_compilation_cache() -> str | None:
    """Keep compiled XLA programs under the user's cache directory, so a command run again
    (another σ, a resume, the next seed) skips compiling what it compiled before; returns
    the folder. Off with ``NEFT_JAX_NO_XLA_CACHE=1``, and when jax already has a cache
    folder (``JAX_COMPILATION_CACHE_DIR`` or one set in-process)."""
    import jax

    if os.environ.get("NEFT_JAX_NO_XLA_CACHE") or jax.config.jax_compilation_cache_dir:
        return None
    path = os.path.join(user_cache_dir(), "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    # Every program, however quick to compile: a model's eager init alone compiles ~120
    # tiny programs (6–12 s on 2 cores), which jax's default (≥ 1 s each) never keeps.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # jax bounds the cache only with filelock (a dependency; the GPU image may lack it)
        import filelock  # noqa: F401

        jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_BYTES)
    except ImportError:
        pass
    return path


def disk_full(error: BaseException) -> str | None:
    """The file a full disk stopped writing ("" if unnamed), or None if ``error`` is not a
    full disk; looks through the exceptions that caused or wrapped it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error.filename or ""
        if "No space left on device" in str(error):
            return _written_path(str(error))
        error = error.__cause__ or error.__context__
    return None


def _written_path(message: str) -> str:
    """The file a library's error message says it was writing (tensorstore: ``local file
    "PATH"``), without orbax's temporary suffix: the checkpoint being saved; else ""."""
    found = re.search(r'(?:local file|Failed writing:) "([^"]+)"', message)
    return found.group(1).split(".orbax-checkpoint-tmp")[0] if found else ""


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean stop handles both."""


#: The signals a command treats as "stop cleanly".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Whether the running command is the process's own (called with no ``argv``, i.e. from
#: the command line), so that a stop may leave further signals ignored until it exits.
_COMMAND_OWNS_PROCESS = False


def stop_once(signum, frame):
    """A SIGINT/SIGTERM handler: the first raises ``KeyboardInterrupt`` (SIGINT) or
    :class:`Stopped` (SIGTERM); later ones are ignored, so that a second Ctrl-C cannot cut
    the stop's clean-up (saving, unlocking) short or print a traceback."""
    for name in STOP_SIGNALS:
        signal.signal(name, signal.SIG_IGN)
    raise Stopped if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM stop the enclosed work once (:func:`stop_once`). The handlers
    before are restored at the end, except after a stop of a command that owns the process:
    then signals stay ignored until it exits (its interpreter shutdown included)."""
    previous = {name: signal.signal(name, stop_once) for name in STOP_SIGNALS}
    stopped = False
    try:
        yield
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        for name, handler in previous.items():
            signal.signal(name, signal.SIG_IGN if stopped and _COMMAND_OWNS_PROCESS else handler)


#: Loggers of the libraries under the harness (orbax logs through absl; its failed
#: writes end as asyncio's "Task exception was never retrieved").
LIBRARY_LOGGERS = ("absl", "orbax", "asyncio")


def quiet_library_logs(verbose: bool) -> None:
    """Keep orbax/absl/asyncio messages out of the terminal unless ``verbose``: the harness
    says in one line what went wrong, where it matters. Also drops the tracebacks that
    tensorstore's writer threads print when a failed checkpoint save (a full disk) has
    closed orbax's event loop under their pending writes (one per array, tens of them)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    sys.unraisablehook = (sys.__unraisablehook__ if verbose
                          else _unraisable_without_closed_loop_noise)


def closed_loop_noise(error: BaseException) -> bool:
    """Whether ``error`` is a library thread's late callback into orbax's closed loop."""
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _unraisable_without_closed_loop_noise(unraisable) -> None:
    if not closed_loop_noise(unraisable.exc_value):
        sys.__unraisablehook__(unraisable)


def start_command(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The set-up every command shares: parse ``argv`` (None: the process's command line),
    quiet the libraries' logs (unless ``--verbose``) and keep compiled programs in the
    user's cache; returns the args."""
    global _COMMAND_OWNS_PROCESS
    args = parser.parse_args(argv)
    _COMMAND_OWNS_PROCESS = argv is None
    quiet_library_logs(args.verbose)
    use_compilation_cache()
    return args
