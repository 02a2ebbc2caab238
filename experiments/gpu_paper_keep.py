"""Keep one ``experiments/gpu_paper.sh`` call's output as the committed run folder that the
next call continues from (issue 33).

    python3 experiments/gpu_paper_keep.py OUT_DIR KEPT

``OUT_DIR`` is what the call wrote, as brought back from the GPU machine: ``paper_gpu.tgz``
(the run folder) and ``call.tgz`` (the call's own files: logs, bench rows, statuses).
``KEPT`` is the folder to commit under ``docs/results/``, created by the first call's keep
and updated by each later one:

* the archive's run folder (stage folders, cells, REPORT.md, report.json, plots) is
  unpacked into ``KEPT``; its files replace older copies (a later call's archive holds the
  earlier calls' cells too, since the call started from ``KEPT``), and nothing is deleted;
* the call's own files are kept beside it, numbered by call: ``log_callN.txt`` (and
  ``log_callN_processK.txt``), ``bench_callN.txt``, ``gpu_callN.txt``,
  ``throughput_callN.json``, ``call_callN.txt`` (its commit, where the device's copy knew
  it, else the one this checkout is at while keeping; start and end, UTC),
  ``check_callN.txt``, the concurrent bench's files;
* ``bench.jsonl`` is kept from the first call that measured rates; a later call that
  measured again keeps its rows as ``bench_callN.jsonl``;
* ``CALLS.md`` tables every kept call: its start, code, GPU, plan processes, trainings
  finished per minute, and the loop rates of one process and of several at once.

It prints what it kept and the exact command that continues the run. Nothing is kept when
``OUT_DIR`` lacks ``call.tgz``, when an archive holds a path outside its folder or is cut
short, or when the call's log is already kept (the same call kept twice). Without
``paper_gpu.tgz`` (a call cut before its plan made the run folder) only the call's own
files are kept, its bench rows among them.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile

from gpu_throughput import concurrent_runs, finished_trainings, overlap, read_rows, summed_rates

ARCHIVE = "paper_gpu.tgz"
#: The call's own files, packed under ``call/`` (a device call brings back 8 files at most).
CALL_ARCHIVE = "call.tgz"
#: The call's own files and the name each gets in KEPT ({n}: the call's number).
PER_CALL = {"log.txt": "log_call{n}.txt", "bench.txt": "bench_call{n}.txt",
            "gpu.txt": "gpu_call{n}.txt", "throughput.json": "throughput_call{n}.json",
            "call.txt": "call_call{n}.txt", "check.txt": "check_call{n}.txt"}
PER_CALL_PATTERNS = (
    (r"log_process(\d+)\.txt", "log_call{n}_process{0}.txt"),
    (r"bench_concurrent_(\d+x_\d+)\.(jsonl|txt)", "bench_concurrent_{0}_call{n}.{1}"))


def next_call_number(kept: str) -> int:
    """1 + the highest N of the ``log_callN.txt`` files in ``kept`` (1 for a new folder)."""
    numbers = [int(m[1]) for name in os.listdir(kept) if (m := re.fullmatch(
        r"log_call(\d+)\.txt", name))] if os.path.isdir(kept) else []
    return max(numbers, default=0) + 1


def run_folder_of(archive: tarfile.TarFile) -> str:
    """The one top folder every member of ``archive`` lies in (gpu_paper.sh archives its
    run folder by its path, e.g. ``runs/paper_gpu``)."""
    members = archive.getmembers()
    if not members or not members[0].isdir():
        raise ValueError("the archive does not start with its run folder")
    top = members[0].name.rstrip("/")
    outside = [m.name for m in members[1:] if not m.name.startswith(top + "/")]
    if outside:
        raise ValueError(f"the archive holds {outside[0]!r}, outside its run folder {top!r}")
    return top


def unpack_run_folder(archive_path: str, kept: str) -> tuple[int, int]:
    """Unpack the archive's run folder into ``kept`` (files replace older copies); return
    (trainings finished in the archive, those not finished in ``kept`` before)."""
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(archive_path) as archive:
        top = run_folder_of(archive)
        archive.extractall(scratch, filter="data")  # no absolute paths or links out
        source = os.path.join(scratch, top)
        finished = finished_trainings(source)
        new = finished - finished_trainings(kept)
        shutil.copytree(source, kept, symlinks=True, dirs_exist_ok=True)
    return len(finished), len(new)


def keep_call_files(out: str, kept: str, n: int) -> list[str]:
    """Copy the call's own files into ``kept`` under their numbered names; return them."""
    kept_names = []

    def copy(name: str, target: str) -> None:
        shutil.copy2(os.path.join(out, name), os.path.join(kept, target))
        kept_names.append(target)

    for name, target in PER_CALL.items():
        if os.path.isfile(os.path.join(out, name)):
            copy(name, target.format(n=n))
    for name in sorted(os.listdir(out)):
        for pattern, target in PER_CALL_PATTERNS:
            if match := re.fullmatch(pattern, name):
                copy(name, target.format(*match.groups(), n=n))
    bench = os.path.join(out, "bench.jsonl")
    if os.path.isfile(bench):
        first = os.path.join(kept, "bench.jsonl")
        if not os.path.exists(first):
            copy("bench.jsonl", "bench.jsonl")
        elif not filecmp.cmp(bench, first, shallow=False):  # measured again this call
            copy("bench.jsonl", f"bench_call{n}.jsonl")
    return kept_names


