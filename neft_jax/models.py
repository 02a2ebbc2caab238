"""Multi-exit VGG-8 and ResNet-18 (method.md §2, paper Table I), Flax linen, NHWC.

``model.apply(variables, x, train=...)`` with ``x`` of shape ``(B, 32, 32, C)``
returns ``(logits, exit_logits)``: logits ``(B, K)`` and a tuple of exit
logits ``(B, K)``, shallowest first (empty when ``exits=False``). Exits read
the backbone's activations and never change them; their modules are named
``exit_1``, ``exit_2``, … so that :func:`in_exit` (``backbone_kernels``,
``exit_kernels``) tells them apart.

``width`` scales every channel count and hidden width (1.0 = the paper).
``backward_micro_batch`` (None = off) computes each conv's gradients that many
images at a time (:mod:`neft_jax.conv`; same function, faster on CPU).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from neft_jax.conv import model_conv
from neft_jax.perturbation import Where, is_kernel

#: XLA options for the initial weights' normal draws on CPU: optimisation level 1 compiles
#: them 4-7x faster and gives the same bits (``random.normal`` is integer hashing and a fixed
#: float expansion; tests/test_models.py compares them, and they matched with XLA limited to
#: AVX-512, AVX2 and SSE4.2 on 2026-12-07). An eager ``model.init`` compiles one
#: draw per kernel shape: 6-17 s of a first run's start on 2 cores at the default level.
_DRAW_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.cache
def _standard_normal_draw(shape: tuple[int, ...], dtype):
    """``key -> jax.random.normal(key, shape, dtype)``, jitted with :data:`_DRAW_OPTIONS`."""
    return jax.jit(lambda key: jax.random.normal(key, shape, dtype),
                   compiler_options=_DRAW_OPTIONS)


def kaiming_fan_out(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Kaiming-normal, fan-out, ReLU gain (PyTorch ``kaiming_normal_(mode="fan_out")``): the
    numbers of ``nn.initializers.variance_scaling(2.0, "fan_out", "normal")``, bit for bit
    (the same fans, variance and draw), with the draw compiled faster on CPU. Kernels
    ``(..., in, out)``: std ``sqrt(2 / (out · receptive field))``."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"kaiming_fan_out needs a kernel of 2 or more dims, got {shape}")
    receptive_field = math.prod(shape) / shape[-2] / shape[-1]
    variance = jnp.array(2.0 / (shape[-1] * receptive_field), dtype=dtype)
    if isinstance(key, jax.core.Tracer) or jax.default_backend() != "cpu":
        draw = jax.random.normal(key, shape, dtype)  # inside a trace, or not measured there
    else:
        draw = _standard_normal_draw(shape, jnp.dtype(dtype))(key)
    return draw * jnp.sqrt(variance)


EXIT_PREFIX = "exit_"
_EXIT_NAME = re.compile(re.escape(EXIT_PREFIX) + r"\d+")


def in_exit(path) -> bool:
    """Whether a leaf's path runs through an exit head: a module named ``exit_<n>``, as
    VGG8, ResNet18 and :func:`neft_jax.with_exits` name them (a module of your own named
    ``exit_gate`` or the like is backbone)."""
    return any(_EXIT_NAME.fullmatch(str(p)) for p in path)


def backbone_only(where: Where = is_kernel) -> Where:
    """The leaves ``where`` selects outside the exit heads."""
    return lambda path, leaf: where(path, leaf) and not in_exit(path)


def exits_only(where: Where = is_kernel) -> Where:
    """The leaves ``where`` selects inside the exit heads."""
    return lambda path, leaf: where(path, leaf) and in_exit(path)


#: Selections for :func:`neft_jax.perturb`: the backbone's kernels, the exits' kernels.
backbone_kernels = backbone_only()
exit_kernels = exits_only()


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) averaging matrix of PyTorch's adaptive average pool.

    Window i spans ``floor(i·in/out)`` to ``ceil((i+1)·in/out)`` (exclusive).
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jnp.ndarray, output_size: int) -> jnp.ndarray:
    """PyTorch-style adaptive average pooling of NHWC ``x`` to ``(B, s, s, C)``."""
    rows = jnp.asarray(adaptive_pool_matrix(x.shape[1], output_size), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(x.shape[2], output_size), x.dtype)
    return jnp.einsum("bhwc,ih,jw->bijc", x, rows, cols)


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class ExitHead(nn.Module):
    """Exit MLP: adaptive avg-pool → flatten → dense hidden → ReLU → dense K.

    ``pool_size`` None: no pooling (features already ``(B, F)``)."""

    pool_size: int | None
    hidden: int
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.pool_size is not None:
            x = adaptive_avg_pool(x, self.pool_size)
        x = x.reshape((x.shape[0], -1))
        dense = functools.partial(nn.Dense, kernel_init=kaiming_fan_out, dtype=self.dtype)
        x = nn.relu(dense(self.hidden)(x))
        return dense(self.num_classes)(x)


class ConvBN(nn.Module):
    """conv (no bias) → BatchNorm → optional ReLU."""

    features: int
    kernel: int = 3
    stride: int = 1
    relu: bool = True
    dtype: Any = jnp.float32
    backward_micro_batch: int | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        pad = self.kernel // 2
        micro = self.backward_micro_batch
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=kaiming_fan_out,
            dtype=self.dtype,
            conv_general_dilated=model_conv(micro),
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
        )(x)
        return nn.relu(x) if self.relu else x


def exit_numbers(exits: bool | Sequence[int], num_exits: int) -> tuple[int, ...]:
    """The 1-based exit numbers a model builds: all (True), none (False) or the given ones.

    Exits keep their Table I numbers (``exit_1`` … ``exit_n``) when some are left
    out, so ``exits=(1, 3)`` builds ``exit_1`` and ``exit_3`` (the Table V ablation).
    """
    if isinstance(exits, bool):
        return tuple(range(1, num_exits + 1)) if exits else ()
    chosen = tuple(exits)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= num_exits
           for i in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"exits must be True, False or distinct exit numbers in "
                         f"1..{num_exits}, got {exits!r}")
    return tuple(sorted(chosen))


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2×2 max pool, stride 2, of NHWC ``x`` (B, H, W, C) → (B, H/2, W/2, C).

    A reshape and a max over the two window axes: the same values as
    ``nn.max_pool(x, (2, 2), strides=(2, 2))``, but its gradient is elementwise
    (``g`` where an input equals its window's max, shared on exact ties) where
    ``nn.max_pool``'s builds four int32 index tensors of the input's size and
    scatters; on CPU that took 45 % of a quick-width VGG-8 step (docs/studies/cpu_conv.md).
    Ties only occur at the zeros of the ReLU before each pool, whose gradient is
    zero either way. Odd H or W fall back to ``nn.max_pool`` (last row/column dropped).
    """
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    windows = (b, h // 2, 2, w // 2, 2, c)
    sharding = jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is not None and any(axis is not None for axis in spec):
        # An explicitly sharded batch (data parallelism) keeps its sharding: each
        # of B, H, W, C keeps its own, and the two window axes are whole.
        bs, hs, ws, cs = tuple(spec) + (None,) * (4 - len(spec))
        out = NamedSharding(sharding.mesh, P(bs, hs, None, ws, None, cs))
        return lax.reshape(x, windows, out_sharding=out).max(axis=(2, 4))
    return x.reshape(windows).max(axis=(2, 4))


class VGG8(nn.Module):
    """VGG-8 with three exits (Table I); ``exits`` as in :func:`exit_numbers`.

    ``apply(variables, x (B, 32, 32, C), train=False) -> (logits (B, K), exit_logits)``,
    ``exit_logits`` a tuple of ``(B, K)``, shallowest first; float32 unless ``dtype``."""

    num_exits: ClassVar[int] = 3
    num_classes: int = 10
    exits: bool | tuple[int, ...] = True
    width: float = 1.0
    dtype: Any = jnp.float32
    backward_micro_batch: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = functools.partial(_channels, width=self.width)
        conv = functools.partial(ConvBN, dtype=self.dtype,
                                 backward_micro_batch=self.backward_micro_batch)
        head = functools.partial(
            ExitHead, hidden=c(512), num_classes=self.num_classes, dtype=self.dtype
        )
        x = x.astype(self.dtype)
        taps = []
        x = conv(c(64))(x, train)
        taps.append((x, 6))
        x = max_pool_2x2(conv(c(128))(x, train))
        taps.append((x, 4))
        x = conv(c(256))(x, train)
        x = max_pool_2x2(conv(c(256))(x, train))
        taps.append((x, 3))
        x = conv(c(512))(x, train)
        x = max_pool_2x2(conv(c(512))(x, train))
        x = x.reshape((x.shape[0], -1))
        dense = functools.partial(nn.Dense, kernel_init=kaiming_fan_out, dtype=self.dtype)
        x = nn.relu(dense(c(1024))(x))
        logits = dense(self.num_classes)(x)
        chosen = exit_numbers(self.exits, self.num_exits)
        exit_logits = tuple(
            head(pool_size=size, name=f"{EXIT_PREFIX}{i + 1}")(tap)
            for i, (tap, size) in enumerate(taps) if i + 1 in chosen
        )
        return logits.astype(jnp.float32), tuple(z.astype(jnp.float32) for z in exit_logits)


class BasicBlock(nn.Module):
    """ResNet basic block with identity or 1×1-conv shortcut."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    backward_micro_batch: int | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        conv = functools.partial(ConvBN, dtype=self.dtype,
                                 backward_micro_batch=self.backward_micro_batch)
        y = conv(self.features, stride=self.stride)(x, train)
        y = conv(self.features, relu=False)(y, train)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, kernel=1, stride=self.stride, relu=False)(x, train)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet with exits after the stem and after stages 1–3.

    ``exits`` as in :func:`exit_numbers`.
    """

    num_exits: ClassVar[int] = 4
    num_classes: int = 10
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    exits: bool | tuple[int, ...] = True
    width: float = 1.0
    dtype: Any = jnp.float32
    backward_micro_batch: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = functools.partial(_channels, width=self.width)
        head = functools.partial(
            ExitHead, hidden=c(512), num_classes=self.num_classes, dtype=self.dtype
        )
        micro = self.backward_micro_batch
        x = ConvBN(c(64), dtype=self.dtype, backward_micro_batch=micro)(
            x.astype(self.dtype), train)
        taps = [x]
        for stage, num_blocks in enumerate(self.stage_sizes):
            features = c(64 * 2**stage)
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(features, stride, dtype=self.dtype,
                               backward_micro_batch=micro)(x, train)
            taps.append(x)
        x = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=kaiming_fan_out, dtype=self.dtype)(x)
        chosen = exit_numbers(self.exits, self.num_exits)
        exit_logits = tuple(
            head(pool_size=exit_pool_size(tap.shape[1]), name=f"{EXIT_PREFIX}{i + 1}")(tap)
            for i, tap in enumerate(taps[:4]) if i + 1 in chosen
        )
        return logits.astype(jnp.float32), tuple(z.astype(jnp.float32) for z in exit_logits)


EXIT_POOL_SIZES = {32: 6, 16: 4, 8: 3}  # tap resolution -> pool size (Table I)


def exit_pool_size(spatial: int) -> int:
    """Exit pool size by tap resolution (Table I): 32→6, 16→4, 8→3; another resolution
    ``ceil(3·spatial/8)`` (28→11, 64→24). Kept as first released: a checkpoint's exit
    kernels have these sizes (``with_exits(pool_sizes=...)`` chooses others)."""
    return EXIT_POOL_SIZES.get(spatial, max(1, math.ceil(spatial * 3 / 8)))


class ResNet18(ResNet):
    """ResNet-18: four stages of two basic blocks (a class, so ``ResNet18.num_exits`` works).

    ``apply(variables, x (B, 32, 32, C), train=False) -> (logits (B, K), exit_logits)``,
    four exits, as :class:`VGG8`."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)

MODELS = {"vgg8": VGG8, "resnet18": ResNet18}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A model by name (``vgg8`` or ``resnet18``); ``kwargs``: ``exits``, ``width``,
    ``dtype``, ``backward_micro_batch`` (:class:`VGG8`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return MODELS[name](num_classes=num_classes, **kwargs)
