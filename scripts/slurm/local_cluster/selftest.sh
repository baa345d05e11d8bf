#!/usr/bin/env bash
# Smoke test of a cluster brought up by up.sh (also a usage example for test fixtures).
#
#   scripts/slurm/local_cluster/selftest.sh [STATE_DIR]   (default: /tmp/circles-slurm)
#
# Checks: (1) a 2-node batch job runs a rank on each node through srun; (2) scancel --signal=USR1
# reaches the srun tasks, and the job requeues itself from the signal handler with
# `scontrol requeue` (what Lightning's SLURM auto-requeue does) and completes on its
# second run; (3) two 2-task jobs run at the same time (OverSubscribe=FORCE:2).
# The final state of each job is read with `scontrol show job` (no sacct here).
set -euo pipefail
STATE=${1:-/tmp/circles-slurm}
export SLURM_CONF=$STATE/etc/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin
[[ -f $SLURM_CONF ]] || { echo "no $SLURM_CONF; run up.sh first" >&2; exit 1; }
W=$(mktemp -d /tmp/circles-slurm-selftest.XXXXXX)
trap 'rm -rf "$W"' EXIT
PY=$(command -v python3)

t0=${EPOCHREALTIME/[.,]/}
el() { local t=$(( ${EPOCHREALTIME/[.,]/} - t0 )); printf '%d.%02ds' $((t / 1000000)) $((t % 1000000 / 10000)); }
say() { echo "[selftest $(el)] $*"; }
fail() { echo "[selftest $(el)] FAIL: $*" >&2; [[ -n ${JID:-} ]] && scontrol show job "$JID" >&2; exit 1; }
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
wait_for() { # seconds description command...
    local n=$(( $1 * 5 )) what=$2; shift 2
    until "$@"; do (( n-- > 0 )) || fail "timed out waiting for: $what"; sleep 0.2; done
}
finished() { case $(job_state "$1") in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) return 0;; esac; return 1; }

# ---------------------------------------------------------------- 1: two ranks
cat >"$W/ranks.sh" <<JOB
#!/bin/bash
#SBATCH --nodes=2 --ntasks-per-node=1 --output=$W/ranks-%j.out
srun bash -c 'echo rank \$SLURM_PROCID of \$SLURM_NTASKS on \$(hostname)'
JOB
JID=$(sbatch --parsable "$W/ranks.sh")
wait_for 30 "job $JID to finish" finished "$JID"
[[ $(job_state "$JID") == COMPLETED ]] || fail "job $JID ended $(job_state "$JID")"
if ! grep -qx 'rank 0 of 2 on node1' "$W/ranks-$JID.out" || ! grep -qx 'rank 1 of 2 on node2' "$W/ranks-$JID.out"; then
    fail "missing ranks in output: $(cat "$W/ranks-$JID.out")"
fi
say "ok 1: 2-node job $JID printed a rank from each node, ExitCode=$(job_field "$JID" ExitCode)"

# ---------------------------------------------------------------- 2: USR1 + requeue
cat >"$W/sig.py" <<'PYEOF'
import os, signal, subprocess, sys, time
d, rank = sys.argv[1], os.environ["SLURM_PROCID"]
restart = os.environ.get("SLURM_RESTART_COUNT", "0")
def on_usr1(signum, frame):
    open(f"{d}/usr1-rank{rank}-run{restart}", "w").close()
    if rank == "0":  # like Lightning: requeue ourselves from inside the job
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True)
signal.signal(signal.SIGUSR1, on_usr1)
open(f"{d}/ready-rank{rank}-run{restart}", "w").close()
if restart != "0":
    sys.exit(0)
for _ in range(600):
    time.sleep(0.1)
sys.exit(3)
PYEOF
cat >"$W/requeue.sh" <<JOB
#!/bin/bash
#SBATCH --nodes=1 --ntasks-per-node=2 --requeue --open-mode=append --output=$W/requeue-%j.out
echo "batch script start, restart count \${SLURM_RESTART_COUNT:-0}"
srun $PY $W/sig.py $W
JOB
JID=$(sbatch --parsable "$W/requeue.sh")
wait_for 30 "both ranks of job $JID running" test -e "$W/ready-rank0-run0" -a -e "$W/ready-rank1-run0"
say "job $JID running, sending: scancel --signal=USR1 $JID"
scancel --signal=USR1 "$JID"
wait_for 10 "USR1 to reach both srun tasks" test -e "$W/usr1-rank0-run0" -a -e "$W/usr1-rank1-run0"
say "ok 2a: SIGUSR1 reached both srun tasks"
wait_for 10 "job $JID to be requeued" bash -c "scontrol show job $JID | grep -q 'Restarts=1'"
say "job $JID requeued (state $(job_state "$JID")), waiting for its second run"
wait_for 60 "second run of job $JID" test -e "$W/ready-rank0-run1" -a -e "$W/ready-rank1-run1"
say "second run started"
wait_for 30 "job $JID to finish" finished "$JID"
[[ $(job_state "$JID") == COMPLETED ]] || fail "requeued job $JID ended $(job_state "$JID")"
say "ok 2b: job $JID requeued itself and COMPLETED on run 2 (Restarts=$(job_field "$JID" Restarts))"

# ---------------------------------------------------------------- 3: two jobs at once
cat >"$W/pair.sh" <<JOB
#!/bin/bash
#SBATCH --nodes=1 --ntasks-per-node=2 --output=/dev/null
srun bash -c 'touch $W/pair-\$SLURM_JOB_ID-\$SLURM_PROCID; sleep 3'
JOB
A=$(sbatch --parsable "$W/pair.sh"); B=$(sbatch --parsable "$W/pair.sh")
wait_for 10 "jobs $A and $B running together" bash -c "[[ \$(ls $W | grep -c '^pair-') == 4 ]]"
say "ok 3: jobs $A and $B ran concurrently"
wait_for 30 "jobs $A $B to finish" bash -c "! squeue -h -j $A,$B | grep -q ."
say "all ok"
