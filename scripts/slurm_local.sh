#!/usr/bin/env bash
# A real one-node Slurm on this machine, from Debian's packages, for `make test-slurm`.
#   scripts/slurm_local.sh start DIR   install slurm-wlm + munge if missing, write DIR/slurm.conf, start munged,
#                                      slurmctld and slurmd; prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm_local.sh stop DIR    stop the daemons started by `start` (by their pid files)
# Exit 3 (with the reason on stderr) where the packages cannot be installed or the daemons do not come up,
# so the test that calls it can skip with that reason. Needs root (it installs packages and runs the daemons).
set -euo pipefail

cmd=${1:?usage: slurm_local.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: slurm_local.sh start|stop DIR}" && cd "$2" && pwd)
host=$(hostname -s)

unavailable() { echo "slurm unavailable: $*" >&2; exit 3; }

stop() {
  # cancel what is left and let the steps end while slurmd still runs (else srun/slurmstepd linger)
  if [[ -f "$dir/slurmctld.pid" ]]; then
    SLURM_CONF="$dir/slurm.conf" scancel --partition=debug 2>/dev/null || true
    for _ in $(seq 20); do
      [[ -z $(SLURM_CONF="$dir/slurm.conf" squeue -h 2>/dev/null) ]] && break
      sleep 1
    done
  fi
  for name in slurmd slurmctld munged; do
    if [[ -f "$dir/$name.pid" ]]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || unavailable "slurm-wlm/munge are not installed and installing them needs root"
  command -v apt-get >/dev/null || unavailable "no apt-get to install slurm-wlm and munge"
  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge) >"$dir/apt.log" 2>&1 \
    || unavailable "apt-get install slurm-wlm munge failed (see $dir/apt.log)"
}

start() {
  install
  stop
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat >"$dir/slurm.conf" <<CONF
ClusterName=mmfair-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=46817
SlurmdPort=46818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  # munge: its own key and socket under DIR (no system service)
  if [[ ! -f "$dir/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 700 "$dir/munge"; chmod 400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" \
    || unavailable "munged did not start (see $dir/munged.log)"
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$dir/slurm.conf" || unavailable "slurmctld did not start (see $dir/slurmctld.log)"
  slurmd -f "$dir/slurm.conf" || unavailable "slurmd did not start (see $dir/slurmd.log)"
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "export SLURM_CONF=$dir/slurm.conf"
      return 0
    fi
    sleep 1
  done
  stop
  unavailable "the node did not become idle in 60 s (see $dir/slurmctld.log and $dir/slurmd.log)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: slurm_local.sh start|stop DIR" >&2; exit 2 ;;
esac
