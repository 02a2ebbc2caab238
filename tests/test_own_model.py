"""Training one's own model: linen without BatchNorm, NNX, a plain function, with every
method; IRS on a linen model with attached exits; evaluation that cannot lie."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import rbg_train_state
from flax import nnx

import neft_jax
from neft_jax.perturbation import not_under

_RNG = np.random.default_rng(0)  # NumPy data: making it compiles nothing
X = _RNG.standard_normal((32, 8, 8, 1)).astype(np.float32)
Y = (np.arange(32) % 3).astype(np.int32)
BATCH = {"image": X, "label": Y}
TX = neft_jax.create_optimizer(1e-2, 100)
HP = neft_jax.make_hparams(0.5, alpha=0.1)
NOISY_METHODS = ("noise", "noise_scaled", "irs", "ovf")


class PlainCNN(nn.Module):
    """No BatchNorm, a ``deterministic`` flag (dropout), logits only."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.Dropout(0.1)(x, deterministic=deterministic)
        x = nn.relu(nn.Conv(4, (3, 3), name="conv2")(x))
        return nn.Dense(3)(x.mean(axis=(1, 2)))


class NNXNet(nnx.Module):
    """BatchNorm, and one exit of its own: returns ``(logits, [z_1])``."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)
        self.exit_1 = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.norm(self.conv(x))).mean(axis=(1, 2))
        return self.head(h), [self.exit_1(h)]


def _apply(params, images):
    hidden = jnp.tanh(images.reshape(images.shape[0], -1) @ params["W1"] + params["b1"])
    return hidden @ params["W2"], [hidden @ params["exit_1"]["W"]]


PARAMS = {"W1": (0.3 * _RNG.standard_normal((64, 16))).astype(np.float32),
          "b1": np.zeros(16, np.float32),
          "W2": _RNG.standard_normal((16, 3)).astype(np.float32),
          "exit_1": {"W": _RNG.standard_normal((16, 3)).astype(np.float32)}}
FUNCTION_WEIGHTS = not_under("exit_", lambda path, leaf: str(path[-1]).startswith("W"))


@functools.cache
def _model(kind):
    """(model for the step, state, where) of each kind of user model, made once per file."""
    if kind == "linen":
        linen = neft_jax.with_exits(PlainCNN(), taps=["conv1"], num_classes=3)
        state = rbg_train_state(linen, X.shape, TX, HP, seed=1)  # one program (see helper)
        return linen, state, None
    if kind == "nnx":
        net = nnx.jit(lambda: NNXNet(nnx.Rngs(0)))()  # one program, not one per initializer
        return net, neft_jax.create_train_state(net, None, None, TX, HP), None
    return _apply, neft_jax.create_train_state(_apply, None, None, TX, HP,
                                               params=PARAMS), FUNCTION_WEIGHTS


@functools.cache
def _step(kind, method):
    """The jitted step of each kind and method, shared by the tests (compiled once)."""
    model, _, where = _model(kind)
    return neft_jax.make_train_step(model, method, neft_jax.DeviceModel(), where=where)


def _changed(a, b) -> bool:
    return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                     strict=True))


@pytest.mark.parametrize("kind", ["linen", "nnx", "function"])
def test_every_method_trains_each_kind_of_model(kind):
    _, state, _ = _model(kind)
    for method in neft_jax.METHODS:
        step = _step(kind, method)
        new, metrics = step(state, BATCH, jax.random.key(5))
        assert np.isfinite(float(metrics["loss"])), (kind, method)
        assert _changed(new.params, state.params), (kind, method)
        if method in NOISY_METHODS:  # the noise reaches the model: other keys, other losses
            _, other = step(state, BATCH, jax.random.key(6))
            assert float(other["loss"]) != float(metrics["loss"]), (kind, method)
        if method == "irs":
            assert metrics["exit_accuracy"].shape == (1,)
    if kind == "nnx":  # BatchNorm statistics are carried and updated
        assert _changed(new.batch_stats, state.batch_stats)


def test_a_where_that_selects_exit_weights_leaves_them_to_the_exits_sigma(monkeypatch):
    calls = []

    def recording_perturb(params, key, device, where, on_empty):
        noisy = neft_jax.perturb(params, key, device, where=where, on_empty=on_empty)
        changed = jax.tree_util.tree_map_with_path(
            lambda p, a, b: jax.tree_util.keystr(p) if a is not b else None,  # noised
            params, noisy)
        calls.append((float(device.sigma), [c for c in jax.tree.leaves(changed) if c]))
        return noisy

    monkeypatch.setattr(neft_jax.train, "perturb", recording_perturb)
    every_w = lambda path, leaf: str(path[-1]).startswith("W")  # noqa: E731  exits' W too
    state = _model("function")[1].replace(hparams=neft_jax.make_hparams(0.5, 0.2, alpha=0.1))
    neft_jax.make_train_step(_apply, "irs", where=every_w, jit=False)(state, BATCH,
                                                                      jax.random.key(0))
    assert calls == [(0.5, ["['W1']", "['W2']"]), (pytest.approx(0.2), ["['exit_1']['W']"])]


class TokenModel(nn.Module):
    """Integer inputs (token ids), as a language or embedding model takes them."""

    @nn.compact
    def __call__(self, tokens):
        return nn.Dense(3)(nn.Embed(20, 4)(tokens).mean(axis=1))


def test_integer_inputs_train_and_evaluate_and_bad_labels_or_weights_are_refused():
    tokens = (np.arange(32 * 5).reshape(32, 5) * 7 % 20).astype(np.int32)
    shape = jax.ShapeDtypeStruct(tokens.shape, jnp.int32)  # init on int zeros, not float
    state = neft_jax.create_train_state(TokenModel(), jax.random.key(0), shape, TX, HP)
    state, metrics = neft_jax.make_train_step(TokenModel(), "noise")(
        state, {"image": tokens, "label": Y}, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    test_set = neft_jax.make_test_set(tokens, Y, 16)
    assert test_set.images.dtype == jnp.int32
    model, variables = neft_jax.evaluation_model(state)
    keys = jax.random.split(jax.random.key(2), 2)
    assert neft_jax.monte_carlo(model, variables, test_set, keys, 0.5).accuracies.shape == (2,)
    with pytest.raises(ValueError, match="labels reach 9 but the model gives 3 classes"):
        neft_jax.monte_carlo(model, variables, neft_jax.make_test_set(tokens, np.arange(32) % 10),
                             keys, 0.5)
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        neft_jax.make_test_set(tokens, Y + 0.7)
    with pytest.raises(ValueError, match="labels must be class indices >= 0"):
        neft_jax.make_test_set(tokens, Y - 1)
    with pytest.raises(TypeError, match="weight kernel has dtype int32.*rounded away"):
        neft_jax.perturb({"kernel": jnp.arange(12).reshape(3, 4)}, jax.random.key(0), 0.4)


def test_a_trained_linen_model_with_attached_exits_is_evaluated_without_them():
    _, state, _ = _model("linen")
    assert set(state.params) == {"backbone", "exit_1"}
    step = _step("linen", "irs")
    for i in range(3):
        state, _ = step(state, BATCH, jax.random.key(i))
    eval_model, variables = neft_jax.evaluation_model(state)
    test_set = neft_jax.make_test_set(X, Y, 16)
    clean = neft_jax.monte_carlo(eval_model, variables, test_set, jax.random.split(
        jax.random.key(0), 3), neft_jax.DeviceModel(0.0))
    logits = jax.jit(PlainCNN().apply)({"params": state.params["backbone"]}, X)
    assert clean.accuracies[0] == pytest.approx(float(np.mean(np.argmax(logits, -1) == Y)))
    noisy = neft_jax.monte_carlo(eval_model, variables, test_set, jax.random.split(
        jax.random.key(0), 3), neft_jax.DeviceModel(1.5))
    assert noisy.ekl > 1e-4  # the runs' predictions disagree: the backbone got noise


def test_nnx_and_function_states_evaluate_through_evaluation_model():
    _, nnx_state, _ = _model("nnx")
    _, fn_state, _ = _model("function")
    test_set = neft_jax.make_test_set(X, Y, 16)
    keys = jax.random.split(jax.random.key(0), 3)
    model, variables = neft_jax.evaluation_model(nnx_state)
    assert neft_jax.monte_carlo(model, variables, test_set, keys, 0.4).accuracies.shape == (3,)
    model, variables = neft_jax.evaluation_model(fn_state)
    result = neft_jax.monte_carlo(model, variables, test_set, keys, 0.4,
                                  where=FUNCTION_WEIGHTS)
    assert result.accuracies.shape == (3,)


def test_a_backbone_module_named_like_an_exit_head_is_refused_by_with_exits():
    """with_exits names its heads exit_1, exit_2, …, and exits are told apart by that
    name: a backbone module called exit_1 would have been taken for one (its kernel given
    the exits' σ, and left clean in Monte Carlo). ``exit_gate`` is backbone, and allowed."""

    def backbone(name):
        class Backbone(nn.Module):
            @nn.compact
            def __call__(self, x):
                h = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
                return nn.Dense(10)(nn.Dense(4, name=name)(h).mean(axis=(1, 2)))
        return Backbone()

    x = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="has a module named 'exit_1'.*rename it"):
        neft_jax.with_exits(backbone("exit_1"), ["conv1"], 10).init(jax.random.key(0), x)
    params = neft_jax.with_exits(backbone("exit_gate"), ["conv1"], 10).init(
        jax.random.key(0), x)["params"]
    assert sorted(params) == ["backbone", "exit_1"] and "exit_gate" in params["backbone"]


