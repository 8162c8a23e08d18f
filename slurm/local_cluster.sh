#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian packages, on loopback only: for the
# integration tests and for trying a sweep's sbatch side before queueing on a real cluster.
#
#   slurm/local_cluster.sh up       install (if needed) and start munge, slurmctld, slurmd; wait until idle
#   slurm/local_cluster.sh status   sinfo / squeue
#   slurm/local_cluster.sh down     stop exactly the daemons this script started
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
  apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null || die "apt-get install munge slurmctld slurmd slurm-client failed"
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
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
  else
    /usr/sbin/munged --force
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.2; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

start_daemon() {  # name, command...
  local name=$1; shift
  running "$name" && return
  "$@" >>"$LOGDIR/$name.stdout" 2>&1 &
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

up() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (starts munged, slurmctld and slurmd)"
  # Two callers at once (two test workers) would both start daemons: the second waits, then only checks.
  mkdir -p "$STATE"; exec 9>"$STATE/up.lock"; flock 9
  install_packages
  write_conf
  if [[ $CONF_CHANGED -eq 1 ]]; then
    # A node's CPUs or memory only change on a restart: restart the daemons this script started;
    # ask ones started elsewhere to re-read the file.
    if running slurmctld || running slurmd; then down; else scontrol reconfigure >/dev/null 2>&1 || true; fi
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

down() {
  for name in slurmd slurmctld; do
    if running "$name"; then
      pid=$(cat "$STATE/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$name.pid"
  done
  echo "slurm down"
}

status() {
  scontrol ping || true
  sinfo || true
  squeue || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
