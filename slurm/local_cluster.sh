#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian packages, on loopback only: for the
# integration tests and for trying a sweep's sbatch side before queueing on a real cluster.
#
#   slurm/local_cluster.sh install  install the Debian packages if missing (make test does this first)
#   slurm/local_cluster.sh up       install (if needed) and start munge, slurmctld, slurmd; wait until idle
#   slurm/local_cluster.sh status   sinfo / squeue
#   slurm/local_cluster.sh down     stop exactly the daemons this script started (munged included)
#
#   up --lease NAME / down --lease NAME: a user of the cluster (a test module) takes a lease; `down`
#   then stops the daemons only when no other lease is held by a live process. A plain `up` holds
#   the cluster until a plain `down`.
#
# Idempotent: `up` on a running cluster only checks it. Needs root (daemons run as root, jobs as the
# submitting user); without systemd, so it works in containers. No accounting database: `sacct`
# is unavailable and submitit warns about it on every poll, but collects results from its pickles.
# Memory is a consumable with a per-CPU default, so small jobs run side by side instead of each
# taking the whole node.
set -euo pipefail

STATE=${ASSAY_SLURM_STATE:-/var/lib/assay-slurm}
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
MEM_PER_CPU_MB=${ASSAY_SLURM_MEM_PER_CPU_MB:-1024}

die() { echo "slurm/local_cluster.sh: $*" >&2; exit 1; }

running() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm packages missing and no apt-get to install them (need munge slurmctld slurmd slurm-client)"
  echo "installing munge slurmctld slurmd slurm-client ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null 9>&- || die "apt-get install munge slurmctld slurmd slurm-client failed"
  # A package script may have started munged: then it is ours to stop too.
  mkdir -p "$STATE"
  pgrep -o -x munged > "$STATE/munged.pid" 2>/dev/null || rm -f "$STATE/munged.pid"
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  # Not plain `nproc`: it honours OMP_NUM_THREADS, which test workers set to 1.
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  # RealMemory a little below what slurmd sees, or the node registers as invalid.
  mem=$(( $(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1) ))
  [[ $mem -gt 0 ]] || mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
  mem=$(( mem * 9 / 10 ))
  mkdir -p /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd "$STATE"
  cat > "$CONF.new" <<CONF
# Written by assay slurm/local_cluster.sh: one node on loopback, no accounting, no cgroups.
ClusterName=assaylocal
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SwitchType=switch/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${MEM_PER_CPU_MB}
JobRequeue=1
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
  # Keep a config that is identical (a running controller reads it); replace one that differs.
  CONF_CHANGED=0
  if [[ -f "$CONF" ]] && cmp -s "$CONF" "$CONF.new"; then rm "$CONF.new"; else mv "$CONF.new" "$CONF"; CONF_CHANGED=1; fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  [[ -f /etc/munge/munge.key ]] || { mungekey -c >/dev/null 2>&1 || /usr/sbin/create-munge-key -f >/dev/null 2>&1 || die "cannot create /etc/munge/munge.key"; }
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  # munged daemonises and lives on: it must not inherit the `up` lock on fd 9 (a later `up` would wait
  # on that lock for as long as munged runs).
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null 9>&- || /usr/sbin/munged --force 9>&-
  else
    /usr/sbin/munged --force 9>&-
  fi
  for _ in $(seq 50); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      cp /run/munge/munged.pid "$STATE/munged.pid" 2>/dev/null || pgrep -o -x munged > "$STATE/munged.pid" || true
      return
    fi
    sleep 0.2
  done
  die "munged did not start (see /var/log/munge/munged.log)"
}

start_daemon() {  # name, command...
  local name=$1; shift
  running "$name" && return
  "$@" >>"$LOGDIR/$name.stdout" 2>&1 9>&- &  # not the `up` lock: see start_munge
  echo $! > "$STATE/$name.pid"
}

wait_idle() {
  for _ in $(seq 120); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mixed|allocated) return 0 ;;
      down*|drain*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "the node never became idle (sinfo: '${state:-no answer}'; see $LOGDIR/slurmctld.log and slurmd.log)"
}

lock() { mkdir -p "$STATE/leases"; exec 9>"$STATE/up.lock"; flock 9; }

# Leases: one file per user of the cluster, holding the pid of the process that took it (empty for
# a plain `up`, which holds until a plain `down`). A lease whose process is gone no longer counts.
live_leases() {
  local f pid
  for f in "$STATE"/leases/*; do
    [[ -f "$f" ]] || continue
    pid=$(cat "$f")
    if [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null; then basename "$f"; else rm -f "$f"; fi
  done
}

up() {  # [lease name]
  [[ $(id -u) -eq 0 ]] || die "must run as root (starts munged, slurmctld and slurmd)"
  # Two callers at once (two test workers) would both start daemons: the second waits, then only checks.
  lock
  if [[ -n "${1:-}" ]]; then echo "$PPID" > "$STATE/leases/$1"; else : > "$STATE/leases/manual"; fi
  install_packages
  write_conf
  if [[ $CONF_CHANGED -eq 1 ]]; then
    # A node's CPUs or memory only change on a restart: restart the daemons this script started;
    # ask ones started elsewhere to re-read the file.
    if running slurmctld || running slurmd; then stop_slurm; else scontrol reconfigure >/dev/null 2>&1 || true; fi
  fi
  start_munge
  if ! running slurmctld && ! scontrol ping 2>/dev/null | grep -q UP; then
    start_daemon slurmctld /usr/sbin/slurmctld -D -c -f "$CONF"
  fi
  for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
  scontrol ping 2>/dev/null | grep -q UP || die "slurmctld did not come up (see $LOGDIR/slurmctld.log)"
  if ! running slurmd && ! pgrep -x slurmd >/dev/null; then
    start_daemon slurmd /usr/sbin/slurmd -D -f "$CONF"
  fi
  wait_idle
  echo "slurm up: $(sinfo -h -o '%P %D nodes %c cpus %m MB %T')"
}

stop_pid() {  # name: stop the daemon whose pid this script recorded, then forget it
  local pid
  if running "$1"; then
    pid=$(cat "$STATE/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$1.pid"
}

stop_slurm() { stop_pid slurmd; stop_pid slurmctld; }

down() {  # [lease name]
  lock
  if [[ -n "${1:-}" ]]; then rm -f "$STATE/leases/$1"; else rm -f "$STATE"/leases/*; fi
  local others
  others=$(live_leases | tr '\n' ' ')
  if [[ -n "$others" ]]; then echo "slurm kept up: still leased by ${others% }"; return; fi
  stop_slurm
  stop_pid munged
  echo "slurm down"
}

status() {
  scontrol ping || true
  sinfo || true
  squeue || true
}

lease_arg() {  # the NAME of `--lease NAME`, or nothing
  case "${1:-}" in
    "") ;;
    --lease) [[ "${2:-}" =~ ^[A-Za-z0-9._-]+$ ]] || die "--lease needs a name of letters, digits, . _ -"; echo "$2" ;;
    *) die "unknown argument '$1' (usage: $0 up|down [--lease NAME])" ;;
  esac
}

case "${1:-}" in
  install)
    [[ $(id -u) -eq 0 ]] || die "must run as root to install packages"
    install_packages ;;
  up) lease=$(lease_arg "${@:2}"); up "$lease" ;;
  down) lease=$(lease_arg "${@:2}"); down "$lease" ;;
  status) status ;;
  *) echo "usage: $0 install|up|down|status [--lease NAME]" >&2; exit 2 ;;
esac
