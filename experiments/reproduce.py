"""Reproduce the paper's Tables II, III and V, the α search and EKL with one command.

    python experiments/reproduce.py --out runs/reproduce                 # VGG-8, quick on CPU
    python experiments/reproduce.py --models vgg8,resnet18 --profile paper --out runs/paper
    python experiments/reproduce.py --stages table2,table3 --out runs/reproduce
    python experiments/reproduce.py --report-only --out runs/reproduce   # tables from what ran

Every stage skips finished work, so re-running the same command after a crash or
on a later day continues where it stopped. OUT/REPORT.md holds the tables beside
the paper's numbers, OUT/report.json the numbers and OUT/report.png the plot.
All of run.py's flags (profile, epochs, width, normalisation, device preset, ...)
apply to every stage; --seeds is the seed count of Table II and the other stages.

A thin main: the study lives in ``experiments/paper/`` (its README says the question,
the time it takes and where the report lands), outside the installed library.
"""

import sys

from paper.cli import reproduce_main as main

if __name__ == "__main__":
    sys.exit(main())
