"""The paper's published numbers (method.md §6), which REPORT.md sets beside ours.

The tables, and their lookups by dataset, model, method and σ. The authors'
hyper-parameters (α, learning rate, the α search grid), which the
library's configuration uses, stay in :mod:`neft_jax.harness.paper`.
"""

from __future__ import annotations

import math

#: Table II's σ.
TABLE2_SIGMAS = (0.2, 0.4, 0.6, 0.8)
#: Published noisy-inference accuracy (%) on MNIST at σ = 0.2, 0.4, 0.6, 0.8 (Table II).
#: "≤" entries of the paper are given as their bound. NeFT is the paper's multi-exit
#: method, i.e. IRS.
PAPER_TABLE2 = {
    ("vgg8", "vanilla"): (98.8, 63.54, 17.61, 10.12),
    ("vgg8", "noise"): (99.35, 97.77, 89.56, 13.71),
    ("vgg8", "irs"): (99.53, 99.30, 96.90, 70.31),
    ("resnet18", "vanilla"): (79.84, 38.06, 13.17, 10.01),
    ("resnet18", "noise"): (98.73, 89.62, 79.95, 33.18),
    ("resnet18", "irs"): (97.13, 97.20, 90.71, 77.78),
}
#: Table II cells the paper gives only as an upper bound ("≤", σ index): REPORT.md marks them.
PAPER_TABLE2_UPPER_BOUNDS = {("vgg8", "noise"): (2, 3), ("resnet18", "noise"): (2, 3)}
#: Table III's σ: MNIST's, and CIFAR-10's.
TABLE3_SIGMA, TABLE3_SIGMA_CIFAR10 = 0.6, 0.4
#: Non-converging runs of 10 on MNIST at σ = 0.6 (Table III).
PAPER_TABLE3 = {("vgg8", "noise"): 9, ("vgg8", "irs"): 0, ("resnet18", "noise"): 8,
                ("resnet18", "irs"): 0}
#: Table III's CIFAR-10 column: non-converging runs of 10 at σ = 0.4.
PAPER_TABLE3_CIFAR10 = {("vgg8", "noise"): 1, ("vgg8", "irs"): 0, ("resnet18", "noise"): 1,
                        ("resnet18", "irs"): 0}
#: Table IV: NeFT (IRS) trained with noise injection on CIFAR-10, at σ = 0.1, 0.2, 0.3, 0.4.
TABLE4_SIGMAS = (0.1, 0.2, 0.3, 0.4)
PAPER_TABLE4 = {("vgg8", "irs"): (86.80, 83.96, 77.01, 68.50),
                ("resnet18", "irs"): (91.42, 84.25, 73.38, 57.29)}
#: VGG-8, MNIST, σ = 0.4 (Table V).
PAPER_TABLE5 = {"without exit 1": 99.21, "without exit 2": 99.16, "without exit 3": 99.25,
                "all exits": 99.30, "equal coefficients": 99.15}

#: The datasets MNIST's tables (II, III's first column, V) are set beside: mnist5k is 5,000
#: of MNIST's digits. Other datasets get only their own tables' numbers (CIFAR-10: III, IV).
MNIST_DATASETS = ("mnist", "mnist5k")


def _index(sigmas: tuple[float, ...], sigma: float) -> int | None:
    return next((i for i, s in enumerate(sigmas) if math.isclose(s, sigma)), None)


def published_accuracy(dataset: str, model: str, method: str,
                       sigma: float) -> tuple[float, bool] | None:
    """The paper's accuracy (%) of ``method`` trained and evaluated at ``sigma`` on
    ``dataset``, and whether it is an upper bound ("≤"); None where the paper has none
    (another dataset's table, noise_scaled, a σ outside the table)."""
    if dataset in MNIST_DATASETS:
        table, sigmas, bounds = PAPER_TABLE2, TABLE2_SIGMAS, PAPER_TABLE2_UPPER_BOUNDS
    elif dataset == "cifar10":
        table, sigmas, bounds = PAPER_TABLE4, TABLE4_SIGMAS, {}
    else:
        return None
    values, at = table.get((model, method)), _index(sigmas, sigma)
    if values is None or at is None:
        return None
    return values[at], at in bounds.get((model, method), ())


def paper_accuracy(dataset: str, model: str, method: str, sigma: float) -> str:
    """:func:`published_accuracy` as a report cell: "≤" marks a bound, "–" where the paper
    has none (noise_scaled, the control, a σ or dataset outside its tables)."""
    found = published_accuracy(dataset, model, method, sigma)
    return "–" if found is None else f"{'≤' if found[1] else ''}{found[0]:g}"


def table3_sigma(dataset: str) -> float:
    """The σ of Table III's column for ``dataset``: CIFAR-10's 0.4, else MNIST's 0.6."""
    return TABLE3_SIGMA_CIFAR10 if dataset == "cifar10" else TABLE3_SIGMA


def published_not_converged(dataset: str, model: str, method: str, sigma: float) -> int | None:
    """Table III: the paper's non-converging runs of 10 (MNIST at σ = 0.6, CIFAR-10 at
    0.4); None for another dataset or σ."""
    if dataset in MNIST_DATASETS and math.isclose(sigma, TABLE3_SIGMA):
        return PAPER_TABLE3.get((model, method))
    if dataset == "cifar10" and math.isclose(sigma, TABLE3_SIGMA_CIFAR10):
        return PAPER_TABLE3_CIFAR10.get((model, method))
    return None


def published_ablation(dataset: str, model: str, variant: str) -> float | None:
    """Table V (VGG-8, MNIST, σ = 0.4): the paper's accuracy of an exit-ablation variant."""
    if dataset not in MNIST_DATASETS or model != "vgg8":
        return None
    return PAPER_TABLE5.get(variant)


def paper_noise_note(normalisation: str) -> str:
    """What REPORT.md's header says of the paper's numbers beside runs under
    ``normalisation``: they mean `level` noise (FINDINGS 0), and "≤x" is a bound."""
    caveat = "" if normalisation == "level" else (
        f": not comparable with these '{normalisation}' numbers")
    return (f"its σ is 'level' noise, FINDINGS 0{caveat}; ≤x: the paper gives only a bound, "
            "at most x")
