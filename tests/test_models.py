import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import numpy_variables

from neft_jax.models import (
    MODELS,
    VGG8,
    ResNet18,
    adaptive_avg_pool,
    create_model,
    exit_numbers,
    kaiming_fan_out,
    max_pool_2x2,
)


def _abstract_init(model, shape):
    """``model.init``'s variables as shapes and dtypes (abstract evaluation: no compiling)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


def _param_shapes(model, channels=3):
    variables = _abstract_init(model, (2, 32, 32, channels))
    return jax.tree.map(lambda a: a.shape, variables["params"])


def _kernels(tree, prefix=()):
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            out.update(_kernels(value, prefix + (name,)))
        elif name == "kernel":
            out["/".join(prefix)] = value
    return out


def test_vgg8_kernel_shapes_match_table_1():
    kernels = _kernels(_param_shapes(VGG8(10), channels=1))
    convs = [kernels[f"ConvBN_{i}/Conv_0"] for i in range(6)]
    assert convs == [
        (3, 3, 1, 64),
        (3, 3, 64, 128),
        (3, 3, 128, 256),
        (3, 3, 256, 256),
        (3, 3, 256, 512),
        (3, 3, 512, 512),
    ]
    assert kernels["Dense_0"] == (8192, 1024) and kernels["Dense_1"] == (1024, 10)
    assert kernels["exit_1/Dense_0"] == (2304, 512) and kernels["exit_1/Dense_1"] == (512, 10)
    assert kernels["exit_2/Dense_0"] == (2048, 512)
    assert kernels["exit_3/Dense_0"] == (2304, 512)
    assert len(kernels) == 6 + 2 + 3 * 2


def test_resnet18_kernel_shapes_match_table_1():
    kernels = _kernels(_param_shapes(ResNet18(100)))
    conv_kernels = {k: v for k, v in kernels.items() if len(v) == 4}
    # stem + 8 blocks × 2 convs + 3 projection shortcuts
    assert len(conv_kernels) == 1 + 16 + 3
    assert kernels["ConvBN_0/Conv_0"] == (3, 3, 3, 64)
    shortcuts = sorted(v for v in conv_kernels.values() if v[:2] == (1, 1))
    assert shortcuts == [(1, 1, 64, 128), (1, 1, 128, 256), (1, 1, 256, 512)]
    assert kernels["Dense_0"] == (512, 100)
    for i, fan_in in enumerate((2304, 2304, 2048, 2304), start=1):
        assert kernels[f"exit_{i}/Dense_0"] == (fan_in, 512)
        assert kernels[f"exit_{i}/Dense_1"] == (512, 100)


def test_parameter_counts():
    def count(shapes):
        return sum(
            math.prod(s)
            for s in jax.tree.leaves(
                shapes, is_leaf=lambda x: isinstance(x, tuple)
            )
        )
    backbone = count(_param_shapes(VGG8(10, exits=False), channels=1))
    convs = 9 * (1 * 64 + 64 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512)
    bn = 2 * (64 + 128 + 256 + 256 + 512 + 512)
    dense = 8192 * 1024 + 1024 + 1024 * 10 + 10
    assert backbone == convs + bn + dense
    exits = count(_param_shapes(VGG8(10), channels=1)) - backbone
    assert exits == sum(f * 512 + 512 + 512 * 10 + 10 for f in (2304, 2048, 2304))


def _pytorch_adaptive_pool(x, out):
    """Direct loop over PyTorch's window rule."""
    b, h, w, c = x.shape
    y = np.zeros((b, out, out, c), np.float64)
    for i in range(out):
        h0, h1 = math.floor(i * h / out), math.ceil((i + 1) * h / out)
        for j in range(out):
            w0, w1 = math.floor(j * w / out), math.ceil((j + 1) * w / out)
            y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("size, out", [(32, 6), (16, 4), (8, 3), (7, 3)])
def test_adaptive_pool_matches_pytorch_rule(size, out):
    x = np.random.default_rng(0).normal(size=(2, size, size, 5)).astype(np.float32)
    np.testing.assert_allclose(
        adaptive_avg_pool(jnp.asarray(x), out), _pytorch_adaptive_pool(x, out), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2)])
def test_max_pool_2x2_matches_flax_in_value_and_gradient_after_relu(shape):
    """Same values as nn.max_pool, and the same gradient after a ReLU (ties at 0 included)."""
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    g = np.random.default_rng(1).normal(
        size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)

    def loss(pool, x, g):
        return jnp.sum(pool(nn.relu(x)) * g)

    def flax_pool(v):
        return nn.max_pool(v, (2, 2), strides=(2, 2))

    @jax.jit  # values and gradients of both in one program (not op by op)
    def both(x, g):
        return [(p(x), jax.grad(loss, argnums=1)(p, x, g)) for p in (max_pool_2x2, flax_pool)]

    (value, ours), (flax_value, theirs) = both(x, g)
    np.testing.assert_array_equal(value, flax_value)
    assert np.sum(x <= 0) > 0  # windows of ReLU zeros (ties) are exercised
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("model_cls, num_exits", [(VGG8, 3), (ResNet18, 4)])
@pytest.mark.parametrize("exits", [True, False])
def test_output_shapes(model_cls, num_exits, exits):
    """Shapes, dtypes and structures: abstract evaluation of init and apply (nothing compiles;
    tracing raises where a value would)."""
    model = model_cls(7, exits=exits, width=0.125)
    x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
    variables = _abstract_init(model, x.shape)
    logits, exit_logits = jax.eval_shape(functools.partial(model.apply, train=False),
                                         variables, x)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32
    assert isinstance(exit_logits, tuple)
    assert len(exit_logits) == (num_exits if exits else 0)
    assert all(z.shape == (3, 7) for z in exit_logits)
    # train mode updates batch statistics
    (_, _), updates = jax.eval_shape(functools.partial(
        model.apply, train=True, mutable=["batch_stats"]), variables, x)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )


