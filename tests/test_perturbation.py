import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neft_jax import DeviceModel, perturb
from neft_jax.perturbation import under


def _uniform_kernel(key, shape=(512, 1024)):
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("normalisation", ["range", "level"])
@pytest.mark.parametrize("preset", ["RRAM1", "FeFET6"])
def test_noise_std_matches_spec_inside_and_outside_band(normalisation, preset):
    w = _uniform_kernel(jax.random.key(0)) * 0.5
    device = DeviceModel.preset(preset, sigma=0.3, normalisation=normalisation)
    noisy = perturb({"kernel": w}, jax.random.key(1), device)["kernel"]
    delta = np.asarray(noisy - w)
    scale = float(jnp.max(jnp.abs(w)))
    ratio = np.abs(np.asarray(w)) / scale
    in_band = (ratio > 0.25) & (ratio < 0.75)
    k = device.state_factor
    base = 0.3 / np.sqrt(0.4 * k * k + 0.6) * device.bit_weight_norm * scale
    np.testing.assert_allclose(delta[in_band].std(), base * k, rtol=0.03)
    np.testing.assert_allclose(delta[~in_band].std(), base, rtol=0.03)
    np.testing.assert_allclose(delta.mean(), 0.0, atol=base * 0.02)


@pytest.mark.parametrize("normalisation", ["range", "level"])
def test_layer_and_model_scale(normalisation):
    params = {
        "a": {"kernel": _uniform_kernel(jax.random.key(0)) * 0.1},
        "b": {"kernel": _uniform_kernel(jax.random.key(1)) * 2.0},
    }
    for scale_mode in ("layer", "model"):
        device = DeviceModel(0.2, scale=scale_mode, normalisation=normalisation)
        noisy = perturb(params, jax.random.key(2), device)
        model_scale = float(jnp.max(jnp.abs(params["b"]["kernel"])))
        for name in ("a", "b"):
            w = params[name]["kernel"]
            layer_scale = float(jnp.max(jnp.abs(w)))
            scale = layer_scale if scale_mode == "layer" else model_scale
            std = float(jnp.std(noisy[name]["kernel"] - w))
            factor = 0.7776 if normalisation == "range" else 0.2592
            np.testing.assert_allclose(std, 0.2 * factor * scale, rtol=0.03)


