"""The models' conv (micro-batched backward, shifted-sum forward of one-channel inputs on
CPU) computes the same function and gradients as ``lax.conv_general_dilated``."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import numpy_variables
from jax import lax

from neft_jax import conv as conv_lib
from neft_jax.conv import (
    CPU_BACKWARD_MICRO_BATCH,
    micro_batched_conv,
    model_conv,
    resolve_backward_micro_batch,
    shifted_sum_conv,
)
from neft_jax.harness.config import ExperimentConfig
from neft_jax.models import create_model

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.fixture
def any_map_size(monkeypatch):
    """Micro-batch every conv, however small its output map (tests use small maps)."""
    monkeypatch.setattr(conv_lib, "MIN_ROWS", 1)


def _value_and_grads(conv, x, w, cotangent, stride, padding):
    def loss(x, w):
        y = conv(x, w, (stride, stride), padding, dimension_numbers=NHWC)
        return jnp.sum(y * cotangent), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
    return y, grads


def _case(batch, size, cin, cout, kernel, stride, seed=0):
    """Inputs as NumPy arrays: making them compiles nothing (a jax.random draw at each new
    shape is a program of its own)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, size, size, cin)).astype(np.float32)
    w = (rng.standard_normal((kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
         ).astype(np.float32)
    out = -(-size // stride)
    cotangent = rng.standard_normal((batch, out, out, cout)).astype(np.float32)
    return x, w, cotangent


def _assert_close(got, want, rtol=1e-5):
    """Max |got - want| <= rtol × max |want|, leaf by leaf (in NumPy: no eager programs)."""
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        chex.assert_equal_shape([g, r])
        g, r = np.asarray(g), np.asarray(r)
        scale = float(np.max(np.abs(r))) + 1e-12
        assert float(np.max(np.abs(g - r))) <= rtol * scale


# (batch, micro, stride, kernel, padding): each stride, kernel and padding, an uneven last
# micro-batch, one image per micro-batch, and a micro-batch as large as the batch (whole).
FORWARD_CASES = (
    (11, 4, 1, 3, "SAME"),  # 4 + 4 + 3
    (7, 1, 2, 3, "VALID"),  # 7 micro-batches of one image
    (6, 3, 2, 1, "SAME"),  # 3 + 3
    (5, 2, 1, 1, "VALID"),  # 2 + 2 + 1
    (3, 6, 2, 3, "SAME"),  # micro-batch > batch: the whole conv
    (1, 1, 1, 3, "VALID"),  # one image
)


@pytest.mark.usefixtures("any_map_size")
def test_forward_and_gradients_match_the_whole_batch_conv():
    """Every case in one jitted program: one compilation instead of one per case (and no
    op-by-op programs)."""
    inputs = []
    for i, (batch, _, stride, kernel, padding) in enumerate(FORWARD_CASES):
        x, w, _ = _case(batch, 10, 3, 4, kernel, stride, seed=i)
        y_shape = jax.eval_shape(functools.partial(
            lax.conv_general_dilated, window_strides=(stride, stride), padding=padding,
            dimension_numbers=NHWC), x, w).shape
        cotangent = np.random.default_rng(9 + i).standard_normal(y_shape).astype(np.float32)
        inputs.append((x, w, cotangent))

    @jax.jit
    def both(inputs):
        out = []
        for (x, w, ct), (_, micro, stride, _, pad) in zip(inputs, FORWARD_CASES, strict=True):
            out.append((_value_and_grads(lax.conv_general_dilated, x, w, ct, stride, pad),
                        _value_and_grads(micro_batched_conv(micro), x, w, ct, stride, pad)))
        return out

    for case, (want, got) in zip(FORWARD_CASES, both(inputs), strict=True):
        np.testing.assert_array_equal(got[0], want[0], err_msg=str(case))  # the same forward
        _assert_close(got[1], want[1])


class MicroBatchedConvTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_uneven_last_micro_batch(self):
        x, w, cotangent = _case(10, 32, 4, 6, 3, 1)  # 32×32 maps: 10 = 4 + 4 + 2
        fn = self.variant(functools.partial(_value_and_grads, stride=1, padding="SAME"),
                          static_argnums=(0,))
        want = fn(lax.conv_general_dilated, x, w, cotangent)
        got = fn(micro_batched_conv(4), x, w, cotangent)
        _assert_close(got, want)


def test_gradient_is_a_sum_over_micro_batches_in_the_jaxpr():
    x, w, cotangent = _case(8, 32, 2, 3, 3, 1)
    grad = jax.grad(lambda w: jnp.sum(micro_batched_conv(2)(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC) * cotangent))
    text = str(jax.make_jaxpr(grad)(w))
    assert text.count("conv_general_dilated") >= 1 + 2 * 4  # forward + ≥ 2 per micro-batch
    whole = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC) * cotangent))
    assert str(jax.make_jaxpr(whole)(w)).count("conv_general_dilated") < text.count(
        "conv_general_dilated")


