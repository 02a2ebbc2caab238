#!/bin/bash
# Finding 3's core cells at the quick profile, level noise, σ = 0.4, 3 seeds: the default
# protocol against the authors' (--lr-schedule epoch --val-fraction 0). Resumable: rerun.
cd /work/main
for variant in default authors; do
  extra=""
  [ "$variant" = authors ] && extra="--lr-schedule epoch --val-fraction 0"
  nice -n 10 python3 experiments/reproduce.py --stages core --sigmas 0.4 --seeds 3 \
    --out /work/runs/protocol_$variant $extra --no-progress || exit 1
done
echo ALL DONE
