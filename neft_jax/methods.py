"""The training methods, one entry each: what a method is, in one place (method.md §3–4).

A new method is one :class:`Method` in :data:`REGISTRY`; the train step
(:func:`neft_jax.make_train_step`), the harness's configuration, validation, tables and
checkpoint folders read these entries instead of testing names. The authors' α per model
and dataset is published data and stays in :mod:`neft_jax.harness.paper` (the library
never imports the harness).

Method names still written out elsewhere, and why. Before this registry: 76 lines naming
a method in 9 modules and 18 tests of a name (7 in ``make_train_step``, 2 more in
``train.py``, 2 in ``config.py``, 1 in ``loop.py``, 6 in the paper reproduction). Now:
no test of a name in the train step, the configuration, the loop, sweeps or reporting; 6
remain, all in the paper reproduction study (``experiments/paper/collect.py``: its control
is IRS at α → 0, Table V's "all exits" is the IRS cells at σ = 0.4; ``report.py``: the
vanilla row is plotted from its σ sweep; ``reproduce.py``, 3 lines: cells reused across
stages are matched by folder name). 61 lines (counted when the registry came) still name
methods as data, in the harness and the studies:

* ``harness/paper.py``, ``experiments/paper/published.py``: the authors' α and the
  published numbers, keyed by the method they are for.
* ``experiments/paper/`` (``plan.py``, ``reproduce.py``, ``collect.py``, ``report.py``),
  ``experiments/scaling/`` (``study.py``, ``collect.py``), ``harness/budget.py``: which methods
  each study stage trains and compares, and the relative cost measured per method. These
  choose methods; they do not say what a method does.
* ``harness/flags.py``: one docstring example (``IRS,OVF`` → ``("irs", "ovf")``).
* ``experiments/bench_torch.py``: the two methods its PyTorch port implements (vanilla,
  noise); whether one trains at σ it reads from here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from neft_jax.losses import cross_entropy, feedback_ratio, feedback_term, subtract_feedback


class LossInputs(NamedTuple):
    """What a method's loss reads from one training forward pass.

    ``feedback_logits``: eq. (1)'s z_i (the exits' logits, or OVF's extra passes), () for
    methods without feedback; ``divisor``: the logit divisor of a scaled loss (None:
    derived from the number of exit logits)."""

    logits: jax.Array
    labels: jax.Array
    exit_logits: tuple
    feedback_logits: tuple
    alpha: jax.Array
    decay: Any
    divisor: float | None


def plain_loss(method: str, inputs: LossInputs) -> tuple[jax.Array, dict]:
    """Cross-entropy of the logits."""
    return cross_entropy(inputs.logits, inputs.labels), {}


def scaled_loss(method: str, inputs: LossInputs) -> tuple[jax.Array, dict]:
    """``CE(z / (s + 1))``: eq. (1)'s logit scaling without the feedback."""
    divisor = inputs.divisor
    if divisor is None:
        if not inputs.exit_logits:
            raise ValueError(
                f"method {method!r} trains on CE(z / (s + 1)), s = the number of "
                "exits IRS would use; this model has no num_exits attribute and "
                "returns no exit logits: pass logit_divisor=s + 1 (e.g. 4 for three "
                "exits)")
        divisor = float(len(inputs.exit_logits) + 1)
    return cross_entropy(inputs.logits / divisor, inputs.labels), {}


def feedback_loss(method: str, inputs: LossInputs) -> tuple[jax.Array, dict]:
    """Eq. (1): cross-entropy of ``(z − α·Σ c_i z_i) / (s + 1)``, and the feedback's size
    (RMS of α·Σ c_i z_i over RMS of z)."""
    feedback = feedback_term(inputs.feedback_logits, inputs.alpha, inputs.decay)
    logits = subtract_feedback(inputs.logits, feedback, len(inputs.feedback_logits))
    ratio = feedback_ratio(jax.lax.stop_gradient(inputs.logits),
                           jax.lax.stop_gradient(feedback))
    return cross_entropy(logits, inputs.labels), {"feedback_ratio": ratio}


