#!/usr/bin/env bash
# Stop the one-node cluster .ci/slurm_start.sh started: its daemons, MariaDB and munged, waiting
# until each has exited (then killing what is left).
STATE="${P0_SLURM_DIR:-/tmp/p0-slurm}"
scancel --user="$(id -un)" 2>/dev/null
for name in slurmd slurmctld slurmdbd mysqld; do
  pid="$STATE/run/$name.pid"
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
pkill -x munged 2>/dev/null
DAEMONS="slurmd slurmctld slurmdbd mariadbd munged"
running() { for d in $DAEMONS; do pgrep -x "$d" >/dev/null && return 0; done; return 1; }
for _ in $(seq 30); do running || break; sleep 0.5; done
for d in $DAEMONS; do pkill -9 -x "$d" 2>/dev/null; done
echo "slurm_stop: stopped"
