"""CPU settings measured on first use and cached per machine: the conv backward micro-batch.

XLA:CPU computes a conv's gradients faster in micro-batches that fit the cache
(:mod:`neft_jax.conv`), but the best size depends on the CPU (Zen 4, Zen 5 and
Intel rank them differently) and on the layer shapes. :func:`tuned_micro_batch`
times each candidate on the model's own conv shapes (forward + both gradients of
every distinct conv, weighted by how many the model has) and keeps the fastest.
The choice is cached in ``tuning.json`` under the user's cache directory
(``$NEFT_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/neft_jax``, else
``~/.cache/neft_jax``), keyed by the machine (CPU model, core count, jax and
jaxlib versions) and the shapes (model, width, batch, input channels); another
jax version or CPU measures again, and so does ``--retune``. An explicit
``--backward-micro-batch`` skips the measurement, and so does the environment
variable ``NEFT_JAX_NO_TUNING=1`` (the library's default, 8, is used).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neft_jax.conv import micro_batched_conv
from neft_jax.harness.data import IMAGE_SIZE
from neft_jax.harness.results import write_atomic
from neft_jax.harness.runtime import cpu_model, user_cache_dir
from neft_jax.models import create_model

#: Micro-batch sizes tried (0 = the whole batch).
CANDIDATES = (0, 8, 16, 32)
#: Input channels of each dataset (the first conv's C_in).
CHANNELS = {"mnist": 1, "mnist5k": 1, "cifar10": 3, "cifar100": 3, "tiny_imagenet": 3}
DIMS = ("NHWC", "HWIO", "NHWC")
#: A conv whose first run takes longer than this (s) is timed once: its timing is stable
#: and repeating it is what made a full-width measurement slow.
LONG_RUN_S = 0.2


def machine() -> dict:
    """What a cached choice is valid for: CPU model, core count, jax and jaxlib versions."""
    import jaxlib

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "backend": jax.default_backend()}


def cache_path() -> str:
    return os.path.join(user_cache_dir(), "tuning.json")


def model_convs(model: str, width: float, channels: int) -> list[tuple[int, ...]]:
    """``model``'s distinct convs at ``width`` on 32×32 inputs of ``channels`` channels, read
    from the model itself: ``(H = W of the input, C_in, C_out, kernel, stride, how many
    such convs it has)``, largest inputs first.

    The model's initialisation is traced (:func:`jax.eval_shape`: nothing is computed)
    with every ``nn.Conv`` call intercepted for its input's shape and its settings."""
    seen: dict[tuple[int, ...], int] = {}

    def record(call, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            kernel = module.kernel_size[0]
            strides = module.strides or 1
            stride = strides if isinstance(strides, int) else strides[0]
            shape = (x.shape[1], x.shape[-1], module.features, kernel, stride)
            seen[shape] = seen.get(shape, 0) + 1
        return call(*args, **kwargs)

    net = create_model(model, 10, width=width, exits=False)
    images = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, channels), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(net.init, jax.random.key(0), images)
    order = sorted(seen, key=lambda s: (-s[0], s[1], s[2], -s[3], s[4]))
    return [(*shape, seen[shape]) for shape in order]


def time_convs(shapes, batch: int, micro_batch: int, repeats: int = 2) -> float:
    """Seconds of one forward + backward of every conv in ``shapes`` (× its count), the
    mean of ``repeats`` runs after a first one (one run for convs slower than
    :data:`LONG_RUN_S`).

    Inputs are host arrays (no random-number programs to compile) and each program is
    compiled ahead of time, so the time spent is one compile per shape and the runs."""
    conv = micro_batched_conv(micro_batch) if micro_batch else jax.lax.conv_general_dilated
    total = 0.0
    rng = np.random.default_rng(0)
    for size, c_in, c_out, kernel, stride, count in shapes:
        x = rng.standard_normal((batch, size, size, c_in), dtype=np.float32)
        w = 0.05 * rng.standard_normal((kernel, kernel, c_in, c_out), dtype=np.float32)

        def loss(x_, w_, stride=stride):
            y = conv(x_, w_, (stride, stride), "SAME", dimension_numbers=DIMS)
            return jnp.sum(y * y)

        step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
        x, w = jax.device_put(x), jax.device_put(w)
        start = time.perf_counter()
        jax.block_until_ready(step(x, w))  # the first run also allocates: not timed
        runs = 1 if time.perf_counter() - start > LONG_RUN_S else repeats
        start = time.perf_counter()
        for _ in range(runs):
            out = step(x, w)
        jax.block_until_ready(out)
        total += count * (time.perf_counter() - start) / runs
    return total