def _pieces(batch, size, micro):
    """Micro-batches of the backward pass, read from the gradient's jaxpr: the whole
    conv's gradient holds 2 convs (forward, filter gradient); a micro-batched one holds
    the forward plus 3 per piece (its traced forward, input and filter gradient)."""
    x, w, _ = _case(batch, size, 2, 3, 3, 1)
    grad = jax.grad(lambda w: jnp.sum(micro_batched_conv(micro)(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC)))
    convs = str(jax.make_jaxpr(grad)(w)).count("conv_general_dilated")
    return 1 if convs == 2 else (convs - 1) // 3


def test_micro_batches_hold_at_least_min_rows_output_pixels():
    assert conv_lib.MIN_ROWS == 1024
    assert _pieces(32, 32, 8) == 4  # 32×32: 8 images (8192 pixels) per piece
    assert _pieces(32, 8, 8) == 2  # 8×8: 16 images (1024 pixels) per piece
    assert _pieces(32, 4, 8) == 1  # 4×4: 64 images > batch: whole
    assert _pieces(4, 32, 8) == 1  # batch not larger than the micro-batch: whole


@pytest.mark.usefixtures("any_map_size")
def test_gradients_match_under_vmap_over_a_run_axis():
    x, w, cotangent = _case(6, 16, 2, 3, 3, 1)
    ws = np.stack([w, 2 * w])

    def grads(conv, x, ws, cotangent):
        def one(w):
            return jax.grad(lambda w: jnp.sum(conv(
                x, w, (1, 1), "SAME", dimension_numbers=NHWC) * cotangent))(w)
        return jax.vmap(one)(ws)

    @jax.jit  # both in one program
    def both(x, ws, cotangent):
        return (grads(micro_batched_conv(2), x, ws, cotangent),
                grads(lax.conv_general_dilated, x, ws, cotangent))

    _assert_close(*both(x, ws, cotangent))


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "16"])
def test_micro_batch_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="micro_batch"):
        micro_batched_conv(bad)


def test_resolve_picks_by_backend_and_honours_overrides():
    assert resolve_backward_micro_batch(None, "cpu") == CPU_BACKWARD_MICRO_BATCH
    assert resolve_backward_micro_batch(None, "gpu") is None
    assert resolve_backward_micro_batch(None, "tpu") is None
    assert resolve_backward_micro_batch(0, "cpu") is None
    assert resolve_backward_micro_batch(8, "gpu") == 8
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="backward_micro_batch"):
            resolve_backward_micro_batch(bad, "cpu")


@pytest.mark.parametrize("name", ["vgg8", "resnet18"])
def test_models_train_the_same_with_micro_batched_backward(name):
    """Both models' loss and gradients at the same weights, in one jitted program."""
    x = np.random.default_rng(1).standard_normal((12, 32, 32, 1)).astype(np.float32)
    whole, micro = (create_model(name, 10, exits=True, width=0.0625, backward_micro_batch=m)
                    for m in (None, 4))

    def value_and_grad(model, variables, x):
        def loss(params):
            (logits, exits), _ = model.apply({**variables, "params": params}, x, train=True,
                                             mutable=["batch_stats"])
            return jnp.mean(jax.nn.log_softmax(logits)[:, 0]) + sum(jnp.mean(e) for e in exits)

        return jax.value_and_grad(loss)(variables["params"])

    variables = numpy_variables(whole, x[:1].shape)  # the weights don't matter: no init
    chex.assert_trees_all_equal_structs(variables, numpy_variables(micro, x[:1].shape))

    @jax.jit
    def both(variables, x):
        return value_and_grad(whole, variables, x), value_and_grad(micro, variables, x)

    (loss_whole, grads_whole), (loss_micro, grads_micro) = both(variables, x)
    chex.assert_trees_all_equal_structs(grads_whole, grads_micro)
    np.testing.assert_allclose(loss_micro, loss_whole, rtol=1e-6)
    _assert_close(grads_micro, grads_whole, rtol=1e-4)