def test_exits_do_not_change_backbone_output():
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 1)).astype(np.float32)
    with_exits = VGG8(10, width=0.125)
    variables = numpy_variables(with_exits, x.shape)  # any weights: no init
    backbone_only = {
        "params": {k: v for k, v in variables["params"].items() if not k.startswith("exit_")},
        "batch_stats": variables["batch_stats"],
    }

    @jax.jit  # both models in one program
    def both(variables, backbone_only, x):
        return (with_exits.apply(variables, x),
                VGG8(10, exits=False, width=0.125).apply(backbone_only, x))

    (logits, _), (logits_plain, exits) = both(variables, backbone_only, x)
    np.testing.assert_allclose(logits, logits_plain, rtol=1e-6)
    assert exits == ()


def test_kaiming_fan_out_init_scale():
    model = VGG8(10, exits=False)

    @jax.jit  # init in one program that keeps just this kernel (the rest is dead code)
    def kernel_of(key):
        return model.init(key, jnp.zeros((1, 32, 32, 1)))["params"]["ConvBN_4"]["Conv_0"]["kernel"]

    kernel = np.asarray(kernel_of(jax.random.key(0)))  # 3×3×256×512
    assert kernel.shape == (3, 3, 256, 512)
    np.testing.assert_allclose(float(np.std(kernel)), math.sqrt(2 / (9 * 512)), rtol=0.02)
    assert float(np.max(np.abs(kernel))) > 4 * math.sqrt(2 / (9 * 512))  # not truncated


def test_kaiming_fan_out_gives_flax_variance_scalings_bits():
    """The models' initializer draws through a program compiled at XLA optimisation level 1
    (faster to compile): its weights must be flax's ``variance_scaling(2, "fan_out",
    "normal")`` bit for bit, eagerly (the path an eager ``model.init`` takes) and for a raw
    uint32 key, or every seed would start from other weights; inside a jit it is flax's
    initializer jitted (a jitted init fuses the scaling, which moves a few last bits). A conv
    and a dense kernel (each reference draw compiles for 0.5-3 s at the default level)."""
    reference = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    for shape, key in (((3, 3, 1, 8), jax.random.key(3)), ((64, 10), jax.random.PRNGKey(3))):
        np.testing.assert_array_equal(kaiming_fan_out(key, shape), reference(key, shape))
    key, shape = jax.random.key(4), (64, 10)
    np.testing.assert_array_equal(jax.jit(lambda k: kaiming_fan_out(k, shape))(key),
                                  jax.jit(lambda k: reference(k, shape))(key))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    """dtypes: abstract evaluation of init and apply (nothing compiles)."""
    model = VGG8(10, width=0.125, dtype=jnp.bfloat16)
    variables = _abstract_init(model, (2, 32, 32, 1))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    logits, _ = jax.eval_shape(model.apply, variables,
                               jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32))
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_class_states_how_many_exits_it_builds(name):
    model = MODELS[name](num_classes=10, width=0.0625)
    variables = _abstract_init(model, (1, 32, 32, 1))  # the names alone: nothing compiles
    built = [k for k in variables["params"] if k.startswith("exit_")]
    assert len(built) == MODELS[name].num_exits


def test_create_model_rejects_unknown():
    with pytest.raises(ValueError, match="vgg8"):
        create_model("alexnet", 10)


@pytest.mark.parametrize("name,kept,expected_exits", [
    ("vgg8", (1, 3), ["exit_1", "exit_3"]),
    ("resnet18", (2, 4), ["exit_2", "exit_4"]),
])
def test_models_build_only_the_chosen_exits_with_their_table_numbers(name, kept, expected_exits):
    model = create_model(name, 10, exits=kept, width=0.0625)
    variables = _abstract_init(model, (1, 32, 32, 1))  # the names alone: nothing compiles
    assert sorted(k for k in variables["params"] if k.startswith("exit_")) == expected_exits
    full = create_model(name, 10, exits=True, width=0.0625)
    full_vars = numpy_variables(full, (1, 32, 32, 1))  # any weights: no init
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 1)).astype(np.float32)
    chosen_params = {k: v for k, v in full_vars["params"].items()
                     if not k.startswith("exit_") or k in expected_exits}

    @jax.jit  # both models in one program
    def both(full_vars, chosen_params, x):
        return full.apply(full_vars, x), model.apply({**full_vars, "params": chosen_params}, x)

    (_, all_exits), (_, some_exits) = both(full_vars, chosen_params, x)
    assert len(some_exits) == len(kept)
    for i, logits in zip(kept, some_exits, strict=True):
        np.testing.assert_allclose(logits, all_exits[i - 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exits", [(0,), (4,), (1, 1), (True,), ("1",)])
def test_bad_exit_numbers_are_rejected(exits):
    with pytest.raises(ValueError, match="exit numbers in 1..3"):
        exit_numbers(exits, 3)
