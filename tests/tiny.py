"""One tiny experiment configuration for the tests that run the harness.

XLA compiles a program per distinct shape and constant, and most of the suite's time is
that compiling. The train step bakes in the batch size, the width and the cosine schedule's
length (epochs × steps per epoch); the Monte Carlo programs bake in the number of runs. Tests
that train with these settings (σ, α and the seed are traced, and ``max_train_steps`` only
stops the loop early) run the same programs, which the session's compilation cache
(tests/conftest.py) then compiles once for all of them, in-process and in subprocesses.
A test that needs other settings says why.
"""

from neft_jax.harness.config import ExperimentConfig

# Whole-batch conv backward: the CPU default's micro-batches compile a scan per conv, and
# only the tests about micro-batching need them.
TINY = dict(epochs=2, batch_size=32, width=0.0625, mc_runs=3, val_mc_runs=2, sigma=0.3,
            backward_micro_batch=0)

# The same settings as command-line flags (the flag of a field is its name with dashes),
# without σ: sweep.py takes --sigmas, and the tests give σ where they need one.
TINY_ARGS = [*(arg for field, value in TINY.items() if field != "sigma"
               for arg in (f"--{field.replace('_', '-')}", str(value))), "--no-progress"]


def tiny_config(out, **changes) -> ExperimentConfig:
    """The tiny configuration writing to ``out``, with ``changes``."""
    return ExperimentConfig(**{**TINY, "out": str(out), **changes})
