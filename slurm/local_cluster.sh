#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian packages, on loopback only: for the
# integration tests and for trying a sweep's sbatch side before queueing on a real cluster.
#
#   slurm/local_cluster.sh install  install the Debian packages if missing (make test does this first)
#   slurm/local_cluster.sh up       install (if needed) and start munged, slurmctld, slurmd; wait until idle
#   slurm/local_cluster.sh status   sinfo / squeue of this cluster
#   slurm/local_cluster.sh down     stop exactly the daemons this cluster started (its munged included)
#   slurm/local_cluster.sh env      the line that points sbatch/squeue/scancel at this cluster:
#                                   eval "$(slurm/local_cluster.sh env)"
#
#   up --lease NAME / down --lease NAME: a user of the cluster (a test module) takes a lease; `down`
#   then stops the daemons only when no other lease is held by a live process. A plain `up` holds
#   the cluster until a plain `down`.
#
# Each checkout has a cluster of its own: everything it writes (slurm.conf, spool and state dirs,
# logs, pid files, its munge key, munged's socket) is under one state dir, by default <checkout>/.slurm
# (ASSAY_SLURM_STATE=<dir> for another), and it listens on ports derived from that dir
# (ASSAY_SLURM_PORT=<n> for SlurmctldPort n and SlurmdPort n+1). Nothing machine-wide is written
# (/etc/slurm, /etc/munge, /run/munge, /var/spool stay untouched) and `up`/`down`/`status` only see
# the daemons recorded in this state dir, so two checkouts (or a user and the test suite) run side by
# side. Clients find the cluster through SLURM_CONF=<state dir>/slurm.conf, which `up` and `env`
# print; assay's `hydra/launcher=slurm_local` sets it itself when it is unset.
#
# Idempotent: `up` on a running cluster only checks it. Needs root (daemons run as root, jobs as the
# submitting user); without systemd, so it works in containers. No accounting database: `sacct`
# is unavailable and submitit warns about it on every poll, but collects results from its pickles.
# Memory is a consumable with a per-CPU default, so small jobs run side by side instead of each
# taking the whole node.
set -euo pipefail
umask 022  # the config, the state dir and the munge socket are read by users who submit jobs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STATE=${ASSAY_SLURM_STATE:-$ROOT/.slurm}
[[ $STATE == /* ]] || STATE=$PWD/$STATE
STATE=${STATE%/}
CONF=$STATE/slurm.conf
LOGDIR=$STATE/log
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
# The cluster an older version of this script ran for the whole machine: reported, never stopped.
OLD_STATE=${ASSAY_SLURM_OLD_STATE:-/var/lib/assay-slurm}
MEM_PER_CPU_MB=${ASSAY_SLURM_MEM_PER_CPU_MB:-1024}
export SLURM_CONF=$CONF  # this script's own scontrol/sinfo/squeue talk to this cluster only

die() { echo "slurm/local_cluster.sh: $*" >&2; exit 1; }

# Ports: from ASSAY_SLURM_PORT, else from a checksum of the state dir, in 20000-29999 (below Linux's
# ephemeral range, so an outgoing connection never holds them). slurmd listens one above slurmctld.
if [[ -n "${ASSAY_SLURM_PORT:-}" ]]; then
  [[ $ASSAY_SLURM_PORT =~ ^[0-9]+$ ]] && (( ASSAY_SLURM_PORT >= 1024 && ASSAY_SLURM_PORT < 65535 )) \
    || die "ASSAY_SLURM_PORT='$ASSAY_SLURM_PORT' must be a port number from 1024 to 65534"
  CTLD_PORT=$ASSAY_SLURM_PORT
else
  CTLD_PORT=$(( 20000 + ($(printf %s "$STATE" | cksum | cut -d' ' -f1) % 5000) * 2 ))
fi
SLURMD_PORT=$(( CTLD_PORT + 1 ))

# The daemons of this cluster: binary, and a word only their command line holds (the config or the
# socket path of this state dir), so a recycled pid or another checkout's daemon is never taken for ours.
binary() { readlink -f "/usr/sbin/$1"; }  # Debian installs slurmctld/slurmd as alternatives (slurmctld-wlm)
marker() { case $1 in munged) echo "$MUNGE_SOCKET" ;; *) echo "$CONF" ;; esac; }

alive() { [[ $1 =~ ^[0-9]+$ ]] && [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" | cut -c1) != Z ]]; }  # a zombie is gone

is_daemon() {  # pid, binary, marker: that pid is a live process of that binary whose arguments hold the marker
  local exe
  alive "$1" || return 1
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$2" ]] || return 1
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -e "$3" -e "--socket=$3"
}

running() { [[ -f "$STATE/$1.pid" ]] && is_daemon "$(cat "$STATE/$1.pid")" "$(binary "$1")" "$(marker "$1")"; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm packages missing and no apt-get to install them (need munge slurmctld slurmd slurm-client)"
  echo "installing munge slurmctld slurmd slurm-client ..."
  export DEBIAN_FRONTEND=noninteractive
  local before
  before=$(pgrep -x 'munged|slurmctld|slurmd' | sort || true)
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null 9>&- || die "apt-get install munge slurmctld slurmd slurm-client failed"
  # A package script may have started the machine-wide services: they are not used here, and this
  # install started them, so stop them again.
  local pid
  for pid in $(comm -13 <(echo "$before") <(pgrep -x 'munged|slurmctld|slurmd' | sort || true)); do
    kill "$pid" 2>/dev/null || true
  done
}

port_user() {  # port: prints "yes" when a socket listens on it (IPv4 or IPv6), from /proc/net
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { print "yes"; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

check_port() {  # port, what
  [[ -z $(port_user "$1") ]] && return
  die "port $1 ($2 of the cluster in $STATE) is taken by another program; choose others with ASSAY_SLURM_PORT=<port> (slurmctld on it, slurmd on the next)"
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
  mkdir -p "$LOGDIR" "$STATE/ctld" "$STATE/spool"
  cat > "$CONF.new" <<CONF
# Written by assay slurm/local_cluster.sh: one node on loopback, no accounting, no cgroups; every
# file it uses is under $STATE.
ClusterName=assaylocal
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${MUNGE_SOCKET}
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
PlugStackConfig=$STATE/plugstack.conf
MailProg=/bin/true
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
  # No SPANK plugins: an empty stack instead of the machine's /etc/slurm/plugstack.conf.
  [[ -f "$STATE/plugstack.conf" ]] || : > "$STATE/plugstack.conf"
  # Keep a config that is identical (a running controller reads it); replace one that differs.
  CONF_CHANGED=0
  if [[ -f "$CONF" ]] && cmp -s "$CONF" "$CONF.new"; then rm "$CONF.new"; else mv "$CONF.new" "$CONF"; CONF_CHANGED=1; fi
}

munge_ok() { munge --socket="$MUNGE_SOCKET" -n 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
  if running munged && munge_ok; then return; fi
  stop_pid munged
  (( ${#MUNGE_SOCKET} < 100 )) || die "the munge socket path $MUNGE_SOCKET is too long for a unix socket; set ASSAY_SLURM_STATE to a shorter dir"
  mkdir -p "$MUNGE_DIR"
  # Clients running as any user reach the socket; only root reads the key.
  chmod 755 "$STATE" "$MUNGE_DIR"
  if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
    rm -f "$MUNGE_DIR/munge.key"
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" >/dev/null 2>&1 \
      || dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none \
      || die "cannot create $MUNGE_DIR/munge.key"
  fi
  chmod 400 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # Root, in the foreground of its own session (--force: munged refuses root, and a state dir inside a
  # group-writable checkout, otherwise).
  start_daemon munged /usr/sbin/munged --foreground --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$LOGDIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
  for _ in $(seq 50); do
    munge_ok && return
    running munged || break
    sleep 0.2
  done
  die "munged did not start (see $LOGDIR/munged.log)"
}

start_daemon() {  # name, command...
  local name=$1 pid; shift
  running "$name" && return
  # Its own session: an interrupt in the terminal that ran `up` does not reach the daemon. Not the
  # `up` lock on fd 9 either (a later `up` would wait on that lock for as long as the daemon runs).
  setsid "$@" >>"$LOGDIR/$name.stdout" 2>&1 9>&- < /dev/null &
  pid=$!
  echo "$pid" > "$STATE/$name.pid"
  # setsid execs in place (a background job of a script is no group leader): the pid is the daemon's.
  for _ in $(seq 20); do running "$name" && return; alive "$pid" || break; sleep 0.1; done
  running "$name" || die "$name did not start (see $LOGDIR/$name.stdout)"
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

old_cluster_note() {  # the machine-wide daemons of an older version of this script, if they still run
  [[ $STATE != "$OLD_STATE" ]] || return 0
  local name pid found=()
  for name in munged slurmctld slurmd; do
    pid=$(cat "$OLD_STATE/$name.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(binary "$name")" ]]; then found+=("$name=$pid"); fi
  done
  if (( ${#found[@]} )); then
    echo "note: the machine-wide cluster of an older slurm/local_cluster.sh still runs (${found[*]}, pid files in $OLD_STATE); it is left alone: stop it with kill ${found[*]#*=}" >&2
  fi
}

up() {  # [lease name]
  [[ $(id -u) -eq 0 ]] || die "must run as root (starts munged, slurmctld and slurmd)"
  # Two callers at once (two test workers) would both start daemons: the second waits, then only checks.
  lock
  if [[ -n "${1:-}" ]]; then echo "$PPID" > "$STATE/leases/$1"; else : > "$STATE/leases/manual"; fi
  install_packages
  old_cluster_note
  write_conf
  # A node's CPUs or memory (or a port) only change on a restart: restart the daemons of this cluster.
  if [[ $CONF_CHANGED -eq 1 ]] && { running slurmctld || running slurmd; }; then stop_slurm; fi
  running slurmctld || check_port "$CTLD_PORT" SlurmctldPort
  running slurmd || check_port "$SLURMD_PORT" SlurmdPort
  start_munge
  start_daemon slurmctld /usr/sbin/slurmctld -D -c -f "$CONF"
  for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; running slurmctld || break; sleep 0.5; done
  scontrol ping 2>/dev/null | grep -q UP || die "slurmctld did not come up (see $LOGDIR/slurmctld.log)"
  start_daemon slurmd /usr/sbin/slurmd -D -f "$CONF"
  wait_idle
  echo "slurm up: $(sinfo -h -o '%P %D nodes %c cpus %m MB %T') (state $STATE, ports $CTLD_PORT/$SLURMD_PORT)"
  echo "export SLURM_CONF=$CONF"
}

stop_pid() {  # name: stop the daemon of this cluster whose pid is recorded, then forget it
  local pid
  if running "$1"; then
    pid=$(cat "$STATE/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do alive "$pid" || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$1.pid"
}

stop_slurm() { stop_pid slurmd; stop_pid slurmctld; }

down() {  # [lease name]
  [[ -d "$STATE" ]] || { echo "slurm down (no cluster in $STATE)"; return; }
  lock
  if [[ -n "${1:-}" ]]; then rm -f "$STATE/leases/$1"; else rm -f "$STATE"/leases/*; fi
  local others
  others=$(live_leases | tr '\n' ' ')
  if [[ -n "$others" ]]; then echo "slurm kept up: still leased by ${others% }"; return; fi
  stop_slurm
  stop_pid munged
  echo "slurm down"
}

status() {  # exit status 0 when all three daemons of this cluster run, 3 otherwise
  [[ -f "$CONF" ]] || { echo "no cluster in $STATE (slurm/local_cluster.sh up starts one)"; return 3; }
  local name down=0
  for name in munged slurmctld slurmd; do
    if running "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: not running"; down=1; fi
  done
  echo "export SLURM_CONF=$CONF  # ports $CTLD_PORT/$SLURMD_PORT"
  if running slurmctld; then sinfo || true; squeue || true; fi
  return $(( down * 3 ))
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
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 install|up|down|status|env [--lease NAME]" >&2; exit 2 ;;
esac
