"""One tiny experiment configuration for the tests that run the harness.

XLA compiles a program per distinct shape and constant, and most of the suite's time is
that compiling. The train step bakes in the batch size, the width and the cosine schedule's
length (epochs × steps per epoch); the Monte Carlo programs bake in the number of runs. Tests
that train with these settings (σ, α and the seed are traced, and ``max_train_steps`` only
stops the loop early) run the same programs, which the session's compilation cache
(tests/conftest.py) then compiles once for all of them, in-process and in subprocesses.
A test that needs other settings says why.
"""

import os
import tempfile

import numpy as np

from neft_jax.harness.config import ExperimentConfig

#: The tiny runs' digits: 1,000 of mnist5k's 5,000 real digits (the first 100 of each class),
#: as an ``mnist5k.npz`` in this test session's cache folder (tests/conftest.py), read with
#: ``--data-dir``. The loader splits them as it splits the 5,000: 720 train, 80 validate,
#: 200 test, so a tiny epoch is 22 steps of 32 and a Monte Carlo run 200 images, not 112
#: steps and 1,000 images: the same code, a fifth of the work. Tests about the dataset itself,
#: and the pinned run (tests/harness/test_pinned_results.py), read all 5,000.
TINY_DATA_DIR = os.path.join(os.environ.get("NEFT_JAX_TEST_SESSION_CACHE")
                             or tempfile.gettempdir(), "mnist5k-tiny")
TINY_DIGITS_PER_CLASS = 100


def write_tiny_digits() -> str:
    """Write ``TINY_DATA_DIR/mnist5k.npz`` unless it is there (atomically: workers race);
    return the folder."""
    from neft_jax.harness.mnist5k import FILE_NAME, raw_digits, write_file

    path = os.path.join(TINY_DATA_DIR, FILE_NAME)
    if not os.path.isfile(path):
        images, labels = raw_digits()
        keep = np.concatenate([np.flatnonzero(labels == c)[:TINY_DIGITS_PER_CLASS]
                               for c in range(10)])
        write_file(path, images[keep], labels[keep])
    return TINY_DATA_DIR


# Whole-batch conv backward: the CPU default's micro-batches compile a scan per conv, and
# only the tests about micro-batching need them.
TINY = dict(epochs=2, batch_size=32, width=0.0625, mc_runs=3, val_mc_runs=2, sigma=0.3,
            backward_micro_batch=0, data_dir=TINY_DATA_DIR)

# The same settings as command-line flags (the flag of a field is its name with dashes),
# without σ: sweep.py takes --sigmas, and the tests give σ where they need one.
TINY_ARGS = [*(arg for field, value in TINY.items() if field != "sigma"
               for arg in (f"--{field.replace('_', '-')}", str(value))), "--no-progress"]


def tiny_config(out, **changes) -> ExperimentConfig:
    """The tiny configuration writing to ``out``, with ``changes``."""
    return ExperimentConfig(**{**TINY, "out": str(out), **changes})
