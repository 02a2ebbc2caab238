"""Concurrent cells on one GPU for ``experiments/gpu_paper.sh`` (issue 33): is the GPU filled
by one training, or do 2–3 at once finish more cells per minute?

Three steps, each a subcommand the script calls:

* ``merge BENCH K FILE…``: K copies of ``bench.py --end-to-end`` ran at once, one JSONL
  file each; their rows join ``BENCH`` (the call's bench.jsonl) marked ``concurrent: K``
  and ``process: i``.
* ``choose BENCH [--workers auto|N]``: how many plan processes to run. ``auto`` takes the
  K whose copies' summed loop rate is highest, if it beats one process's by at least
  :data:`MIN_GAIN` (else 1); prints N on the last line, the reason before it.
* ``finished RUN LIST``: the trainings finished in ``RUN`` (one path a line), before the plan.
* ``throughput RUN LIST WALL WORKERS OUT``: trainings finished in ``RUN`` that ``LIST``
  does not name, per minute of the plan's ``WALL`` seconds with ``WORKERS`` processes;
  written as JSON to ``OUT`` and printed.

Rates are comparable only within one call on one machine (the rows name the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

#: The least summed-rate gain over one process that is worth concurrent processes: below
#: it the measurement's noise (a few %) and the processes' extra compiles eat the gain.
MIN_GAIN = 1.15
#: The least share of the longest copy's timed window that all K copies must have run
#: together: copies that timed their loops one after another (one still compiling while
#: another ran alone) would add up to a gain that concurrency never gave.
MIN_OVERLAP = 0.8


def read_rows(path: str) -> list[dict]:
    """The JSON rows of a JSONL file (blank lines skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def merge(bench: str, k: int, files: list[str]) -> int:
    """Append each file's end-to-end rows to ``bench`` marked with ``concurrent`` = k and
    ``process`` = i (1-based); return how many were appended (a copy that was stopped
    before its row is missing, and its K is then not counted by :func:`choose`)."""
    rows = []
    for i, path in enumerate(files, start=1):
        if os.path.exists(path):
            rows += [{**r, "concurrent": k, "process": i} for r in read_rows(path)
                     if r.get("bench") == "end_to_end"]
    with open(bench, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return len(rows)


def overlap(rows: list[dict]) -> float:
    """The time all ``rows``' timed windows share, as a share of the longest window (0
    where a row has no window)."""
    if not all("timed_from_unix" in r and "timed_to_unix" in r for r in rows):
        return 0.0
    shared = min(r["timed_to_unix"] for r in rows) - max(r["timed_from_unix"] for r in rows)
    longest = max(r["timed_to_unix"] - r["timed_from_unix"] for r in rows)
    return max(shared, 0.0) / longest if longest > 0 else 0.0


def summed_rates(rows: list[dict]) -> dict[int, float]:
    """Loop images/s by number of processes at once: 1 is the last lone end-to-end row
    (validating every epoch), K the sum over the K copies of a complete concurrent run
    whose timed windows overlap by at least :data:`MIN_OVERLAP`."""
    rates = {}
    lone = [r for r in rows if r.get("bench") == "end_to_end" and "concurrent" not in r
            and r.get("val_every", 1) == 1]
    if lone:
        rates[1] = lone[-1]["loop_images_per_s"]
    for k, copies in concurrent_runs(rows).items():
        if overlap(copies) >= MIN_OVERLAP:
            rates[k] = sum(r["loop_images_per_s"] for r in copies)
    return rates


def concurrent_runs(rows: list[dict]) -> dict[int, list[dict]]:
    """K → the rows of the K copies run at once, for each K whose copies all finished."""
    by_k: dict[int, dict[int, dict]] = {}
    for r in rows:
        if r.get("bench") == "end_to_end" and "concurrent" in r:
            by_k.setdefault(r["concurrent"], {})[r["process"]] = r
    return {k: list(copies.values()) for k, copies in by_k.items() if len(copies) == k}


def choose(rows: list[dict], requested: str = "auto") -> tuple[int, str]:
    """(processes, why): ``requested`` N as given, or for ``auto`` the best measured K if
    its summed rate is at least :data:`MIN_GAIN` × one process's."""
    if requested != "auto":
        n = int(requested)
        if n < 1:
            raise ValueError(f"workers must be auto or an integer >= 1, got {requested!r}")
        return n, f"{n} process(es), as GPU_PAPER_WORKERS says"
    rates = summed_rates(rows)
    short = [f"{k} at once overlapped {overlap(copies):.0%}"
             for k, copies in sorted(concurrent_runs(rows).items()) if k not in rates]
    uncounted = (f"; not counted, timed loops that overlapped < {MIN_OVERLAP:.0%}: "
                 f"{', '.join(short)}" if short else "")
    if 1 not in rates or len(rates) == 1:
        return 1, ("1 process: no concurrent measurement to compare with" + (
            f" ({uncounted[2:]})" if short else " (none, or a copy stopped)"))
    shown = ", ".join(f"{k} at once {v:,.0f} images/s" for k, v in sorted(rates.items()))
    best = max(rates, key=rates.get)
    gain = rates[best] / rates[1]
    if best > 1 and gain >= MIN_GAIN:
        return best, (f"{best} processes: {gain:.2f}× one process's loop rate ({shown}"
                      f"{uncounted})")
    return 1, (f"1 process: no concurrent run reached {MIN_GAIN:.2f}× its loop rate ({shown}"
               f"{uncounted})")


def finished_trainings(run: str) -> set[str]:
    """The folders (relative to ``run``) of every finished training: a grid cell
    (``cells/<name>/``) or a multi-seed run's seed (``seed-<n>/``) with its results.json.
    A multi-seed run's aggregate and the links to another stage's cells are not counted
    (and a finished run rewritten when a later call resumes it is still one training)."""
    found = set()
    for folder, dirs, files in os.walk(run):  # os.walk does not follow the links
        parent = os.path.basename(os.path.dirname(folder))
        if "results.json" in files and (parent == "cells"
                                        or os.path.basename(folder).startswith("seed-")):
            found.add(os.path.relpath(folder, run))
        dirs[:] = [d for d in dirs if d != "checkpoints"]
    return found


def throughput(run: str, before: set[str], wall: float, workers: int) -> dict:
    """The plan phase's new trainings per minute of wall time."""
    done = len(finished_trainings(run) - before)
    return {"workers": workers, "trainings_finished": done, "wall_s": round(wall, 1),
            "trainings_per_minute": round(60 * done / wall, 3) if wall > 0 else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_throughput.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge")
    m.add_argument("bench")
    m.add_argument("k", type=int)
    m.add_argument("files", nargs="+")
    c = sub.add_parser("choose")
    c.add_argument("bench")
    c.add_argument("--workers", default="auto")
    f = sub.add_parser("finished")
    f.add_argument("run")
    f.add_argument("list")
    t = sub.add_parser("throughput")
    t.add_argument("run")
    t.add_argument("list")
    t.add_argument("wall", type=float)
    t.add_argument("workers", type=int)
    t.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "merge":
        print(f"{merge(args.bench, args.k, args.files)} of {args.k} concurrent rows measured")
    elif args.command == "choose":
        try:
            rows = read_rows(args.bench) if os.path.exists(args.bench) else []
            n, why = choose(rows, args.workers)
        except ValueError as error:
            parser.error(str(error))
        print(why)
        print(n)
    elif args.command == "finished":
        with open(args.list, "w") as out:
            out.writelines(p + "\n" for p in sorted(finished_trainings(args.run)))
    else:
        with open(args.list) as listed:
            before = {line.strip() for line in listed if line.strip()}
        row = throughput(args.run, before, args.wall, args.workers)
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)
        print(f"throughput: {row['trainings_finished']} trainings in {row['wall_s']} s with "
              f"{row['workers']} process(es): {row['trainings_per_minute']} per minute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
