#!/bin/bash
# final A, baseline (session start 1504af2), final B, quick loop — one after another
set -x
FINAL=$(cd /work/main && git rev-parse --short HEAD)
/tmp/measure3.sh fA_$FINAL auto
cd /tmp && rm -rf /tmp/m_base_1504af2 && git clone -q /work/main /tmp/m_base_1504af2 && cd /tmp/m_base_1504af2 && git checkout -q 1504af2 && mkdir -p /tmp/probe/xdg_base_1504af2 && PROBE_T0=$(date +%s.%N) PYTHONPATH=/tmp/m_base_1504af2:/tmp/probe XDG_CACHE_HOME=/tmp/probe/xdg_base_1504af2 PROBE_OUT=/tmp/probe/base_1504af2.jsonl /usr/bin/time -f "TIME wall %e user %U sys %S maxrss %M" python -m pytest -n auto --maxprocesses 4 --dist loadscope -p compile_probe --durations=60 --junitxml=/tmp/probe/base_1504af2_junit.xml > /tmp/probe/base_1504af2.log 2>&1
/tmp/measure3.sh fB_$FINAL auto
cd /tmp/m_fB_$FINAL && /usr/bin/time -f "TIME wall %e user %U sys %S" python -m pytest -n auto --maxprocesses 4 --dist loadscope -m "not slow" > /tmp/probe/quick_$FINAL.log 2>&1
echo ALLDONE
