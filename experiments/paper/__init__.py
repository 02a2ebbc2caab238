"""The paper reproduction (a study, not part of the installed library): the paper's Tables
II, III and V, the α search and EKL as one resumable plan. :mod:`paper.plan` names the
stages, :mod:`paper.reproduce` runs them, :mod:`paper.estimate` sizes them from a measured
loop rate, :mod:`paper.collect` reads what finished,
:mod:`paper.report` writes REPORT.md beside :mod:`paper.published` (the paper's numbers);
:mod:`paper.cli` is ``experiments/reproduce.py``'s command line. See README.md."""
