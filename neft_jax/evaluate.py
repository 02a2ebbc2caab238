"""Monte Carlo evaluation under device noise (method.md §5, paper Algorithm 2).

The statistics of its accuracies (summaries, paired differences, convergence counts)
are in :mod:`neft_jax.stats`.

For each of R noise keys, one noise instance is drawn for every backbone
kernel and held fixed over the whole test set (BatchNorm in inference mode);
the run's accuracy is recorded. The computation is one jitted program:

* the test set lives on the accelerator as ``(num_batches, batch, H, W, C)``;
* keys are processed in chunks of ``chunk_size``: ``vmap`` within a chunk,
  ``lax.scan`` across chunks; a ``lax.scan`` runs over test batches;
* σ is a traced argument: a σ sweep compiles once.

``vmap`` over parameters turns every conv into a grouped convolution, which
both XLA:CPU and cuDNN run more slowly than one key at a time over a large test
batch, so the default chunk size is 1 on CPU and GPU (a scan over keys); other
backends are measured on first use (:func:`autotune_chunk_size`).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from neft_jax.device import DeviceModel
from neft_jax.forward import Forward, as_forward, inference_model  # noqa: F401
from neft_jax.models import backbone_kernels
from neft_jax.parallel import mesh_axis
from neft_jax.perturbation import Where

#: Keys computed together (vmap) per backend, measured with experiments/bench.py: on CPU a
#: chunk of 8 ran 8.7× slower than 1; on an H200 (VGG-8, bf16, test batches of 2,500) a
#: chunk of 2 ran at 320k image-evaluations/s against 486k for 1, and chunks of 4 and 8
#: did not finish 32 runs in two minutes (docs/studies/speed_gpu.md). Backends
#: not listed are measured on first use (:func:`autotune_chunk_size`), cached per model.
DEFAULT_CHUNK_SIZE = {"cpu": 1, "gpu": 1}
#: Candidates tried by the automatic measurement on accelerators.
AUTOTUNE_CANDIDATES = (1, 2, 4, 8, 16)
_AUTOTUNED: dict = {}


class TestSet(NamedTuple):
    """A test set laid out in equal batches on the device.

    images ``(num_batches, batch, *features)`` (e.g. ``H, W, C``), labels
    ``(num_batches, batch)``,
    mask ``(num_batches, batch)`` (False on padding).
    """

    images: jax.Array
    labels: jax.Array
    mask: jax.Array

    @property
    def size(self) -> int:
        """N, the number of real (unpadded) examples."""
        return int(np.asarray(self.mask).sum())


class MonteCarloResult(NamedTuple):
    """accuracies ``(R,)`` (fractions in [0, 1]), EKL (nats, averaged over inputs) and the
    number of keys that were computed together (vmap chunk)."""

    accuracies: np.ndarray
    ekl: float
    chunk_size: int = 1


def make_test_set(images: Any, labels: Any, batch_size: int = 500) -> TestSet:
    """Pad and reshape inputs ``(N, *features)`` (images ``(N, H, W, C)``, or any feature
    shape such as ``(N, F)``) and integer class indices ``labels (N,)`` into a
    :class:`TestSet`. Float inputs become float32; integer inputs (token ids) keep their
    dtype. ``batch_size`` (capped at N) sets the batches ``(ceil(N / batch_size),
    batch_size, …)``; the last is zero-padded and its padding masked out of every score."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        images = images.astype(np.float32)
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int32)
    if images.ndim < 2 or labels.shape != images.shape[:1] or not len(labels):
        raise ValueError(f"inputs must be (N, *features) and labels (N,) with N >= 1, got "
                         f"{images.shape} and {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels must be class indices >= 0, got {labels.min()}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(labels)
    batch_size = min(batch_size, n)
    num_batches = math.ceil(n / batch_size)
    pad = num_batches * batch_size - n
    mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    shape = (num_batches, batch_size)
    return TestSet(
        jnp.asarray(images.reshape(*shape, *images.shape[1:])),
        jnp.asarray(labels.reshape(shape)),
        jnp.asarray(mask.reshape(shape)),
    )


def _run_outputs(forward: Forward, variables, test_set: TestSet, key, device, where):
    """One noise instance over the whole test set.

    Returns (correct count, probs ``(nb, B, K)``, entropies ``(nb, B)``).
    """
    noisy = forward.perturb(variables, key, device, where)

    def body(correct, batch):
        images, labels, mask = batch
        logits = forward.logits(noisy, images)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
        probs = jnp.exp(log_probs)
        entropy = -jnp.sum(probs * log_probs, axis=-1)
        hits = (jnp.argmax(logits, -1) == labels) & mask
        return correct + jnp.sum(hits, dtype=jnp.int32), (probs, entropy)

    return jax.lax.scan(body, jnp.int32(0), tuple(test_set))


def _monte_carlo_sums_impl(model, variables, test_set, keys, run_mask, device, chunk_size, where):
    """Correct counts ``(R,)``, Σ_r probs ``(nb, B, K)`` and Σ_r entropies ``(nb, B)``."""
    one_run = functools.partial(
        _run_outputs, model, variables, test_set, device=device, where=where
    )

    def chunk(carry, inputs):
        sum_probs, sum_entropy = carry
        chunk_keys, chunk_mask = inputs
        if chunk_size == 1:
            correct, (probs, entropy) = one_run(chunk_keys[0])
            correct, probs, entropy = correct[None], probs[None], entropy[None]
        else:
            correct, (probs, entropy) = jax.vmap(one_run)(chunk_keys)
        weight = chunk_mask.astype(jnp.float32)
        sum_probs = sum_probs + jnp.einsum("r,rbnk->bnk", weight, probs)
        sum_entropy = sum_entropy + jnp.einsum("r,rbn->bn", weight, entropy)
        return (sum_probs, sum_entropy), correct

    probe = jax.eval_shape(one_run, keys[0])[1]  # probabilities (nb, B, K), entropies
    if len(probe[0].shape) != 3:  # at trace time: the model's logits are not (B, K)
        from neft_jax.adapters import OUTPUTS

        raise ValueError(f"{OUTPUTS}; got logits of shape {probe[0].shape[1:]} in evaluation")
    init = tuple(jnp.zeros(s.shape, jnp.float32) for s in probe)
    num_chunks = keys.shape[0] // chunk_size
    inputs = (
        keys.reshape(num_chunks, chunk_size, *keys.shape[1:]),
        run_mask.reshape(num_chunks, chunk_size),
    )
    (sum_probs, sum_entropy), correct = jax.lax.scan(chunk, init, inputs)
    return correct.reshape(-1), sum_probs, sum_entropy


_monte_carlo_sums = jax.jit(_monte_carlo_sums_impl,
                            static_argnames=("model", "chunk_size", "where"))


@functools.partial(jax.jit, static_argnames=("model", "chunk_size", "where", "mesh"))
def _sharded_monte_carlo_sums(model, variables, test_set, keys, run_mask, device, chunk_size,
                              where, mesh):
    """:func:`_monte_carlo_sums` with the keys split over the devices of a 1-D ``mesh``.

    Every device evaluates its own keys over the whole (replicated) test set; the
    probability and entropy sums are added across devices with ``psum``.
    """
    axis = mesh_axis(mesh, "monte_carlo")

    def local(variables, test_set, keys, run_mask, device):
        correct, sum_probs, sum_entropy = _monte_carlo_sums_impl(
            model, variables, test_set, keys, run_mask, device, chunk_size, where)
        return correct, jax.lax.psum(sum_probs, axis), jax.lax.psum(sum_entropy, axis)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(axis), P(axis), P()),
                            out_specs=(P(axis), P(), P()), check_vma=False)
    return sharded(variables, test_set, keys, run_mask, device)


