"""neft_jax: Negative Feedback Training (NeFT) for noise-robust CiM DNNs, in JAX/Flax."""

from neft_jax import evaluate, losses, models, train
from neft_jax.device import PRESETS, DeviceModel
from neft_jax.evaluate import make_test_set, monte_carlo, summarize
from neft_jax.losses import negative_feedback_loss
from neft_jax.perturb import is_kernel, perturb

__all__ = [
    "PRESETS",
    "DeviceModel",
    "evaluate",
    "is_kernel",
    "losses",
    "make_test_set",
    "models",
    "monte_carlo",
    "negative_feedback_loss",
    "perturb",
    "summarize",
    "train",
]
__version__ = "0.1.0"