def test_mistakes_give_one_clear_line():
    plain = PlainCNN()
    state = rbg_train_state(plain, X.shape, TX, HP, seed=1)  # one program (see the helper)
    with pytest.raises(ValueError, match="with_exits"):
        neft_jax.make_train_step(plain, "irs")(state, BATCH, jax.random.key(0))
    with pytest.raises(ValueError, match="logit_divisor=s \\+ 1"):
        neft_jax.make_train_step(plain, "noise_scaled")(state, BATCH, jax.random.key(0))
    divided = neft_jax.make_train_step(plain, "noise_scaled", logit_divisor=4.0)
    assert np.isfinite(float(divided(state, BATCH, jax.random.key(0))[1]["loss"]))
    with pytest.raises(ValueError, match="no submodule of the backbone is named \\['conv9'\\]"):
        neft_jax.with_exits(plain, ["conv9"], 3).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="needs params="):
        neft_jax.create_train_state(_apply, None, None, TX, HP)
    with pytest.raises(ValueError, match="needs hparams=neft_jax.make_hparams"):
        neft_jax.create_train_state(_apply, None, None, TX, params=PARAMS)
    with pytest.raises(ValueError, match="device is a template and its sigma must stay 0"):
        neft_jax.make_train_step(plain, "noise", neft_jax.DeviceModel(0.4))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        neft_jax.make_hparams(0.4, alpha=-1e-2)
    with pytest.raises(ValueError, match="needs eq. \\(1\\)'s α"):
        neft_jax.make_train_step(plain, "ovf")(state.replace(hparams=neft_jax.make_hparams(0.4)),
                                               BATCH, jax.random.key(0))
    fn_state = neft_jax.create_train_state(_apply, None, None, TX, HP, params=PARAMS)
    with pytest.raises(neft_jax.NoWeightsSelected, match="where="):  # W1/W2 aren't "kernel"
        neft_jax.make_train_step(_apply, "noise")(fn_state, BATCH, jax.random.key(0))
    step = neft_jax.make_train_step(_apply, "noise", where=FUNCTION_WEIGHTS)
    for batch, says in (({"x": X, "y": Y}, "a batch is {'image'"),
                        ({"image": X, "label": Y[:, None]}, r"batch\['label'\] must be \(B,\)")):
        with pytest.raises(ValueError, match=says):
            step(fn_state, batch, jax.random.key(0))
    returns_dict = neft_jax.make_train_step(lambda params, x: {"logits": _apply(params, x)},
                                            "noise", where=FUNCTION_WEIGHTS)
    with pytest.raises(ValueError, match=r"must return logits \(B, K\).*got a dict"):
        returns_dict(fn_state, BATCH, jax.random.key(0))


