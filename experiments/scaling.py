"""Where the paper's regime starts: every method at σ = 0.4 over width × training length.

    python experiments/scaling.py --out runs/scaling                       # the default map
    python experiments/scaling.py --points 0.125:12/48,1:4 --out runs/scaling_small
    python experiments/scaling.py --methods noise,irs --sigma 0.2 --out runs/scaling_02
    python experiments/scaling.py --report-only --out runs/scaling          # tables so far

Each (width, epochs) point is a resumable sweep under OUT/; points run cheapest
first, and re-running the same command skips every finished cell. OUT/SCALING.md
holds the table (accuracy ± CI and minutes per cell) and the smallest point at
which noise injection leaves chance and IRS / noise_scaled separate from it;
OUT/scaling.png the plot against optimiser steps with the paper's numbers;
OUT/differences.png the differences between methods, paired within each seed.

A thin main: the study lives in ``experiments/scaling/`` (its README says the question,
the time it takes and where the report lands), outside the installed library.
"""

import sys

from scaling.cli import scaling_main as main

if __name__ == "__main__":
    sys.exit(main())