def bench_summary(rows: list[dict]) -> str:
    """One cell: the lone loop rate, and each concurrent run's summed rate, gain and overlap
    (``not counted`` where gpu_throughput.summed_rates leaves it out)."""
    rates = summed_rates(rows)
    if 1 not in rates:
        return "–"
    one = rates[1]
    parts = [f"1 process {one:,.0f} images/s"]
    for k, copies in sorted(concurrent_runs(rows).items()):
        summed, shared = sum(r["loop_images_per_s"] for r in copies), overlap(copies)
        counted = "" if k in rates else ", not counted"
        parts.append(f"{k} at once {summed:,.0f} ({summed / one:.2f}×, timed loops "
                     f"overlapped {shared:.0%}{counted})")
    return "; ".join(parts)


def _read(path: str) -> str:
    """The text of ``path`` ("" where it is missing)."""
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        return f.read()


def call_row(kept: str, n: int) -> str:
    """CALLS.md's row of call ``n``."""
    gpu = _read(os.path.join(kept, f"gpu_call{n}.txt")).strip().replace("\n", "; ") or "–"
    flow = json.loads(_read(os.path.join(kept, f"throughput_call{n}.json")) or "{}")
    bench_log = _read(os.path.join(kept, f"bench_call{n}.txt"))
    own = os.path.join(kept, f"bench_call{n}.jsonl")
    if bench_log.startswith("benches skipped"):
        rates = bench_log.splitlines()[0]
    else:
        rates = bench_summary(read_rows(own if os.path.isfile(own)
                                        else os.path.join(kept, "bench.jsonl")))
    cells = [flow.get(k, "–") for k in ("workers", "trainings_finished", "wall_s",
                                        "trainings_per_minute")]
    call = dict(line.split(" ", 1) for line in _read(os.path.join(
        kept, f"call_call{n}.txt")).splitlines() if " " in line)
    code = call.get("commit", "–")[:12] + (f" ({call['kept']})" if "kept" in call else "")
    return (f"| {n} | {call.get('started', '–')} | {code} | {gpu} | "
            + " | ".join(map(str, cells)) + f" | {rates} |")


def calls_table(kept: str) -> str:
    """CALLS.md: each kept call's GPU, plan processes, trainings finished per minute of the
    plan, and the loop rates its benches measured."""
    lines = ["# The GPU calls of this run", "",
             "Written by `experiments/gpu_paper_keep.py` from the files beside it. Trainings "
             "per minute count the trainings the call's plan finished (a cell, or one seed of "
             "a multi-seed run) over the plan's wall time; the bench rates are the whole "
             "training loop's (`bench.py --end-to-end`), summed over the processes run at once.",
             "", "| call | started (UTC) | code | GPU | plan processes | trainings finished "
             "| plan wall (s) | trainings per minute | bench (loop rate) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [call_row(kept, n) for n in range(1, next_call_number(kept))]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def call_files(out: str):
    """The folder of the call's own files: ``call.tgz`` unpacked into a temporary folder."""
    packed = os.path.join(out, CALL_ARCHIVE)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(packed) as archive:
        if any(m.name != "call" and not m.name.startswith("call/")
               for m in archive.getmembers()):
            raise ValueError(f"{packed} holds files outside call/")
        archive.extractall(scratch, filter="data")
        yield os.path.join(scratch, "call")


def keep(out: str, kept: str) -> str:
    """Keep ``out``'s call in ``kept``; return the report's lines."""
    archive = os.path.join(out, ARCHIVE)
    if not os.path.isfile(os.path.join(out, CALL_ARCHIVE)):
        raise FileNotFoundError(f"{os.path.join(out, CALL_ARCHIVE)} is missing: OUT_DIR must "
                                "be what gpu_paper.sh wrote (run it, and bring its files back, "
                                "first)")
    n = next_call_number(kept)
    with call_files(out) as files:
        log = os.path.join(files, "log.txt")
        for k in range(1, n):
            earlier = os.path.join(kept, f"log_call{k}.txt")
            if os.path.isfile(log) and os.path.isfile(earlier) and filecmp.cmp(
                    log, earlier, shallow=False):
                raise ValueError(f"{out} was kept before, as call {k} ({earlier})")
        if os.path.isfile(archive):
            cells, new = unpack_run_folder(archive, kept)
        else:  # cut before the plan made its folder: keep the benches and logs
            cells, new = 0, 0
            os.makedirs(kept, exist_ok=True)
        names = keep_call_files(files, kept, n)
        note_code_kept(os.path.join(kept, f"call_call{n}.txt"))
    with open(os.path.join(kept, "CALLS.md"), "w") as f:
        f.write(calls_table(kept))
    rates = os.path.join(kept, "bench.jsonl")
    rates = (f"GPU_PAPER_RATES={rates} \\\n" if os.path.isfile(rates)
             else "")  # no call measured them yet: the next call runs the benches
    return (f"kept call {n} in {kept}: {cells} trainings finished, {new} of them new; "
            f"the call's files: {', '.join(names) or 'none'}\n"
            f"continue with:\nGPU_PAPER_FROM={kept} \\\n{rates}"
            "bash experiments/gpu_paper.sh OUT_DIR auto")


def note_code_kept(path: str) -> None:
    """Where the call could not name its commit (its copy of the checkout has no .git), add
    the commit this checkout is at while keeping it: the code the call most likely ran."""
    text = _read(path)
    if text and "commit unknown" in text:
        from neft_jax.harness.runtime import code_version

        here = code_version() or {}
        commit = (here.get("commit") or "unknown")[:12] + ("+dirty" if here.get("dirty") else "")
        with open(path, "a") as f:
            f.write(f"kept at {commit} here\n")


def keep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_paper_keep.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT_DIR", help="what gpu_paper.sh wrote")
    parser.add_argument("kept", metavar="KEPT", help="the run folder to commit and continue")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = keep_parser().parse_args(argv)
    try:
        print(keep(args.out, args.kept))
    except (OSError, EOFError, ValueError, tarfile.TarError) as error:  # EOF: cut archive
        print(f"gpu_paper_keep.py: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
