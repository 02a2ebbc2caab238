"""The scaling study (a study, not part of the installed library): every method at one σ
over model width × training length. :mod:`scaling.study` runs the points,
:mod:`scaling.collect` reads the rows from the finished cells and :mod:`scaling.report`
writes the report; :mod:`scaling.cli` is ``experiments/scaling.py``'s command line. See
README.md."""
