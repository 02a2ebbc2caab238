"""The environment of a test's subprocess: this session's compilation cache, shared."""

import os

import jax


def shared_cache_env() -> dict:
    """``os.environ`` plus this test session's XLA compilation cache, every program kept,
    so a real-process test reuses what the session (and earlier subprocesses) compiled."""
    return {**os.environ,
            "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