@dataclasses.dataclass(frozen=True)
class Tuned:
    """A measured choice: the micro-batch, each candidate's ms, and where it came from."""

    micro_batch: int
    timings_ms: dict
    measured: str
    seconds: float
    cached: bool
    path: str

    def line(self) -> str:
        how = ("cached" if self.cached else f"measured in {self.seconds:.1f} s") + \
            f" on {self.measured[:10]}, {self.path}"
        return (f"tuning: conv backward in micro-batches of {self.micro_batch or 'the whole batch'}"
                f" ({how}; --retune to measure again, --backward-micro-batch N to choose)")


#: Shape keys measured again in this process after :func:`request_retune` (``--retune``).
_RETUNE = {"requested": False, "done": set()}
#: Shape keys whose choice this process has printed (a sweep prints it once, not per cell).
_SHOWN: set[str] = set()


def request_retune() -> None:
    """From now on, measure each shape once more in this process instead of reading the
    cache."""
    _RETUNE["requested"] = True
    _RETUNE["done"].clear()


def tunes(cfg, backend: str) -> bool:
    """Whether runs of ``cfg`` measure their micro-batch: on a CPU, when ``cfg`` does not
    set one, unless ``NEFT_JAX_NO_TUNING`` is set."""
    return (backend == "cpu" and cfg.backward_micro_batch is None
            and not os.environ.get("NEFT_JAX_NO_TUNING"))


def with_tuned_micro_batch(cfg, log: Callable[[str], None] = print):
    """``cfg`` (an :class:`~neft_jax.harness.config.ExperimentConfig`) with the measured,
    cached backward micro-batch of its model, width, batch and input channels on this CPU;
    ``cfg`` itself where :func:`tunes` is false. Called by every run, so each model and
    width of a sweep or reproduction gets its own choice."""
    if not tunes(cfg, jax.default_backend()):
        return cfg
    channels = CHANNELS.get(cfg.dataset, 3)
    key = f"{cfg.model}-w{cfg.width:g}-b{cfg.batch_size}-c{channels}"
    retune = _RETUNE["requested"] and key not in _RETUNE["done"]
    tuned = tuned_micro_batch(cfg.model, cfg.width, cfg.batch_size, channels, retune=retune,
                              log=log)
    _RETUNE["done"].add(key)
    if key not in _SHOWN:
        _SHOWN.add(key)
        log(f"{cfg.model} ×{cfg.width:g}: " + tuned.line())
    return dataclasses.replace(cfg, backward_micro_batch=tuned.micro_batch)


def tuned_micro_batch(model: str, width: float, batch: int, channels: int,
                      retune: bool = False, log: Callable[[str], None] | None = None,
                      measure: Callable[..., float] | None = None) -> Tuned:
    """The fastest backward micro-batch for these shapes on this machine (cached).

    ``measure(shapes, batch, micro_batch) -> seconds`` times one candidate (default
    :func:`time_convs`)."""
    measure = measure or time_convs
    path = cache_path()
    machine_key = json.dumps(machine(), sort_keys=True)
    shape_key = f"{model}-w{width:g}-b{batch}-c{channels}"
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(machine_key, {}).get(shape_key)
    if entry and not retune:
        return Tuned(entry["micro_batch"], entry["timings_ms"], entry["measured"],
                     entry["seconds"], True, path)
    if log:
        log(f"tuning: timing the conv backward of {model} (width ×{width:g}, batch {batch}) "
            "in micro-batches of " + ", ".join(str(c or "whole") for c in CANDIDATES)
            + " on this machine (once; cached)")
    start = time.perf_counter()
    shapes = model_convs(model, width, channels)
    timings = {str(c): 1e3 * measure(shapes, batch, c) for c in CANDIDATES if c < batch}
    best = int(min(timings, key=timings.get))
    seconds = time.perf_counter() - start
    entry = {"micro_batch": best, "timings_ms": timings, "seconds": seconds,
             "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    cache.setdefault(machine_key, {})[shape_key] = entry
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, json.dumps(cache, indent=1))
    except OSError:
        pass  # a read-only home: measured again next time
    return Tuned(best, timings, entry["measured"], seconds, False, path)


__all__ = ["CANDIDATES", "CHANNELS", "Tuned", "cache_path", "machine", "model_convs",
           "request_retune", "time_convs", "tuned_micro_batch", "tunes", "user_cache_dir",
           "with_tuned_micro_batch"]