def _host_normal(seed, shape):
    """Standard normal weights drawn on the host: an eager ``jax.random.normal`` compiles a
    program per shape (≈ 1–3 s each on XLA:CPU), and these are only test inputs."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _flax_like_params(seed):
    return {
        "Conv_0": {"kernel": _host_normal((seed, 1), (3, 3, 4, 8))},
        "Conv_1": {"kernel": _host_normal((seed, 2), (3, 3, 4, 8))},
        "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
        "Dense_0": {"kernel": _host_normal((seed, 3), (16, 4)), "bias": jnp.ones(4)},
    }


def test_only_kernels_change_and_non_kernels_are_bit_identical():
    params = _flax_like_params(0)
    noisy = perturb(params, jax.random.key(1), DeviceModel(0.3))
    for module in ("Conv_0", "Conv_1", "Dense_0"):
        assert not np.array_equal(noisy[module]["kernel"], params[module]["kernel"])
    assert noisy["BatchNorm_0"]["scale"] is params["BatchNorm_0"]["scale"]
    assert noisy["BatchNorm_0"]["bias"] is params["BatchNorm_0"]["bias"]
    assert noisy["Dense_0"]["bias"] is params["Dense_0"]["bias"]


def test_keys_determine_noise_and_equal_shaped_leaves_differ():
    params = _flax_like_params(0)
    device = DeviceModel(0.3)
    a = perturb(params, jax.random.key(7), device)
    b = perturb(params, jax.random.key(7), device)
    c = perturb(params, jax.random.key(8), device)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a["Conv_0"]["kernel"], c["Conv_0"]["kernel"])
    d0 = a["Conv_0"]["kernel"] - params["Conv_0"]["kernel"]
    d1 = a["Conv_1"]["kernel"] - params["Conv_1"]["kernel"]
    assert not np.allclose(
        d0 / jnp.max(jnp.abs(params["Conv_0"]["kernel"])),
        d1 / jnp.max(jnp.abs(params["Conv_1"]["kernel"])),
    )


def test_sigma_zero_is_identity():
    params = _flax_like_params(0)
    assert perturb(params, jax.random.key(1), DeviceModel(0.0)) is params
    traced = jax.jit(perturb)(params, jax.random.key(1), DeviceModel(0.0))
    chex.assert_trees_all_equal(traced, params)


class EqxLikeLinear(NamedTuple):
    weight: jax.Array
    bias: jax.Array


@dataclasses.dataclass
class Block:
    layers: list


jax.tree_util.register_dataclass(Block, data_fields=["layers"], meta_fields=[])


def test_foreign_pytree_equinox_style():
    params = Block(
        [
            EqxLikeLinear(jnp.ones((32, 64)), jnp.ones(64)),
            EqxLikeLinear(jnp.ones((64, 8)), jnp.ones(8)),
        ]
    )
    noisy = perturb(params, jax.random.key(0), DeviceModel(0.5))
    assert isinstance(noisy, Block) and isinstance(noisy.layers[0], EqxLikeLinear)
    assert not np.array_equal(noisy.layers[0].weight, params.layers[0].weight)
    assert noisy.layers[1].bias is params.layers[1].bias


def test_nnx_style_value_wrapper_path():
    params = {"linear": {"kernel": {"value": jnp.ones((8, 8))}, "bias": {"value": jnp.ones(8)}}}
    noisy = perturb(params, jax.random.key(0), DeviceModel(0.5))
    assert not np.array_equal(
        noisy["linear"]["kernel"]["value"], params["linear"]["kernel"]["value"]
    )
    assert noisy["linear"]["bias"]["value"] is params["linear"]["bias"]["value"]


def test_custom_where():
    params = _flax_like_params(0)
    noisy = perturb(params, jax.random.key(1), DeviceModel(0.3), where=under("Dense"))
    assert noisy["Conv_0"]["kernel"] is params["Conv_0"]["kernel"]
    assert not np.array_equal(noisy["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    only_bias = perturb(
        params,
        jax.random.key(1),
        DeviceModel(0.3),
        where=lambda path, leaf: path[-1] == "bias" and leaf.ndim == 1 and path[0] == "Dense_0",
    )
    assert not np.array_equal(only_bias["Dense_0"]["bias"], params["Dense_0"]["bias"])


class TestJitAndVmap(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_matches_eager(self):
        params = _flax_like_params(0)
        device = DeviceModel.preset("FeFET2", 0.3)
        fn = self.variant(lambda p, k, d: perturb(p, k, d))
        eager = perturb(params, jax.random.key(3), device)
        chex.assert_trees_all_close(
            fn(params, jax.random.key(3), device), eager, rtol=1e-6, atol=1e-6
        )

    def test_vmap_over_keys_matches_loop(self):
        params = _flax_like_params(0)
        device = DeviceModel(0.3)
        keys = jax.random.split(jax.random.key(5), 4)
        batched = jax.vmap(lambda k: perturb(params, k, device))(keys)
        for i, key in enumerate(keys):
            single = perturb(params, key, device)
            chex.assert_trees_all_close(
                jax.tree.map(lambda a, i=i: a[i], batched), single, rtol=1e-6, atol=1e-6
            )

    def test_sigma_traced_no_retrace(self):
        params = _flax_like_params(0)

        @jax.jit
        @chex.assert_max_traces(n=1)
        def noisy(p, k, d):
            return perturb(p, k, d)

        for sigma in (0.1, 0.2, 0.3):
            noisy(params, jax.random.key(0), DeviceModel(sigma))


def test_only_modules_named_exit_n_are_exits():
    """The exit heads are the modules VGG8, ResNet18 and with_exits name ``exit_<n>``: a
    module of the user's own named ``exit_gate`` is backbone, noised in training and in
    Monte Carlo like every other kernel (it was silently left clean before)."""
    from neft_jax.models import backbone_kernels, exit_kernels

    w = jnp.ones((4, 4))
    params = {"exit_gate": {"kernel": w}, "exit_2": {"Dense_0": {"kernel": w}},
              "exit_12": {"kernel": w}, "block": {"exit_3x": {"kernel": w}}}
    backbone = perturb(params, jax.random.key(0), DeviceModel(0.4), where=backbone_kernels)
    assert not np.array_equal(backbone["exit_gate"]["kernel"], w)
    assert not np.array_equal(backbone["block"]["exit_3x"]["kernel"], w)
    assert backbone["exit_2"]["Dense_0"]["kernel"] is w and backbone["exit_12"]["kernel"] is w
    exits = perturb(params, jax.random.key(0), DeviceModel(0.4), where=exit_kernels)
    assert exits["exit_gate"]["kernel"] is w and exits["block"]["exit_3x"]["kernel"] is w
    assert not np.array_equal(exits["exit_12"]["kernel"], w)


def test_straight_through_gradient():
    params = {"dense": {"kernel": _host_normal(0, (6, 3)), "bias": jnp.zeros(3)}}
    x = _host_normal(1, (5, 6))

    def loss(p):
        return jnp.sum(jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"]) ** 2)

    device = DeviceModel(0.5)
    key = jax.random.key(2)
    grad_through = jax.grad(lambda p: loss(perturb(p, key, device)))(params)
    noisy = jax.lax.stop_gradient(perturb(params, key, device))
    grad_at_noisy = jax.grad(loss)(noisy)
    chex.assert_trees_all_close(grad_through, grad_at_noisy, rtol=1e-6, atol=1e-6)
    assert not np.allclose(
        grad_at_noisy["dense"]["kernel"], jax.grad(loss)(params)["dense"]["kernel"]
    )


@settings(max_examples=25, deadline=None)
@given(
    c=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**16),
    preset=st.sampled_from(["RRAM1", "FeFET2", "RRAM4", "FeFET6"]),
)
def test_perturb_is_positively_homogeneous(c, seed, preset):
    w = _host_normal(seed, (16, 16))
    device = DeviceModel.preset(preset, 0.3)
    key = jax.random.key(seed + 1)
    scaled = perturb({"kernel": c * w}, key, device)["kernel"]
    np.testing.assert_allclose(
        scaled, c * perturb({"kernel": w}, key, device)["kernel"], rtol=1e-4, atol=1e-5 * c
    )


def test_band_edges_are_outside_the_band():
    # |w|/scale exactly 0.25 and 0.75 get the base noise; 0.5 gets k times it.
    n = 20000
    w = jnp.concatenate([jnp.full(n, 0.25), jnp.full(n, 0.75), jnp.full(n, 0.5), jnp.ones(1)])
    w = w.reshape(1, -1)
    device = DeviceModel.preset("FeFET6", 0.3)
    delta = np.asarray(perturb({"kernel": w}, jax.random.key(0), device)["kernel"] - w)[0]
    base = device.noise_std(1.0)
    np.testing.assert_allclose(delta[:n].std(), base, rtol=0.05)
    np.testing.assert_allclose(delta[n : 2 * n].std(), base, rtol=0.05)
    np.testing.assert_allclose(delta[2 * n : 3 * n].std(), 6 * base, rtol=0.05)


@pytest.mark.parametrize("key_kind", ["typed", "raw"])
def test_fused_draws_equal_drawing_each_leaf_from_its_own_key(key_kind):
    """perturb draws every leaf in one fused kernel (neft_jax.draws); each leaf's normals
    are bit-identical to jax.random.normal(fold_in(key, i), shape), eagerly, under jit and
    under vmap over keys, so published noise instances are unchanged."""
    from neft_jax.draws import standard_normals

    key = jax.random.key(7) if key_kind == "typed" else jax.random.PRNGKey(7)
    shapes = [(3, 3, 1, 8), (5,), (17, 9), (1,), (3, 3, 8, 33)]

    def fused(k):
        return standard_normals([jax.random.fold_in(k, i) for i in range(len(shapes))], shapes)

    def per_leaf(k):
        return [jax.random.normal(jax.random.fold_in(k, i), s) for i, s in enumerate(shapes)]

    for got in (fused(key), jax.jit(fused)(key)):
        chex.assert_trees_all_equal(got, per_leaf(key))
    keys = jax.random.split(key, 3)
    # Under vmap, each key's draws are its own per-leaf draws (stacked: the programs above).
    by_key = [per_leaf(k) for k in keys]
    chex.assert_trees_all_equal(jax.jit(jax.vmap(fused))(keys),
                                [jnp.stack(leaves) for leaves in zip(*by_key, strict=True)])
    assert standard_normals([], []) == []
