"""A researcher's own model at the edges the built-in models never reach: layers stacked by
``nn.scan``, tap names shared by several modules, labels outside [0, K), α and decay given
as arrays, NNX dropout, other exit resolutions, other meshes and one raw key."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import neft_jax
from neft_jax.losses import feedback_term
from neft_jax.models import exit_pool_size
from neft_jax.parallel import make_data_parallel_step


class ScannedLayer(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.Dense(8, use_bias=False, name="dense")(x), None


class ScannedStack(nn.Module):
    """Three Dense layers whose kernels share one (3, 8, 8) tensor (``nn.scan``)."""

    @nn.compact
    def __call__(self, x):
        stack = nn.scan(ScannedLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=3)
        x, _ = stack(name="layers")(x, None)
        return nn.Dense(3, name="head")(x)


def in_layers(path, leaf):
    return path[0] == "layers"


def test_layers_stacked_by_scan_each_get_their_own_max_abs_weight():
    params = ScannedStack().init(jax.random.key(0), jnp.ones((2, 8)))["params"]
    kernel = params["layers"]["dense"]["kernel"]
    params["layers"]["dense"]["kernel"] = kernel.at[0].multiply(10.0)  # layer 0 ten times larger
    keys = jax.random.split(jax.random.key(1), 400)

    def measured_std(device):
        noisy = jax.vmap(lambda k: neft_jax.perturb(params, k, device))(keys)
        noise = noisy["layers"]["dense"]["kernel"] - params["layers"]["dense"]["kernel"]
        return np.asarray(jnp.std(noise, axis=(0, 2, 3)))  # one std per layer

    expected = np.array([neft_jax.DeviceModel(sigma=0.4).noise_std(float(jnp.max(jnp.abs(w))))
                         for w in params["layers"]["dense"]["kernel"]])
    per_layer = measured_std(neft_jax.DeviceModel(sigma=0.4, stacked=in_layers))
    np.testing.assert_allclose(per_layer, expected, rtol=0.05)
    shared = measured_std(neft_jax.DeviceModel(sigma=0.4))  # one tensor, one max|W|
    np.testing.assert_allclose(shared, expected[0], rtol=0.05)
    head = neft_jax.perturb(params, keys[0], neft_jax.DeviceModel(sigma=0.4, stacked=in_layers))
    plain = neft_jax.perturb(params, keys[0], neft_jax.DeviceModel(sigma=0.4))
    np.testing.assert_array_equal(head["head"]["kernel"], plain["head"]["kernel"])
    with pytest.raises(TypeError, match="DeviceModel.stacked must be a function"):
        neft_jax.DeviceModel(stacked="layers")


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3))(x))  # auto-named Conv_0 in every block


class TwoBlocks(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Block()(x)
        x = Block()(x)
        x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))  # the backbone's own Conv_0
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def exit_input_size(taps) -> int:
    model = neft_jax.with_exits(TwoBlocks(), taps, 3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 16, 16, 1)))
    return shapes["params"]["exit_1"]["Dense_0"]["kernel"].shape[0]


def test_a_tap_is_found_by_its_path_and_a_name_several_modules_share_is_refused():
    assert exit_input_size(["Conv_0"]) == 3 * 3 * 6  # the backbone's own Conv_0: 8×8, pool 3
    assert exit_input_size(["Block_1/Conv_0"]) == 4 * 4 * 4  # 16×16, pool 4
    with pytest.raises(ValueError, match=r"no submodule of the backbone is named \['Block_9'\]"):
        exit_input_size(["Block_9"])


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Sequential([Block(), Block()])(x)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def test_a_bare_name_that_matches_modules_in_several_blocks_is_refused_with_their_paths():
    model = neft_jax.with_exits(Nested(), ["Conv_0"], 3)
    with pytest.raises(ValueError, match=r"the tap 'Conv_0' names 2 modules \(.*Conv_0, "
                                         r".*Conv_0\); give the one meant by its path"):
        model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


def mlp_state(alpha=None):
    return neft_jax.create_train_state(Mlp(), jax.random.key(0), (4, 5),
                                       neft_jax.create_optimizer(1e-2, 10),
                                       neft_jax.make_hparams(0.3, alpha=alpha))


def test_numpy_labels_outside_the_models_classes_are_refused_by_the_jitted_step():
    step = neft_jax.make_train_step(Mlp(), "noise")
    state, x = mlp_state(), np.ones((4, 5), np.float32)
    for labels in ([0, 1, 2, -1], [0, 1, 2, 3]):
        with pytest.raises(ValueError, match=r"class indices 0 … 2 \(the model gives 3 "):
            step(state, {"image": x, "label": np.array(labels, np.int32)}, jax.random.key(1))
    state, metrics = step(state, {"image": x, "label": np.array([0, 1, 2, 2], np.int32)},
                          jax.random.key(1))
    assert np.isfinite(metrics["loss"]) and int(state.step) == 1
    with pytest.raises(ValueError, match=r"a batch is \{'image'"):  # not a KeyError
        step(state, {"x": x, "label": np.array([0, 1, 2, 2], np.int32)}, jax.random.key(1))
    # Float or list labels: one line naming batch['label'] (optax's error named neither).
    for labels, got in ((np.array([0.0, 1, 2, 2], np.float32), "dtype float32"),
                        ([0, 1, 2, 2], "list")):
        with pytest.raises(ValueError, match=rf"batch\['label'\] must be an array of integer "
                                             rf"class indices \(B,\), got {got}"):
            step(state, {"image": x, "label": labels}, jax.random.key(1))


def test_device_labels_outside_the_models_classes_make_the_loss_nan_and_train_nothing():
    """Labels already on a device are not checked before the step (that would wait for
    them): -1 used to train toward class K-1 without a sign. Now any label outside [0, K)
    makes the step's loss NaN and its gradients zero (plain SGD: the weights stay)."""
    import optax

    step = neft_jax.make_train_step(Mlp(), "noise")
    state = neft_jax.create_train_state(Mlp(), jax.random.key(0), (4, 5), optax.sgd(0.1),
                                        neft_jax.make_hparams(0.3))
    x = jnp.ones((4, 5), jnp.float32)
    for labels in ([0, 1, 2, -1], [0, 1, 2, 3]):
        after, metrics = step(state, {"image": x, "label": jnp.array(labels)},
                              jax.random.key(1))
        assert np.isnan(metrics["loss"])
        assert all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(after.params), jax.tree.leaves(state.params), strict=True))
    after, metrics = step(state, {"image": x, "label": jnp.array([0, 1, 2, 2])},
                          jax.random.key(1))
    assert np.isfinite(metrics["loss"]) and not np.array_equal(
        jax.tree.leaves(after.params)[0], jax.tree.leaves(state.params)[0])


