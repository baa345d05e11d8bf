#!/usr/bin/env bash
# Bring up a SLURM cluster of two nodes on this host: munged and slurmctld here, and per node
# its own network and UTS namespace (own hostname node1/node2, own address on a bridge this
# script creates) running its own slurmd. The nodes share this host's file system, as the
# nodes of a real cluster share one.
#
#   scripts/slurm/local_cluster/up.sh [STATE_DIR]      (default: /tmp/circles-slurm)
#
# Idempotent: if the cluster of STATE_DIR is already up with the same config it is
# reused (~0.1 s); otherwise leftovers are stopped (down.sh), the state is wiped and the
# namespaces and daemons are made afresh. On success the last line of stdout is
#   export SLURM_CONF=STATE_DIR/etc/slurm.conf
# which every client command (sbatch, srun, squeue, scontrol, scancel, sinfo) needs.
# Progress and errors go to stderr. Needs root (apt-get, daemons run as root).
#
# Environment knobs:
#   CIRCLES_SLURM_TIMEOUT   seconds to wait for the nodes to become idle (default 60)
#   CIRCLES_SLURM_PORT      slurmctld port; slurmd uses PORT+1 in each node (default 6817);
#                           names and subnet derive from it (names.sh)
#   CIRCLES_SLURM_NODES     number of nodes (default 2)
#   CIRCLES_SLURM_CPUS      advertise this many CPUs per node instead of the real count
#   CIRCLES_SLURM_NO_INSTALL=1  never call apt-get; fail if slurm/munge are missing
set -euo pipefail

STATE=${1:-/tmp/circles-slurm}
TIMEOUT=${CIRCLES_SLURM_TIMEOUT:-60}
PORT=${CIRCLES_SLURM_PORT:-6817}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/names.sh"