def epistemic_kl(sum_probs, sum_entropy, num_runs: int, mask) -> float:
    """EKL = mean over inputs of mean_r KL(p_r ‖ p̄) = H(p̄) − mean_r H(p_r) (nats)."""
    mean_probs = np.asarray(sum_probs, np.float64) / num_runs
    entropy_of_mean = -np.sum(mean_probs * np.log(np.clip(mean_probs, 1e-30, None)), axis=-1)
    mean_entropy = np.asarray(sum_entropy, np.float64) / num_runs
    mask = np.asarray(mask)
    return float(max(0.0, np.mean((entropy_of_mean - mean_entropy)[mask])))


def resolve_chunk_size(chunk_size: int | None, num_runs: int) -> int:
    """The chunk size to use: explicit, else the backend default, never more than R."""
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE.get(jax.default_backend(), 1)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return min(chunk_size, num_runs)


def block_layout(num_runs: int, chunk_size: int, max_block: int) -> tuple[int, int]:
    """(number of blocks, runs per block): blocks of equal size, a multiple of the chunk size.

    Equal blocks mean one compiled program per R; the padding is < one chunk per block.
    """
    num_blocks = -(-num_runs // max(max_block, chunk_size))
    per_block = -(-num_runs // num_blocks)
    per_block = -(-per_block // chunk_size) * chunk_size
    return num_blocks, per_block


def monte_carlo(
    model: Any,
    variables: Any,
    test_set: TestSet,
    keys: jax.Array,
    device: DeviceModel | float,
    *,
    chunk_size: int | None = None,
    max_block: int = 32,
    where: Where = backbone_kernels,
    progress: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> MonteCarloResult:
    """Accuracy of each of ``R = len(keys)`` noise instances over ``test_set``.

    Args:
      model: a flax linen module (exits are dropped for inference), an ``nnx.Module``,
        or a function ``apply(variables, images) -> logits`` (:func:`as_forward`).
      variables: linen: ``{"params": ..., "batch_stats": ...}``; NNX: None (the
        module's own state); function: whatever ``apply`` takes (noise goes on the
        leaves ``where`` selects).
      test_set: from :func:`make_test_set`.
      keys: ``R`` keys, one noise instance each: typed keys ``(R,)`` or raw uint32
        keys ``(R, 2)`` (``jax.random.split(key, R)``).
      device: the :class:`DeviceModel`, or a number σ for the default device model; a
        concrete σ = 0 evaluates once.
      chunk_size: keys vmapped together (default per backend).
      max_block: at most this many runs per device call (progress granularity).
      where: which leaves are perturbed (default: backbone kernels). Pass one named
        function (not a new lambda per call): it is a static argument, and each new one
        compiles again.
      progress: called with the number of runs finished after each block.
      mesh: a 1-D device mesh; the keys of each block are split over its devices
        (each evaluates the whole test set for its keys). None: one device.

    Returns:
      :class:`MonteCarloResult` with per-run accuracies ``(R,)`` float64, fractions in
      [0, 1] (or ``(1,)`` at σ = 0), and the EKL in nats.
    """
    from neft_jax.perturbation import as_device

    device = as_device(device)
    if not isinstance(test_set, TestSet):
        raise TypeError(f"test_set must come from neft_jax.make_test_set(images, labels), got "
                        f"a {type(test_set).__name__}")
    model, variables = as_forward(model, variables)
    if not device.is_noiseless:
        _require_perturbed_leaves(model, variables, where)
    keys = jnp.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if keys.ndim < (1 if typed else 2) or keys.shape[0] < 1:
        raise ValueError(f"keys must be a non-empty batch of R PRNG keys, e.g. "
                         f"jax.random.split(key, R); got shape {keys.shape} ({keys.dtype})")
    if mesh is not None:
        mesh_axis(mesh, "monte_carlo")
    if device.is_noiseless:
        keys = keys[:1]
    num_runs = keys.shape[0]
    if chunk_size is None and jax.default_backend() not in DEFAULT_CHUNK_SIZE and num_runs > 1:
        chunk_size = _autotuned_chunk_size(model, variables, test_set, device)
    chunk_size = resolve_chunk_size(chunk_size, num_runs)
    num_devices = 1 if mesh is None else mesh.size
    if num_devices > 1:  # each device takes per_block / num_devices keys, a multiple of chunk
        chunk_size = min(chunk_size, -(-num_runs // num_devices))
        num_blocks, per_device = block_layout(-(-num_runs // num_devices), chunk_size,
                                              max(1, max_block // num_devices))
        per_block = per_device * num_devices
    else:
        num_blocks, per_block = block_layout(num_runs, chunk_size, max_block)
    padded = num_blocks * per_block
    if padded > num_runs:
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], padded - num_runs, axis=0)])
    run_mask = jnp.arange(padded) < num_runs
    if num_devices > 1:  # the model and the test set are replicated on every device
        variables, test_set = jax.device_put((variables, test_set), NamedSharding(mesh, P()))
    counts, sum_probs, sum_entropy = [], 0.0, 0.0
    for block in range(num_blocks):
        part = slice(block * per_block, (block + 1) * per_block)
        if num_devices > 1:
            split = NamedSharding(mesh, P(mesh_axis(mesh, "monte_carlo")))
            correct, block_probs, block_entropy = _sharded_monte_carlo_sums(
                model, variables, test_set, jax.device_put(keys[part], split),
                jax.device_put(run_mask[part], split), device, chunk_size, where, mesh)
        else:
            correct, block_probs, block_entropy = _monte_carlo_sums(
                model, variables, test_set, keys[part], run_mask[part], device, chunk_size, where
            )
        counts.append(np.asarray(correct))
        sum_probs = sum_probs + np.asarray(block_probs, np.float64)
        sum_entropy = sum_entropy + np.asarray(block_entropy, np.float64)
        if progress is not None:
            progress(min(num_runs, (block + 1) * per_block))
    _require_labels_below_classes(sum_probs, test_set)
    accuracies = np.concatenate(counts)[:num_runs].astype(np.float64) / test_set.size
    ekl = epistemic_kl(sum_probs, sum_entropy, num_runs, test_set.mask)
    return MonteCarloResult(accuracies, ekl, chunk_size)


def _require_labels_below_classes(sum_probs: np.ndarray, test_set: TestSet) -> None:
    """After the runs: every label names one of the model's K classes, K from the summed
    probabilities ``(nb, B, K)`` (their shape is checked when the runs' program is traced),
    so a correct call pays no extra trace of the model."""
    num_classes = sum_probs.shape[-1]
    largest = int(jnp.max(jnp.where(test_set.mask, test_set.labels, 0)))
    if largest >= num_classes:
        raise ValueError(f"the test set's labels reach {largest} but the model gives "
                         f"{num_classes} classes (labels must be 0 … {num_classes - 1})")


def _require_perturbed_leaves(forward: Forward, variables, where: Where) -> None:
    """Raise :class:`~neft_jax.NoWeightsSelected` when ``where`` selects no leaf of what
    Monte Carlo perturbs: its numbers would be noise-free numbers labelled noisy."""
    from neft_jax.perturbation import NoWeightsSelected, path_names, seen_leaf_names

    tree = variables["params"] if forward.kind == "linen" else variables
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if any(where(path_names(path), leaf) for path, leaf in leaves):
        return
    raise NoWeightsSelected(
        f"monte_carlo: σ > 0 but `where` selects none of the weights (leaf names seen: "
        f"{seen_leaf_names(leaves)}), so every run would be noise-free; "
        "pass where=lambda path, leaf: ... to choose the weights that get noise")


def _autotuned_chunk_size(model, variables, test_set, device) -> int:
    """Measure the chunk sizes once per (backend, model, test-set shape) and cache the best."""
    key = (jax.default_backend(), model, test_set.images.shape)
    if key not in _AUTOTUNED:
        best, timings = autotune_chunk_size(model, variables, test_set, device,
                                            candidates=AUTOTUNE_CANDIDATES, num_runs=16)
        _AUTOTUNED[key] = best
        logging.getLogger(__name__).info(
            "Monte Carlo chunk size %d chosen by measurement on %s (s per 16 runs: %s)", best,
            jax.default_backend(), ", ".join(f"{c}: {t:.3f}" for c, t in timings.items()))
    return _AUTOTUNED[key]


@functools.partial(jax.jit, static_argnames=("model", "where"))
def evaluate_one_run(model, variables, test_set, key, device, where=backbone_kernels):
    """Correct predictions (int32) of one noise instance: the building block of a Python loop.

    ``model`` is a :class:`Forward` (see :func:`as_forward`)."""
    correct, _ = _run_outputs(model, variables, test_set, key, device, where)
    return correct


def monte_carlo_loop(model, variables, test_set, keys, device, where=backbone_kernels):
    """Reference: a Python loop over keys, one jitted run each (the authors' protocol)."""
    model, variables = as_forward(model, variables)
    counts = [int(evaluate_one_run(model, variables, test_set, k, device, where)) for k in keys]
    return np.array(counts, np.float64) / test_set.size


def autotune_chunk_size(
    model, variables, test_set, device, candidates=(1, 2, 4, 8), num_runs: int = 8, key=None
) -> tuple[int, dict[int, float]]:
    """Time each chunk size on ``num_runs`` keys; return the fastest and every timing (s)."""
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, num_runs)
    timings = {}
    for chunk in candidates:
        monte_carlo(model, variables, test_set, keys, device, chunk_size=chunk)  # compile
        start = time.perf_counter()
        monte_carlo(model, variables, test_set, keys, device, chunk_size=chunk)
        timings[chunk] = time.perf_counter() - start
    return min(timings, key=timings.get), timings
