#!/usr/bin/env bash
# usage: measure2.sh NAME NPROC [extra pytest args] — fresh clone, -n NPROC, with /usr/bin/time
set -e
NAME=$1; N=$2; shift 2
rm -rf /tmp/m_$NAME && git clone -q /work/main /tmp/m_$NAME && cd /tmp/m_$NAME
mkdir -p /tmp/probe/xdg_$NAME
git log --oneline | head -1 > /tmp/probe/$NAME.rev
PY=$(python -c "import sys;print(sys.executable)")
PROBE_T0=$(date +%s.%N) PYTHONPATH=/tmp/m_$NAME:/tmp/probe XDG_CACHE_HOME=/tmp/probe/xdg_$NAME PROBE_OUT=/tmp/probe/$NAME.jsonl \
  /usr/bin/time -f "TIME wall %e user %U sys %S maxrss %M" $PY -m pytest -n $N --maxprocesses 4 --dist loadscope -p compile_probe --durations=60 \
  --junitxml=/tmp/probe/${NAME}_junit.xml "$@" > /tmp/probe/$NAME.log 2>&1