T0=${EPOCHREALTIME/[.,]/}
log() { local t=$(( ${EPOCHREALTIME/[.,]/} - T0 )); printf '[slurm-up %d.%02ds] %s\n' $((t / 1000000)) $((t % 1000000 / 10000)) "$*" >&2; }
die() { printf '[slurm-up] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and runs the daemons as root)"
case $STATE in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
[[ $STATE =~ ^[A-Za-z0-9_./+-]+$ ]] || die "state dir '$STATE' must not contain spaces or special characters (slurm.conf paths)"
# Unix socket paths are limited to 108 bytes (STATE/run/munge.socket.lock must fit).
(( ${#STATE} <= 80 )) || die "state dir path too long (${#STATE} > 80 chars) for the munge socket; use a short path such as /tmp/circles-slurm"

mkdir -p "$STATE"
# Serialise concurrent callers (e.g. several pytest workers) on the same state dir.
# (The daemons are started with fd 9 closed, or munged would hold the lock forever.)
exec 9>"$STATE/.lock"
flock 9

# --------------------------------------------------------------------------- install
export PATH=$PATH:/usr/sbin:/sbin
need_install() {
    local b
    for b in slurmctld slurmd sinfo sbatch srun scontrol munged munge ip unshare; do
        command -v "$b" >/dev/null 2>&1 || return 0
    done
    return 1
}
if need_install; then
    [[ ${CIRCLES_SLURM_NO_INSTALL:-0} == 1 ]] && die "slurm/munge not installed and CIRCLES_SLURM_NO_INSTALL=1"
    log "installing slurm-wlm, munge and iproute2 with apt-get (log: $STATE/apt.log)"
    # Keep the packages' maintainer scripts from starting the system-wide daemons
    # (they would fail without /etc/slurm/slurm.conf, or hold the default ports).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=120 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            slurm-wlm munge iproute2 >>"$STATE/apt.log" 2>&1
    }
    : >"$STATE/apt.log"
    if ! apt_install; then
        log "apt-get install failed, running apt-get update and retrying"
        apt-get update -q -o DPkg::Lock::Timeout=120 >>"$STATE/apt.log" 2>&1 || true
        apt_install || { tail -n 30 "$STATE/apt.log" >&2; die "apt-get install slurm-wlm munge iproute2 failed (log: $STATE/apt.log)"; }
    fi
    need_install && die "slurm/munge binaries still missing after apt-get install"
    log "installed $(slurmctld -V)"
fi

# --------------------------------------------------------------------------- config
ETC=$STATE/etc RUN=$STATE/run LOGD=$STATE/log
CTL=$(hostname -s)
CONF=$ETC/slurm.conf
NODE_LIST=node[1-$NODES]

# Node hardware as slurmd sees it; RealMemory must not exceed what slurmd reports or
# the node gets drained ("Low RealMemory"), so leave a margin.
HW=$(slurmd -C | head -n 1)
hw() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$HW"; }
CPUS=$(hw CPUs); BOARDS=$(hw Boards); SOCKETS=$(hw SocketsPerBoard); CORES=$(hw CoresPerSocket); THREADS=$(hw ThreadsPerCore)
MEM=$(hw RealMemory); FREE_MEM=$(free -m | awk '/^Mem:/{print $2}')
(( FREE_MEM < MEM )) && MEM=$FREE_MEM
MEM=$(( MEM > 1024 ? MEM - 256 : MEM * 3 / 4 ))
if [[ -n ${CIRCLES_SLURM_CPUS:-} && ${CIRCLES_SLURM_CPUS} != "$CPUS" ]]; then
    NODE_HW="CPUs=$CIRCLES_SLURM_CPUS"
    OVERRIDES="SlurmdParameters=config_overrides"
else
    NODE_HW="CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS"
    OVERRIDES=""
fi

NEW_CONF=$(cat <<CONF
# Generated by scripts/slurm/local_cluster/up.sh -- a test cluster of $NODES nodes on one host.
ClusterName=circles
SlurmctldHost=$CTL($CTL_ADDR)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root

# munge: private munged with its own socket (see $RUN/munge.socket);
# cred_expire=10 -> a requeued job is eligible again after ~10 s instead of ~120 s.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge.socket,cred_expire=10

StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGD/slurmctld.log
SlurmdLogFile=$LOGD/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Final job records (JobState, ExitCode) are appended here; sacct does not work.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGD/jobcomp.log
MpiDefault=none
MailProg=/bin/true

SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Batch jobs are requeueable by default (scontrol requeue, Lightning auto-requeue).
JobRequeue=1
ReturnToService=2
# Keep finished jobs visible to "scontrol show job" for a day.
MinJobAge=86400
KillWait=10
InactiveLimit=0
SlurmdTimeout=60
$OVERRIDES

$(for i in $(seq "$NODES"); do
    echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") NodeHostname=$(node_name "$i") $NODE_HW RealMemory=$MEM State=UNKNOWN"
done)
# LLN: each job goes to the least loaded node (an array's tasks spread over the nodes).
PartitionName=debug Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2 LLN=YES
CONF
)
NEW_CGROUP='# Generated by up.sh. Not used for tracking (proctrack/linuxproc, task/none), but
# slurmd reads it; "autodetect" copes with the hybrid v1/v2 hierarchy (cgroup/v2 fails).
CgroupPlugin=autodetect'

pid_alive() { # pidfile expected-comm: that process exists, is not a zombie, has that name
    local pid stat
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}
node_states() { SLURM_CONF=$CONF timeout 5 sinfo -h -N -n "$NODE_LIST" -o '%N %T' 2>/dev/null | sort -u; }
all_nodes() { # state-pattern: every node of the cluster is in such a state
    local states
    states=$(node_states) || return 1
    (( $(grep -c . <<<"$states") == NODES )) || return 1
    ! grep -qvE " ($1)\$" <<<"$states"
}
slurmds_alive() {
    local i
    for i in $(seq "$NODES"); do
        pid_alive "$RUN/slurmd-$(node_name "$i").pid" slurmd || return 1
    done
}
network_up() {
    local i
    ip link show "$NET" >/dev/null 2>&1 || return 1
    for i in $(seq "$NODES"); do [[ -e /run/netns/$(node_ns "$i") ]] || return 1; done
}
# --------------------------------------------------------------------------- reuse?
if [[ -f $CONF ]] && [[ "$(cat "$CONF")" == "$NEW_CONF" ]] \
   && pid_alive "$RUN/munged.pid" munged && pid_alive "$RUN/slurmctld.pid" slurmctld \
   && slurmds_alive && network_up && all_nodes 'idle|mixed|allocated|completing'; then
    log "cluster in $STATE already up, reusing it"
    echo "export SLURM_CONF=$CONF"
    exit 0
fi

# --------------------------------------------------------------------------- fresh start
if [[ -d $RUN ]]; then
    log "no healthy cluster with this config in $STATE: stopping leftovers, starting afresh"
fi
CIRCLES_SLURM_LOCK_HELD=$STATE "$HERE/down.sh" "$STATE" >&2 || true
rm -rf "$STATE/log.prev"
[[ -d $LOGD ]] && mv "$LOGD" "$STATE/log.prev"   # previous run's logs, for debugging
rm -rf "$STATE/ctld" "$STATE/spool" "$RUN" "$ETC"
mkdir -p "$ETC" "$RUN" "$LOGD" "$STATE/ctld" "$STATE/spool"
printf '%s\n' "$NEW_CONF" > "$CONF"
printf '%s\n' "$NEW_CGROUP" > "$ETC/cgroup.conf"
export SLURM_CONF=$CONF

if ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; then
    die "TCP port $PORT is already in use (another slurmctld? see 'ss -ltnp'); set CIRCLES_SLURM_PORT"
fi

dump_logs() {
    local f
    for f in "$LOGD"/munged.log "$LOGD"/slurmctld.log "$LOGD"/slurmd-*.log; do
        [[ -f $f ]] || continue
        echo "----- tail $f" >&2
        tail -n 40 "$f" >&2
    done
    echo "----- sinfo -N -l; sinfo -R" >&2
    { timeout 10 sinfo -N -l; timeout 10 sinfo -R; } >&2 2>&1 || true
}
fail() { # report, show the logs, and leave nothing running (logs stay in $LOGD)
    printf '[slurm-up] ERROR: %s\n' "$*" >&2
    dump_logs
    CIRCLES_SLURM_LOCK_HELD=$STATE "$HERE/down.sh" "$STATE" >&2 || true
    printf '[slurm-up] ERROR: %s (logs: %s)\n' "$*" "$LOGD" >&2
    exit 1
}

# munge key private to this cluster (only our munged reads it).
mungekey --create --keyfile="$ETC/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="$ETC/munge.key" bs=1024 count=1 2>/dev/null
chmod 600 "$ETC/munge.key"

# ------------------------------------------------------------------ the nodes' network
# A bridge here (slurmctld's address), and per node a network namespace joined to it by a
# veth pair, with its own address. One hosts file names every node; each slurmd sees it as
# /etc/hosts (bound in its own mount namespace), so hostnames resolve the same on every
# node, as a cluster's DNS would.
log "making the network: bridge $NET ($CTL_ADDR/24), nodes $NODE_LIST"
{ printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n%s %s\n' "$CTL_ADDR" "$CTL"
  for i in $(seq "$NODES"); do printf '%s %s\n' "$(node_addr "$i")" "$(node_name "$i")"; done
} >"$ETC/hosts"
{
    ip link add "$NET" type bridge
    ip addr add "$CTL_ADDR/24" dev "$NET"
    ip link set "$NET" up
    for i in $(seq "$NODES"); do
        ns=$(node_ns "$i")
        ip netns add "$ns"
        ip link add "$(node_veth "$i")" type veth peer name eth0 netns "$ns"
        ip link set "$(node_veth "$i")" master "$NET" up
        ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done
} 2>>"$LOGD/network.log" || fail "could not make the nodes' network namespaces (needs CAP_NET_ADMIN; see $LOGD/network.log)"

log "starting munged"
munged --force --socket="$RUN/munge.socket" --key-file="$ETC/munge.key" \
    --pid-file="$RUN/munged.pid" --log-file="$LOGD/munged.log" \
    --seed-file="$STATE/munge.seed" >>"$LOGD/munged.log" </dev/null 2>&1 9>&- \
    || fail "munged failed to start"
for _ in $(seq 50); do [[ -S $RUN/munge.socket ]] && break; sleep 0.1; done
munge -n --socket="$RUN/munge.socket" | unmunge --socket="$RUN/munge.socket" >/dev/null 2>&1 \
    || fail "munge round trip through $RUN/munge.socket failed"

log "starting slurmctld"
slurmctld -c -f "$CONF" >>"$LOGD/slurmctld.start.log" </dev/null 2>&1 9>&- || fail "slurmctld failed to start"
for i in $(seq "$NODES"); do
    name=$(node_name "$i")
    log "starting slurmd on $name ($(node_addr "$i"), namespace $(node_ns "$i"))"
    mkdir -p "$STATE/spool/$name"
    # its own network namespace, hostname (UTS namespace) and /etc/hosts (mount namespace): jobs inherit all three
    nsenter --net="/run/netns/$(node_ns "$i")" unshare --uts --mount --propagation private \
        sh -c 'mount --bind "$3" /etc/hosts && hostname "$1" && exec slurmd -f "$2" -N "$1"' sh "$name" "$CONF" "$ETC/hosts" \
        >>"$LOGD/slurmd-$name.start.log" </dev/null 2>&1 9>&- || fail "slurmd on $name failed to start"
done

started=$(date +%s)
deadline=$(( started + TIMEOUT ))
while ! all_nodes idle; do
    states=$(node_states || true)
    bad=$(grep -E ' (drain|fail|inval)' <<<"$states" | head -n 1 || true)
    [[ -n $bad ]] && fail "node ${bad% *} is '${bad#* }': $(timeout 5 scontrol show node "${bad% *}" | grep -o 'Reason=.*')"
    if (( $(date +%s) >= started + 3 )); then   # daemons have written their pid files by now
        pid_alive "$RUN/slurmctld.pid" slurmctld || fail "slurmctld is not running"
        slurmds_alive || fail "a slurmd is not running"
    fi
    (( $(date +%s) < deadline )) || fail "nodes not idle after ${TIMEOUT}s (states: $(tr '\n' ' ' <<<"${states:-no answer}"))"
    sleep 0.2
done
log "nodes $NODE_LIST are idle; cluster up (state dir $STATE)"
echo "export SLURM_CONF=$CONF"
