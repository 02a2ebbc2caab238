"""A resumable grid of experiments: model × dataset × method × σ × α × seeds.

    python experiments/sweep.py --models vgg8 --methods noise,irs --sigmas 0.2,0.4 \
        --alphas 1,0.1,0.01 --seeds 3 --out runs/sweep1
    python experiments/sweep.py --config sweep.toml --out runs/sweep1   # same keys as flags

Re-running the same command after a crash skips every finished cell. All of
run.py's flags (profile, epochs, width, device preset, ...) apply to every cell.
The combined table goes to OUT/sweep.csv and OUT/sweep.json, plots to OUT/*.png.

A thin main: the command line lives in :mod:`neft_jax.harness.cli` (also installed
as ``neft-sweep``).
"""

import sys

from neft_jax.harness.cli import sweep_main as main

if __name__ == "__main__":
    sys.exit(main())
