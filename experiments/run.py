"""Train vanilla / noise-injection / IRS / OVF and print the paper's Monte Carlo table.

    python experiments/run.py --sigma 0.4                      # VGG-8 on mnist5k
    python experiments/run.py --sigma 0.4 --sweep 0.2,0.4,0.6,0.8 --model resnet18

Without --profile, a GPU/TPU backend runs the paper's settings (200 epochs,
full width) and a CPU runs the demo profile (8 epochs, 100 Monte Carlo runs, a
×0.125-width model: about 9 minutes on 2 cores); explicit flags override the
profile. Results go to --out (results.json, results.csv, accuracy_vs_sigma.png,
checkpoints/).

A thin main: the command line lives in :mod:`neft_jax.harness.cli` (also installed
as ``neft-run``).
"""

import sys

from neft_jax.harness.cli import run_main as main

if __name__ == "__main__":
    sys.exit(main())
