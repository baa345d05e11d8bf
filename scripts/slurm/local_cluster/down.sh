#!/usr/bin/env bash
# Tear down the SLURM cluster started by up.sh.
#
#   scripts/slurm/local_cluster/down.sh [STATE_DIR]    (default: /tmp/circles-slurm)
#
# Cancels whatever jobs are left, stops the slurmds, slurmctld and munged through the pid
# files in STATE_DIR/run (a pid is only signalled if /proc/PID/comm names the expected
# daemon, so stale pid files after a reboot are harmless), kills leftover job step
# daemons (slurmstepd) of this cluster and every process left in a node's namespace, and
# waits until all of it is gone; then removes the nodes' network namespaces (their veth
# pairs go with them) and the bridge. The state dir itself is kept
# (logs); up.sh wipes what it needs to. Safe to run when nothing is up, and again.
# Exit status 0 unless something survived SIGKILL or could not be removed.
set -uo pipefail

STATE=${1:-/tmp/circles-slurm}
case $STATE in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
RUN=$STATE/run
CONF=$STATE/etc/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/names.sh"

T0=${EPOCHREALTIME/[.,]/}
log() { local t=$(( ${EPOCHREALTIME/[.,]/} - T0 )); printf '[slurm-down %d.%02ds] %s\n' $((t / 1000000)) $((t % 1000000 / 10000)) "$*" >&2; }

alive() { # pid: exists and is not a zombie
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}
pid_of() { # pidfile expected-comm -> prints the pid if that process is alive
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && alive "$pid" && echo "$pid"
}

wait_gone() { # seconds pid...
    local n=$(( $1 * 10 )) p any
    shift
    while (( n-- > 0 )); do
        any=0
        for p in "$@"; do alive "$p" && any=1; done
        (( any )) || return 0
        sleep 0.1
    done
    return 1
}

stop() { # pidfile daemon
    local file=$1 name=$2 pid
    pid=$(pid_of "$file" "$name") || { rm -f "$file"; return 0; }
    log "stopping $(basename "$file" .pid) (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    if ! wait_gone 15 "$pid"; then
        log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        wait_gone 5 "$pid" || { log "ERROR: $name (pid $pid) survived SIGKILL"; rc=1; }
    fi
    rm -f "$file"
}
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NET-n[0-9]+\$"; }

# slurmstepd processes of *this* cluster: slurmd passes its environment (with our
# SLURM_CONF) on to them.
our_stepds() {
    local p
    for p in $(pgrep -x slurmstepd); do
        { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
    done
}
descendants() { # pid... -> the pids and all their descendants
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2; pids[++m] = $1 }
        END { do { changed = 0
                   for (i = 1; i <= m; i++) { p = pids[i]
                       if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } } } while (changed)
              for (p in keep) print p }'
}

# Same lock as up.sh (which holds it already when it calls us).
if [[ -d $STATE && ${CIRCLES_SLURM_LOCK_HELD:-} != "$STATE" ]]; then
    exec 9>"$STATE/.lock"
    flock 9
fi

rc=0
cancelled=0
if [[ -f $CONF ]] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// } ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null && cancelled=1
    fi
fi

# Give cancelled jobs a moment to exit on SIGTERM, then SIGKILL whatever is left of
# them (otherwise slurmd waits KillWait seconds for them before it stops).
if (( cancelled )); then
    for _ in $(seq 20); do [[ -z $(our_stepds) ]] && break; sleep 0.1; done
fi
steps=$(our_stepds | tr '\n' ' ')
if [[ -n ${steps// } ]]; then
    # shellcheck disable=SC2086
    victims=$(descendants $steps | tr '\n' ' ')
    log "killing leftover job steps and their processes: $victims"
    # shellcheck disable=SC2086
    kill -KILL $victims 2>/dev/null
    # shellcheck disable=SC2086
    wait_gone 5 $victims || { log "ERROR: job processes survived SIGKILL: $victims"; rc=1; }
fi

for f in "$RUN"/slurmd-*.pid; do [[ -e $f ]] && stop "$f" slurmd; done
stop "$RUN/slurmctld.pid" slurmctld
stop "$RUN/munged.pid" munged
rm -f "$RUN"/munge.socket*
# A step daemon started while we were stopping slurmd would be orphaned: last sweep.
steps=$(our_stepds | tr '\n' ' ')
if [[ -n ${steps// } ]]; then
    # shellcheck disable=SC2046,SC2086
    kill -KILL $(descendants $steps) 2>/dev/null
fi

# The nodes: whatever still runs inside a node's namespace goes first, then the namespace.
for ns in $(our_namespaces); do
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [[ -n ${left// } ]]; then
        log "killing processes left in $ns: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        # shellcheck disable=SC2086
        wait_gone 5 $left || { log "ERROR: processes in $ns survived SIGKILL: $left"; rc=1; }
    fi
    ip netns delete "$ns" || { log "ERROR: could not delete network namespace $ns"; rc=1; }
done
if ip link show "$NET" >/dev/null 2>&1; then
    ip link delete "$NET" || { log "ERROR: could not delete bridge $NET"; rc=1; }
fi
log "done"
exit $rc
