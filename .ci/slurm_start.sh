#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, bound to localhost, with accounting (slurmdbd on a
# private MariaDB) so that `sacct` answers as it does on a real cluster. Used by .ci/run before the
# tests (tests/cluster run a sweep on it) and by anyone who wants to try a sweep spec before their
# real cluster (docs/sweeps.md). Needs root and Debian's packages (installed here when apt is
# usable); stop it with .ci/slurm_stop.sh. Everything it writes besides /etc/slurm/ lives under
# $P0_SLURM_DIR (default /tmp/p0-slurm). Exit status 0 once `sinfo` shows the node idle.
set -euo pipefail
STATE="${P0_SLURM_DIR:-/tmp/p0-slurm}"
CLUSTER=p0ci
DB_PORT=3399
DB_PASS="p0-circuits-ci"

if [ "$(id -u)" != 0 ]; then
  echo "slurm_start: needs root (it writes /etc/slurm and runs the daemons)" >&2
  exit 1
fi
need="munge slurmctld slurmd slurmdbd slurm-client mariadb-server"
missing=""
for p in $need; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "slurm_start: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

mkdir -p "$STATE"/{ctld,spool,log,run,db}
chmod 755 "$STATE"

# munge: the cluster's authentication (the package's key, its own user)
mkdir -p /run/munge && chown munge:munge /run/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

# MariaDB for slurmdbd: a private instance on 127.0.0.1:$DB_PORT, its data under $STATE/db
if [ ! -d "$STATE/db/mysql" ]; then
  mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=socket \
    >"$STATE/log/mariadb-install.log" 2>&1
fi
if ! mariadb-admin --socket="$STATE/run/mysqld.sock" ping >/dev/null 2>&1; then
  rm -f "$STATE/run/mysqld.sock" "$STATE/run/mysqld.pid"  # left by a server that is gone
  mariadbd --user=root --datadir="$STATE/db" --socket="$STATE/run/mysqld.sock" \
    --pid-file="$STATE/run/mysqld.pid" --bind-address=127.0.0.1 --port=$DB_PORT \
    --innodb-buffer-pool-size=64M --log-error="$STATE/log/mariadb.log" >>"$STATE/log/mariadb.log" 2>&1 &
  for _ in $(seq 60); do [ -S "$STATE/run/mysqld.sock" ] && break; sleep 0.5; done
fi
mariadb --socket="$STATE/run/mysqld.sock" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

mkdir -p /etc/slurm
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

NODE="$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]*/NodeName=localhost/')"
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/affinity
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

if ! pgrep -x slurmdbd >/dev/null; then slurmdbd; fi
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
if ! pgrep -x slurmd >/dev/null; then slurmd -N localhost; fi
for _ in $(seq 60); do
  if sinfo -h -o "%T" 2>/dev/null | grep -qx idle; then
    echo "slurm_start: cluster $CLUSTER up on localhost: $(sinfo -h -o '%D node %c CPUs %m MB, %T')"
    exit 0
  fi
  sleep 0.5
done
echo "slurm_start: the node did not become idle; logs in $STATE/log" >&2
sinfo >&2 || true
exit 1
