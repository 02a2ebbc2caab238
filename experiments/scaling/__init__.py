"""The scaling study (a study, not part of the installed library): every method at one σ
over model width × training length. :mod:`scaling.study` runs the points and writes the
report; :mod:`scaling.cli` is ``experiments/scaling.py``'s command line. See README.md."""