@dataclasses.dataclass(frozen=True)
class Method:
    """One training method.

    ``perturbs``: trained at noisy weights (σ), and its kept epoch chosen at σ; a method
    that does not (vanilla) is trained and validated clean. ``exits``: trains the
    model's exits (their kernels get the exits' σ); the model must return exit logits.
    ``feedback``: where eq. (1)'s feedback logits come from: ``"exits"``, ``"passes"``
    (extra noisy backbone passes) or None; a method with feedback has an α.
    ``scales_logits``: trained on ``CE(z / (s + 1))`` (needs the divisor s + 1).
    ``loss``: ``loss(name, LossInputs) -> (loss, metrics)``."""

    name: str
    label: str
    summary: str
    loss: Callable[[str, LossInputs], tuple[jax.Array, dict]]
    perturbs: bool = True
    exits: bool = False
    feedback: str | None = None
    scales_logits: bool = False
    in_paper: bool = True

    @property
    def uses_feedback(self) -> bool:
        return self.feedback is not None

    def validation_sigma(self, sigma: float) -> float:
        """σ at which the kept epoch is chosen: the run's σ, but 0 for a method trained
        clean, which the authors select by clean accuracy (method.md §4)."""
        return sigma if self.perturbs else 0.0


#: Every method, in the order of tables and of :data:`DEFAULT_METHODS`.
REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("vanilla", "vanilla", "plain cross-entropy, clean weights", plain_loss,
           perturbs=False),
    Method("noise", "noise injection", "cross-entropy at noisy weights", plain_loss),
    Method("noise_scaled", "noise_scaled",
           "noise injection trained on CE(z / (s + 1)), s = the model's number of exits: "
           "eq. (1)'s logit scaling without any feedback (the fair baseline for IRS/OVF)",
           scaled_loss, scales_logits=True, in_paper=False),
    Method("irs", "IRS", "eq. (1) with the exits' logits as feedback (backbone and exit "
           "kernels perturbed, exits with their own σ)", feedback_loss, exits=True,
           feedback="exits"),
    Method("ovf", "OVF", "eq. (1) with three extra backbone passes at σ + 0.15, + 0.10, "
           "+ 0.05 (fresh noise each) as feedback", feedback_loss, feedback="passes"),
)}

#: The method names :func:`~neft_jax.make_train_step` accepts, in the registry's order.
METHODS = tuple(REGISTRY)
#: The paper's four methods.
PAPER_METHODS = tuple(name for name, m in REGISTRY.items() if m.in_paper)
#: What a run trains unless told otherwise: the paper's four and the fair baseline
#: ``noise_scaled`` (eq. (1)'s logit scaling without the feedback), so that every table
#: shows whether IRS/OVF's gain is the feedback's.
DEFAULT_METHODS = METHODS
#: Methods trained with eq. (1)'s feedback term (they have an α).
FEEDBACK_METHODS = tuple(name for name, m in REGISTRY.items() if m.uses_feedback)
#: The method that feedback methods are judged against: eq. (1)'s scaling, no feedback.
FAIR_BASELINE = "noise_scaled"


def unknown_method(method: Any) -> str:
    """Why ``method`` is refused: its name, the nearest method name when one is close
    (``irss`` → ``irs``), and the names allowed."""
    close = difflib.get_close_matches(str(method).lower(), METHODS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown method {method!r}{hint} (allowed: {', '.join(METHODS)})"


def method_spec(method: str) -> Method:
    """The :class:`Method` of a name; ValueError naming the nearest one if unknown."""
    if not isinstance(method, str) or method not in REGISTRY:
        raise ValueError(unknown_method(method))
    return REGISTRY[method]


def validate_method(method: str) -> str:
    method_spec(method)
    return method


def uses_exits(method: str) -> bool:
    """Whether a method trains the exits (only IRS)."""
    return method_spec(method).exits


def uses_feedback(method: str) -> bool:
    """Whether a method has eq. (1)'s feedback term and so an α (IRS, OVF)."""
    return method_spec(method).uses_feedback


def label(method: str) -> str:
    """A method's name in tables and plots (``irs`` → ``IRS``)."""
    return method_spec(method).label
