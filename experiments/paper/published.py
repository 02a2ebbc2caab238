"""The paper's published numbers (method.md §6), which REPORT.md sets beside ours.

Data only. The authors' hyper-parameters (α, learning rate, the α search grid), which the
library's configuration uses, stay in :mod:`neft_jax.harness.paper`.
"""

from __future__ import annotations

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
#: Non-converging runs of 10 on MNIST at σ = 0.6 (Table III).
PAPER_TABLE3 = {("vgg8", "noise"): 9, ("vgg8", "irs"): 0, ("resnet18", "noise"): 8,
                ("resnet18", "irs"): 0}
#: VGG-8, MNIST, σ = 0.4 (Table V).
PAPER_TABLE5 = {"without exit 1": 99.21, "without exit 2": 99.16, "without exit 3": 99.25,
                "all exits": 99.30, "equal coefficients": 99.15}