class ExtraArgument(nn.Module):
    @nn.compact
    def __call__(self, x, is_train):
        return nn.Dense(3)(x.mean(axis=(1, 2)))


class BatchNormByAttribute(nn.Module):
    train: bool = False

    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=not self.train)(x).mean(axis=(1, 2))


def test_models_and_inputs_the_adapters_cannot_use_are_named():
    with pytest.raises(ValueError, match=r"__call__ needs \['is_train'\].*name a train flag"):
        neft_jax.create_train_state(ExtraArgument(), jax.random.key(0), X.shape, TX, HP)
    with pytest.warns(UserWarning, match="BatchNorm statistics but its __call__ takes no train"):
        neft_jax.create_train_state(BatchNormByAttribute(), jax.random.key(0), X.shape, TX, HP)
    wrong_k = neft_jax.with_exits(PlainCNN(), taps=["conv1"], num_classes=5)
    state = rbg_train_state(wrong_k, X.shape, TX, HP, seed=1)
    with pytest.raises(ValueError, match=r"exit 1's logits have shape \(32, 5\) but the model's "
                       r"\(32, 3\)"):
        neft_jax.make_train_step(wrong_k, "irs")(state, BATCH, jax.random.key(0))
    model, variables = neft_jax.evaluation_model(_model("linen")[1])
    test_set = neft_jax.make_test_set(X, Y, 16)
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="variables are {'params': ..., 'batch_stats': ...}"):
        neft_jax.monte_carlo(model, variables["params"], test_set, keys, 0.4)
    with pytest.raises(TypeError, match="test_set must come from neft_jax.make_test_set"):
        neft_jax.monte_carlo(model, variables, (X, Y), keys, 0.4)
    with pytest.raises(ValueError, match="summarize needs at least one accuracy"):
        neft_jax.summarize([])
    with pytest.raises(ValueError, match=r"must return logits \(B, K\).*shape \(16,\)"):
        neft_jax.monte_carlo(lambda params, x: _apply(params, x)[0][:, 0], PARAMS, test_set, keys,
                             0.4, where=FUNCTION_WEIGHTS)


