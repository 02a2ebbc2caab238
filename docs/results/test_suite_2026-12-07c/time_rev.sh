#!/usr/bin/env bash
# usage: time_rev.sh NAME REV — README's test command on a fresh clone at REV, cold caches
set -e
NAME=$1; REV=$2
rm -rf /tmp/m_$NAME /tmp/probe/xdg_$NAME && git clone -q /work/main /tmp/m_$NAME && cd /tmp/m_$NAME && git checkout -q $REV
mkdir -p /tmp/probe/xdg_$NAME
git log --oneline | head -1 > /tmp/probe/$NAME.rev
PYTHONPATH=/tmp/m_$NAME XDG_CACHE_HOME=/tmp/probe/xdg_$NAME /usr/bin/time -f "TIME wall %e user %U sys %S maxrss %M" \
  python3 -m pytest -n auto --maxprocesses 4 --dist loadscope --junitxml=/tmp/probe/${NAME}_junit.xml > /tmp/probe/$NAME.log 2>&1 || true
tail -3 /tmp/probe/$NAME.log
