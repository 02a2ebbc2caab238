"""The paper reproduction's plan: its stages, the σ and α they use, and where each writes.

==========  =====================================================================
stage       what it runs (σ in the device model of the base config)
==========  =====================================================================
core        the most informative cells first (for a time-boxed GPU run): vanilla,
            noise injection, noise_scaled, IRS and IRS with α = 1e-9 at σ = 0.4,
            then 0.6 (those of the plan's σ), seed by seed; later stages reuse them
table2      noise injection and IRS trained and evaluated at each σ of Table II
table3      noise injection and IRS at σ = 0.6, ``table3_seeds`` runs (Table III)
vanilla     vanilla trained at σ = 0 and evaluated over σ ∈ {0, 0.05, …, 0.4, 0.6, 0.8}
table5      IRS at σ = 0.4 without each exit, and with equal coefficients (Table V)
control     IRS at σ = 0.4 with α = 1e-9: eq. (1)'s scaling without the feedback
scaled      ``noise_scaled`` at σ = 0.4: noise injection on CE(z/(s+1)), the fair baseline
alpha       IRS's five-step α search at σ = 0.4 (one seed)
ovf         OVF trained and evaluated at each σ of Table II
==========  =====================================================================
"""

from __future__ import annotations

import dataclasses
import os

from neft_jax.models import MODELS

#: Every stage, in the order a plain run takes them (``core`` runs when asked for).
STAGES = ("core", "table2", "table3", "vanilla", "table5", "control", "scaled", "alpha", "ovf")
#: What ``reproduce.py`` runs by default.
DEFAULT_STAGES = STAGES[1:]
#: The order of a time-boxed run: most informative first. The α search follows the
#: core cells: on the first GPU run (docs/RESULTS.md, "Paper profile on one GPU") IRS
#: at the authors' α fell 10–39 points below its α → 0 control, so whether any α of
#: the search helps is the next question.
BUDGET_STAGES = ("core", "alpha", "table2", "vanilla", "control", "scaled", "ovf", "table3",
                 "table5")
TABLE2_SIGMAS = (0.2, 0.4, 0.6, 0.8)
TABLE3_SIGMA = 0.6
ABLATION_SIGMA = 0.4
VANILLA_SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.6, 0.8)
CONTROL_ALPHA = 1e-9
#: σ of the core stage, in this order (those in the plan's σ).
CORE_SIGMAS = (0.4, 0.6)
CORE_METHODS = ("vanilla", "noise", "noise_scaled", "irs")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which stages, models and seed counts :func:`~paper.reproduce.run_plan` runs."""

    models: tuple[str, ...] = ("vgg8",)
    stages: tuple[str, ...] = DEFAULT_STAGES
    seeds: int = 3
    table3_seeds: int = 10
    table5_seeds: int = 2
    sigmas: tuple[float, ...] = TABLE2_SIGMAS

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages must be names from {list(STAGES)}, got {self.stages!r}")
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be names from {sorted(MODELS)}, got {self.models!r}")
        for name in ("seeds", "table3_seeds", "table5_seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def core_sigmas(self) -> tuple[float, ...]:
        chosen = tuple(s for s in CORE_SIGMAS if any(abs(s - t) < 1e-9 for t in self.sigmas))
        return chosen or self.sigmas[:2]


def stage_dir(out: str, stage: str, model: str, variant: str = "") -> str:
    names = {"core": "core", "table2": "table2", "table3": "table3", "vanilla": "vanilla_sweep",
             "table5": "table5", "control": "control", "scaled": "noise_scaled", "ovf": "ovf",
             "alpha": "alpha_search"}
    name = f"{names[stage]}_{model}" + (f"_{variant}" if variant else "")
    return os.path.join(out, name + ("_irs" if stage == "alpha" else ""))