def test_an_nnx_models_where_sees_the_kernels_name_without_value():
    """``where``'s path names an NNX kernel ``(..., "kernel")`` as a dict of params does;
    it used to end in the variable wrapper's ``"value"``, and a rule on ``path[-1]``
    selected nothing."""

    class Two(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2 = nnx.Linear(5, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    model = Two(nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    seen = []
    noisy = neft_jax.perturb(state, jax.random.key(0), neft_jax.DeviceModel(0.4),
                             where=lambda path, leaf: seen.append(path) or path[-1] == "kernel")
    assert ("l1", "kernel") in seen and ("l2", "bias") in seen
    changed = {jax.tree_util.keystr(p): not np.array_equal(a, b) for (p, a), b in zip(
        jax.tree_util.tree_flatten_with_path(noisy)[0], jax.tree.leaves(state), strict=True)}
    assert [k for k, v in changed.items() if v] == ["['l1']['kernel'].value",
                                                    "['l2']['kernel'].value"]


@pytest.mark.parametrize("alpha", [jnp.float32(-1), np.array(np.nan), np.float64(-0.5),
                                   jnp.array([0.1, 0.2])])
def test_make_hparams_checks_alpha_given_as_an_array(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        neft_jax.make_hparams(0.4, alpha=alpha)


def test_a_number_as_the_step_device_and_decay_as_an_array_are_understood():
    with pytest.raises(ValueError, match="device is a template and its sigma must stay 0"):
        neft_jax.make_train_step(Mlp(), "noise", 0.4)
    z = [jnp.ones((2, 3)), 2 * jnp.ones((2, 3))]
    for decay in (np.float32(0.5), jnp.float32(0.5)):
        np.testing.assert_allclose(feedback_term(z, 0.1, decay), feedback_term(z, 0.1, 0.5))


class DropoutNet(nnx.Module):
    """Dropout, then a dense layer of ``out`` features (3: the classes)."""

    def __init__(self, rngs, out: int = 3):
        self.dense = nnx.Linear(5, out, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dense(self.drop(x))


class StackedDropoutNet(nnx.Module):
    """Three blocks made under nnx.split_rngs and run by nnx.scan: one dropout key each."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return DropoutNet(rngs, out=5)

        self.blocks = blocks(rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def through(x, block):
            return block(x)

        return self.head(through(x, self.blocks))


@pytest.mark.parametrize("net", [DropoutNet, StackedDropoutNet])
def test_nnx_dropout_follows_the_steps_key(net):
    model = net(nnx.Rngs(params=0, dropout=1))
    state = neft_jax.create_train_state(model, None, None, neft_jax.create_optimizer(1e-2, 10),
                                        neft_jax.make_hparams(0.0))
    step = neft_jax.make_train_step(model, "vanilla")
    batch = {"image": np.ones((16, 5), np.float32), "label": np.arange(16, dtype=np.int32) % 3}
    losses = [float(step(state, batch, jax.random.key(k))[1]["loss"]) for k in (0, 0, 7)]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_exit_pool_sizes_are_the_papers_table_and_the_documented_rule_elsewhere():
    """usage.md gives the rule; it stays as released, since checkpoints hold its sizes."""
    assert [exit_pool_size(s) for s in (32, 16, 8)] == [6, 4, 3]
    assert [exit_pool_size(s) for s in (28, 64, 1)] == [11, 24, 1]


def test_other_meshes_and_one_raw_key_are_named_in_one_line():
    test_set = neft_jax.make_test_set(np.ones((4, 5), np.float32), np.arange(4) % 3)
    params = Mlp().init(jax.random.key(0), jnp.ones((1, 5)))
    keys = jax.random.split(jax.random.key(0), 2)
    flat = np.array(jax.devices()[:1]).reshape(1, 1)
    with pytest.raises(ValueError, match=r"monte_carlo: the mesh must be 1-D"):
        neft_jax.monte_carlo(Mlp(), params, test_set, keys, 0.3,
                             mesh=jax.sharding.Mesh(flat, ("a", "b")))
    with pytest.raises(ValueError, match=r"batch of R PRNG keys, e.g. jax.random.split"):
        neft_jax.monte_carlo(Mlp(), params, test_set, jax.random.PRNGKey(0), 0.3)
    with pytest.raises(ValueError, match="needs one named 'data'"):
        make_data_parallel_step(lambda *a: a, jax.sharding.Mesh(flat, ("a", "b")))
    two_axes = jax.sharding.Mesh(flat, ("data", "model"))  # the batch goes over "data"
    assert make_data_parallel_step(lambda *a: a, two_axes) is not None
    # a 1-D mesh whose axis has another name than data_mesh's "data"
    step = make_data_parallel_step(neft_jax.make_train_step(Mlp(), "noise", jit=False),
                                   jax.make_mesh((1,), ("batch",)))
    state, metrics = step(mlp_state(), {"image": np.ones((4, 5), np.float32),
                                        "label": np.arange(4, dtype=np.int32) % 3},
                          jax.random.key(1))
    assert np.isfinite(metrics["loss"])
