"""docs/usage.md has a table row for every flag of ``run.py`` and ``sweep.py``, built from
the same parsers the commands use (:func:`neft_jax.harness.cli.run_parser`,
:func:`~neft_jax.harness.cli.sweep_parser`), and no row for a flag they lack."""

import pathlib
import re

import pytest

from neft_jax.harness import cli

USAGE = pathlib.Path(__file__).parents[1] / "docs" / "usage.md"
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def long_options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--")}


def section(heading: str) -> str:
    """The text of usage.md from ``heading`` (a ``## `` line) to the next ``## `` heading."""
    text = USAGE.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def documented_flags(heading: str) -> set[str]:
    """Every flag named in the first column of a table row of the section: the rows the
    section documents (flags mentioned in prose or in another row's text do not count)."""
    flags = set()
    for line in section(heading).splitlines():
        if line.startswith("| `-"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]
            flags.update(FLAG.findall(first_cell))
    return flags


RUN = "## `experiments/run.py`"
SWEEP = "## Many runs: seeds, sweeps, devices"


@pytest.mark.parametrize("command, parser, sections", [
    ("run.py", cli.run_parser, (RUN,)),
    ("sweep.py", cli.sweep_parser, (RUN, SWEEP)),  # run.py's table holds the shared flags
])
def test_every_flag_has_a_row_in_usage_md(command, parser, sections):
    documented = set().union(*(documented_flags(s) for s in sections))
    missing = sorted(long_options(parser()) - documented)
    assert not missing, (f"docs/usage.md has no table row for {command}'s "
                         f"{', '.join(missing)} (sections: {', '.join(sections)})")


@pytest.mark.parametrize("parser, heading", [(cli.run_parser, RUN),
                                             (cli.sweep_parser, SWEEP)])
def test_every_row_names_a_real_flag(parser, heading):
    stale = sorted(documented_flags(heading) - long_options(parser()))
    assert not stale, f"docs/usage.md's {heading!r} has rows for flags that are gone: {stale}"


def test_the_check_sees_a_missing_row():
    """The table parser finds rows, and a flag only in prose is not a row."""
    rows = documented_flags(RUN)
    assert {"--model", "--val-mc-runs", "--val-every", "--help"} <= rows
    assert "--seed" in rows and "--seeds" in rows  # whole flags, not prefixes
    assert "--normalisation" in rows and "--config" not in rows
