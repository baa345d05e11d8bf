#!/usr/bin/env bash
# Tear down the single-node SLURM cluster started by up.sh.
#
#   scripts/slurm/local_cluster/down.sh [STATE_DIR]    (default: /tmp/circles-slurm)
#
# Cancels whatever jobs are left, stops slurmd, slurmctld and munged through the pid
# files in STATE_DIR/run (a pid is only signalled if /proc/PID/comm names the expected
# daemon, so stale pid files after a reboot are harmless), kills leftover job step
# daemons (slurmstepd) of this cluster with their process trees, and waits until all
# of it is gone. The state dir itself is kept (logs); up.sh wipes what it needs to.
# Safe to run when nothing is up. Exit status 0 unless something survived SIGKILL.
set -uo pipefail

STATE=${1:-/tmp/circles-slurm}
case $STATE in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
RUN=$STATE/run
CONF=$STATE/etc/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

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

stop() { # name
    local name=$1 pid
    pid=$(pid_of "$RUN/$name.pid" "$name") || { rm -f "$RUN/$name.pid"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    if ! wait_gone 15 "$pid"; then
        log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        wait_gone 5 "$pid" || { log "ERROR: $name (pid $pid) survived SIGKILL"; rc=1; }
    fi
    rm -f "$RUN/$name.pid"
}

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

stop slurmd
stop slurmctld
stop munged
rm -f "$RUN"/munge.socket*
# A step daemon started while we were stopping slurmd would be orphaned: last sweep.
steps=$(our_stepds | tr '\n' ' ')
if [[ -n ${steps// } ]]; then
    # shellcheck disable=SC2046,SC2086
    kill -KILL $(descendants $steps) 2>/dev/null
fi
log "done"
exit $rc
