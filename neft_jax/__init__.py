"""neft_jax: Negative Feedback Training (NeFT) for noise-robust CiM DNNs, in JAX/Flax.

The drop-in library (this package's top level) never imports the paper harness
(:mod:`neft_jax.harness`):

* :mod:`neft_jax.device` — the device model (eqs. 2–5, presets): :class:`DeviceModel`.
* :mod:`neft_jax.perturbation` — :func:`perturb` (also ``neft_jax.perturb``), the weight noise.
* :mod:`neft_jax.models` — multi-exit VGG-8 and ResNet-18 (Table I).
* :mod:`neft_jax.losses` — eq. (1).
* :mod:`neft_jax.methods` — the methods, one entry each (exits, feedback, loss, label).
* :mod:`neft_jax.train` — :class:`TrainState` and the jitted step of each method.
* :mod:`neft_jax.adapters` — the training contract for any model (linen, NNX, a
  function), :func:`with_exits` to attach the paper's exits.
* :mod:`neft_jax.forward` — logits of any model at evaluation; :func:`evaluation_model`
  (a trained state, for :func:`monte_carlo`, which drops the exits).
* :mod:`neft_jax.evaluate` — :func:`monte_carlo` evaluation, EKL.
* :mod:`neft_jax.stats` — :func:`summarize`, :func:`paired_summary`, convergence counts.
* :mod:`neft_jax.conv`, :mod:`neft_jax.parallel` — CPU conv backward, multi-device.
"""

from neft_jax import (
    adapters,
    evaluate,
    losses,
    methods,
    models,
    parallel,
    perturbation,
    stats,
    train,
)
from neft_jax.adapters import with_exits
from neft_jax.device import PRESETS, DeviceModel
from neft_jax.evaluate import MonteCarloResult, TestSet, make_test_set, monte_carlo
from neft_jax.forward import evaluation_model
from neft_jax.losses import negative_feedback_loss
from neft_jax.models import VGG8, ResNet18, create_model
from neft_jax.perturbation import NoWeightsSelected, is_kernel, not_under, perturb, under
from neft_jax.stats import paired_summary, summarize
from neft_jax.train import (
    METHODS,
    TrainState,
    create_optimizer,
    create_train_state,
    make_hparams,
    make_train_step,
)

__all__ = [
    "METHODS",
    "PRESETS",
    "VGG8",
    "adapters",
    "evaluation_model",
    "with_exits",
    "DeviceModel",
    "MonteCarloResult",
    "NoWeightsSelected",
    "ResNet18",
    "TestSet",
    "TrainState",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "evaluate",
    "is_kernel",
    "losses",
    "make_hparams",
    "make_test_set",
    "make_train_step",
    "methods",
    "models",
    "monte_carlo",
    "negative_feedback_loss",
    "not_under",
    "parallel",
    "perturb",
    "perturbation",
    "paired_summary",
    "stats",
    "summarize",
    "train",
    "under",
]
__version__ = "0.1.0"