def test_config_validates_and_resolves_the_micro_batch():
    assert ExperimentConfig(backward_micro_batch=0).effective_backward_micro_batch is None
    assert ExperimentConfig(backward_micro_batch=8).effective_backward_micro_batch == 8
    expected = CPU_BACKWARD_MICRO_BATCH if jax.default_backend() == "cpu" else None
    assert ExperimentConfig().effective_backward_micro_batch == expected
    assert ExperimentConfig().model_for("irs", 10).backward_micro_batch == expected
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="backward_micro_batch"):
            ExperimentConfig(backward_micro_batch=bad)


# (batch, cout, stride, kernel, size, padding, micro): each stride, kernel, padding form
# (named, symmetric and asymmetric explicit), odd and even maps, with and without micro.
ONE_CHANNEL_CASES = (
    (2, 3, 1, 3, 8, "SAME", None),
    (3, 1, 2, 5, 9, "VALID", 2),
    (1, 6, 2, 3, 7, ((2, 0), (0, 1)), None),
    (4, 2, 1, 1, 5, ((1, 1), (1, 1)), 2),
    (2, 4, 2, 1, 6, "SAME", 2),
    (1, 5, 1, 5, 6, "SAME", None),
)


def test_one_channel_conv_matches_xla_in_value_and_gradients():
    """Every case in one jitted program (one compilation; no op-by-op programs)."""
    inputs = []
    for i, (batch, cout, stride, kernel, size, padding, _) in enumerate(ONE_CHANNEL_CASES):
        x, w, _ = _case(batch, size, 1, cout, kernel, stride, seed=i)
        strides = (stride, stride)
        want_shape = jax.eval_shape(functools.partial(
            lax.conv_general_dilated, window_strides=strides, padding=padding,
            dimension_numbers=NHWC), x, w).shape
        assert jax.eval_shape(functools.partial(
            shifted_sum_conv, window_strides=strides, padding=padding), x, w).shape == want_shape
        cotangent = np.random.default_rng(5 + i).standard_normal(want_shape).astype(np.float32)
        inputs.append((x, w, cotangent))

    @jax.jit
    def all_cases(inputs):
        out = []
        for (x, w, ct), case in zip(inputs, ONE_CHANNEL_CASES, strict=True):
            _, _, stride, _, _, pad, micro = case
            out.append((_value_and_grads(model_conv(micro), x, w, ct, stride, pad),
                        _value_and_grads(lax.conv_general_dilated, x, w, ct, stride, pad),
                        shifted_sum_conv(x, w, (stride, stride), pad)))
        return out

    for got, want, shifted in all_cases(inputs):
        _assert_close(got, want)
        chex.assert_trees_all_close(shifted, want[0], atol=1e-5, rtol=1e-5)


def _convs_in(fn, *args) -> int:
    return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the shifted sum is the CPU path")
def test_one_channel_forward_is_a_shifted_sum_on_cpu_and_the_rest_is_xla():
    conv = model_conv(None)
    one = np.ones((2, 8, 8, 1), np.float32)  # NumPy inputs: tracing compiles nothing
    three = np.ones((2, 8, 8, 3), np.float32)
    w1, w3 = np.ones((3, 3, 1, 4), np.float32), np.ones((3, 3, 3, 4), np.float32)

    def forward(x, w):
        return conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)

    assert _convs_in(forward, one, w1) == 0  # no XLA conv for one input channel
    assert _convs_in(forward, three, w3) == 1
    assert _convs_in(forward, one.astype(jnp.bfloat16), w1.astype(jnp.bfloat16)) == 1
    # Its gradients are XLA's conv (the filter gradient; the input's is dropped by XLA).
    assert _convs_in(jax.grad(lambda w: jnp.sum(forward(one, w))), w1) >= 1


def test_a_noisy_kernel_made_in_the_same_program_gives_the_same_layer():
    """The kernel reaches the shifted sum through an exact identity product."""
    x, w, _ = _case(3, 9, 1, 5, 3, 1)

    def layer(conv, x, w, key):
        noisy = w + 0.3 * jax.random.normal(key, w.shape)
        return conv(x, noisy, (1, 1), "SAME", dimension_numbers=NHWC)

    @jax.jit  # both layers in one program
    def both(x, w, key):
        return layer(model_conv(None), x, w, key), layer(lax.conv_general_dilated, x, w, key)

    chex.assert_trees_all_close(*both(x, w, jax.random.key(2)), atol=1e-5)