def test_monte_carlo_refuses_to_report_noise_free_numbers_as_noisy():
    test_set = neft_jax.make_test_set(X.reshape(32, -1), Y, 16)  # flat features are fine
    keys = jax.random.split(jax.random.key(0), 2)

    def apply(params, x):
        return jnp.tanh(x @ params["W1"]) @ params["W2"][:, :3]

    params = {"W1": PARAMS["W1"], "W2": PARAMS["W2"]}
    with pytest.raises(neft_jax.NoWeightsSelected, match=r"'W1', 'W2'"):
        neft_jax.monte_carlo(apply, params, test_set, keys, neft_jax.DeviceModel(0.4))
    clean = neft_jax.monte_carlo(apply, params, test_set, keys, neft_jax.DeviceModel(0.0))
    assert clean.accuracies.shape == (1,)


def test_perturb_takes_a_number_as_sigma_and_says_what_to_pass_otherwise():
    params = {"kernel": jnp.ones((3, 3))}
    key = jax.random.key(0)
    @jax.jit  # both in one program (not op by op)
    def both(params, key):
        return (neft_jax.perturb(params, key, 0.4)["kernel"],
                neft_jax.perturb(params, key, neft_jax.DeviceModel(0.4))["kernel"])

    by_number, by_device = both(params, key)
    np.testing.assert_array_equal(by_number, by_device)
    with pytest.raises(TypeError, match="DeviceModel\\(sigma=0.4\\)"):
        neft_jax.perturb(params, key, "0.4")


class DropoutByDefault(nn.Module):
    """PlainCNN whose ``deterministic`` flag defaults to training (dropout on)."""

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.Dropout(0.5)(x, deterministic=deterministic)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def test_linen_flag_named_deterministic_is_set_for_evaluation():
    """Dropout off in evaluation, also for a model whose flag defaults to training: the
    Monte Carlo score equals the deterministic forward's (without the flag, the model would
    ask for a dropout RNG)."""
    model = DropoutByDefault()
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), X)
    test_set = neft_jax.make_test_set(X, Y, 16)
    a = neft_jax.monte_carlo(model, variables, test_set, jax.random.split(jax.random.key(1), 1),
                             0.0)
    logits = jax.jit(functools.partial(model.apply, deterministic=True))(variables, X)
    assert a.accuracies[0] == pytest.approx(float(np.mean(np.argmax(logits, -1) == Y)))


def test_summary_quantiles_match_numpy():
    accuracies = np.random.default_rng(0).uniform(40, 90, 257)
    summary = neft_jax.summarize(accuracies)
    assert summary["q01"] == pytest.approx(np.quantile(accuracies, 0.01))
    assert summary["q05"] == pytest.approx(np.quantile(accuracies, 0.05))
    assert summary["min"] <= summary["q01"] <= summary["q05"] <= summary["mean"]
