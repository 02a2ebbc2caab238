"""The paper reproduction's plan: its stages, the σ and α they use, and where each writes.

==========  =====================================================================
stage       what it runs (σ in the device model of the base config)
==========  =====================================================================
core        the most informative cells first (for a time-boxed GPU run): noise
            injection, noise_scaled, IRS and IRS with α = 1e-9 at σ = 0.4, then 0.6
            (those of the plan's σ), seed by seed; the first σ's step then runs the
            vanilla stage's cells (vanilla at every σ); other stages reuse them
table2      noise injection, noise_scaled and IRS trained and evaluated at each σ of Table II
table3      noise injection and IRS at σ = 0.6, ``table3_seeds`` runs (Table III)
vanilla     vanilla, trained clean, one cell per seed evaluated at every σ of
            {0, 0.05, …, 0.4, 0.6, 0.8} and the plan's: the core stage's and Table II's
            vanilla numbers too (a method trained clean is the same model at every σ)
table5      IRS at σ = 0.4 without each exit, and with equal coefficients (Table V), each
            beside IRS with all exits over the same seeds (cells shared with table2 / core)
control     IRS at σ = 0.4 with α = 1e-9: eq. (1)'s scaling without the feedback
scaled      ``noise_scaled`` at σ = 0.4: noise injection on CE(z/(s+1)), the fair baseline
alpha       IRS's five-step α search at σ = 0.4 (one seed), as the authors choose α
alpha_grid  IRS at σ = 0.4 at every α of the search, ``alpha_seeds`` seeds, each evaluated:
            does the feedback help at some α (against the control, noise injection and
            noise_scaled of the same seed)?
ovf         OVF trained and evaluated at each σ of Table II
==========  =====================================================================

A plain run takes the stages model by model. A time-boxed run (``order="priority"``)
takes :data:`PRIORITY` first, the most informative cells of the whole plan in the order
of the paper-scale program (the core cells of the first model at σ = 0.4, then 0.6, the
α grid, Table II with the vanilla sweep, Table III, the second model's core cells at
σ = 0.4, Table V), then the rest model by model.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os

from neft_jax.methods import REGISTRY
from neft_jax.models import MODELS

from .published import TABLE2_SIGMAS

#: Every stage, in the order a plain run takes them (``core`` and ``alpha_grid`` run when
#: asked for, or in a time-boxed run).
STAGES = ("core", "table2", "table3", "vanilla", "table5", "control", "scaled", "alpha",
          "alpha_grid", "ovf")
#: What ``reproduce.py`` runs by default.
DEFAULT_STAGES = tuple(s for s in STAGES if s not in ("core", "alpha_grid"))
#: The stages of a time-boxed run, in the order each model takes those :data:`PRIORITY`
#: did not. The α grid follows the core cells: on the first GPU run (docs/studies/paper_gpu.md,
#: "Paper profile on one GPU") IRS at the authors' α fell 10–39 points below its α → 0
#: control, so whether any α of the search helps is the next question.
BUDGET_STAGES = ("core", "alpha_grid", "table2", "vanilla", "table3", "table5", "control",
                 "scaled", "ovf", "alpha")
#: A time-boxed run's first steps: (stage, the model's position in the plan, σ of the core
#: stage or None), the paper-scale program's order (docs/studies/paper_gpu.md).
PRIORITY = (("core", 0, 0.4), ("core", 0, 0.6), ("alpha_grid", 0, None), ("table2", 0, None),
            ("vanilla", 0, None), ("table3", 0, None), ("core", 1, 0.4), ("table5", 0, None))
ORDERS = ("model", "priority")
ABLATION_SIGMA = 0.4
VANILLA_SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.6, 0.8)
CONTROL_ALPHA = 1e-9
#: σ of the core stage, in this order (those in the plan's σ).
CORE_SIGMAS = (0.4, 0.6)
CORE_METHODS = ("vanilla", "noise", "noise_scaled", "irs")
#: The core stage's own cells: its methods trained at σ. Those trained clean (vanilla)
#: are the vanilla stage's cells, each scored at every σ, so one training serves all.
CORE_GRID_METHODS = tuple(m for m in CORE_METHODS if REGISTRY[m].perturbs)
TABLE2_METHODS = ("noise", "noise_scaled", "irs")


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage of one model; ``sigma`` limits the core stage to one of its σ."""
    model: str
    stage: str
    sigma: float | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which stages, models and seed counts :func:`~paper.reproduce.run_plan` runs."""

    models: tuple[str, ...] = ("vgg8",)
    stages: tuple[str, ...] = DEFAULT_STAGES
    seeds: int = 3
    table3_seeds: int = 10
    table5_seeds: int = 2
    alpha_seeds: int = 2
    sigmas: tuple[float, ...] = TABLE2_SIGMAS
    order: str = "model"

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            close = difflib.get_close_matches(str(bad[0]), STAGES, n=1) if bad else []
            hint = f"unknown stage {bad[0]!r}; did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{hint}stages must be names from {list(STAGES)}, got "
                             f"{self.stages!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {list(ORDERS)}, got {self.order!r}")
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be names from {sorted(MODELS)}, got {self.models!r}")
        for name in ("seeds", "table3_seeds", "table5_seeds", "alpha_seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def core_sigmas(self) -> tuple[float, ...]:
        chosen = tuple(s for s in CORE_SIGMAS if any(abs(s - t) < 1e-9 for t in self.sigmas))
        return chosen or self.sigmas[:2]

    def steps(self) -> tuple[Step, ...]:
        """The plan's stages in the order :func:`~paper.reproduce.run_plan` takes them:
        model by model, or (``order="priority"``) :data:`PRIORITY`'s steps of this plan
        first, the core stage one σ at a time, then the rest model by model."""
        if self.order == "model":
            return tuple(Step(m, s) for m in self.models for s in self.stages)
        first = [Step(self.models[rank], stage, sigma) for stage, rank, sigma in PRIORITY
                 if rank < len(self.models) and stage in self.stages
                 and (sigma is None or sigma in self.core_sigmas)]
        rest = []
        for model in self.models:
            for stage in self.stages:
                if stage == "core":
                    rest += [Step(model, stage, s) for s in self.core_sigmas
                             if Step(model, stage, s) not in first]
                elif Step(model, stage) not in first:
                    rest.append(Step(model, stage))
        return tuple(first + rest)


def vanilla_sigmas(plan: Plan) -> tuple[float, ...]:
    """σ at which the vanilla stage scores each of its cells: :data:`VANILLA_SIGMAS` and
    the plan's."""
    return tuple(sorted({*VANILLA_SIGMAS, *map(float, plan.sigmas)}))


def stage_dir(out: str, stage: str, model: str, variant: str = "") -> str:
    names = {"core": "core", "table2": "table2", "table3": "table3", "vanilla": "vanilla_sweep",
             "table5": "table5", "control": "control", "scaled": "noise_scaled", "ovf": "ovf",
             "alpha": "alpha_search", "alpha_grid": "alpha_grid"}
    name = f"{names[stage]}_{model}" + (f"_{variant}" if variant else "")
    return os.path.join(out, name + ("_irs" if stage == "alpha" else ""))


def is_control(method: str, alpha: float | None) -> bool:
    """Whether a cell is the α → 0 control: IRS at :data:`CONTROL_ALPHA`."""
    return method == "irs" and alpha is not None and math.isclose(alpha, CONTROL_ALPHA)
