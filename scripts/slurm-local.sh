#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost (Debian slurm-wlm + munge), for the launcher
# tests and for small boxes: `scripts/slurm-local.sh start | stop | status`.
#
#   start   write the config, start munged, slurmctld and slurmd (as root), wait until
#           `sinfo` shows the node idle; idempotent (a running cluster is left as it is).
#           Exits non-zero with the reason and the log tail if the node does not come up.
#   stop    kill the daemons this script started (by their pid files).
#   status  print the daemons and `sinfo`; exit 0 only if the node takes jobs.
#
# Node: this machine's CPUs and memory (as `slurmd -C` reads them) less HARNESS_SLURM_RESERVE_MB
# (default 10%, at least 512 MB); CPU only; partition `debug` (default); select/cons_tres with
# CR_CPU, so several 1-CPU jobs run at once; proctrack/linuxproc, task/none (no cgroups, so
# --mem is checked against the node but not enforced). cred_expire=10: a requeued job may start
# again after about 10-30 s instead of Slurm's default 120 s. No accounting database: `sacct`
# answers "accounting storage is disabled", submitit logs "Bypassing sacct error" and learns
# that a job ended from its result file; `sacct -c` lists finished jobs (jobcomp/filetxt).
# State, spool, logs and pid files live in HARNESS_SLURM_DIR (default /tmp/harness-slurm);
# /etc/slurm/slurm.conf becomes a link to the config there (never over a config not ours).
# Install first: apt-get install -y slurm-wlm munge.
set -euo pipefail

DIR=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by harness scripts/slurm-local.sh"
WAIT_S=${HARNESS_SLURM_WAIT_S:-60}
NODE=$(hostname -s)

die() { echo "slurm-local: error: $*" >&2; exit 1; }
say() { echo "slurm-local: $*"; }

alive() {  # alive PIDFILE: the pid in it is a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

need_tools() {
    local t
    for t in slurmctld slurmd sinfo sbatch munged munge; do
        command -v "$t" >/dev/null ||
            die "$t not found; install with: apt-get update && apt-get install -y slurm-wlm munge"
    done
}

node_line() {  # NodeName line: real CPUs/topology from slurmd -C, memory less a reserve
    local hw mem reserve
    hw=$(slurmd -C | head -1) || die "slurmd -C failed"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [[ -n $mem ]] || die "cannot read RealMemory from: $hw"
    reserve=${HARNESS_SLURM_RESERVE_MB:-$(( mem / 10 > 512 ? mem / 10 : 512 ))}
    (( mem - reserve >= 256 )) || die "only ${mem} MB of memory; need at least $((reserve + 256))"
    hw=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//' -e "s/RealMemory=[0-9]*//" <<<"$hw")
    echo "NodeName=$NODE NodeAddr=127.0.0.1 $hw RealMemory=$(( mem - reserve )) State=UNKNOWN"
}

write_conf() {
    mkdir -p "$DIR"/{state,spool,log} /etc/slurm
    cat >"$DIR/slurm.conf.new" <<EOF
$MARK ($(date -u +%FT%TZ)); do not edit, rerun it.
ClusterName=harness
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmdTimeout=300
$(node_line)
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if sed 1d "$DIR/slurm.conf.new" | cmp -s - <(sed 1d "$DIR/slurm.conf" 2>/dev/null); then
        rm "$DIR/slurm.conf.new"
    else
        mv "$DIR/slurm.conf.new" "$DIR/slurm.conf"
        CHANGED=1
    fi
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away first"
    fi
    ln -sfn "$DIR/slurm.conf" "$CONF"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged is already serving the default socket
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
    touch "$DIR/munged.ours"
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

wait_idle() {
    local state="" t
    for (( t = 0; t < WAIT_S; t++ )); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) say "node $NODE is $state"; return 0 ;;
            inval*) break ;;  # slurmd found less hardware than configured: will not recover
            drain* | down*) [[ $state == *"*" ]] || scontrol update nodename="$NODE" state=resume \
                2>/dev/null || true ;;
        esac
        sleep 1
    done
    echo "slurm-local: error: node $NODE is '${state:-not reported}' (waited ${t}s; want idle)" >&2
    sinfo -R >&2 || true
    tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null || true
    exit 1
}

start() {
    need_tools
    write_conf
    start_munge
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    elif [[ -n ${CHANGED:-} ]]; then
        scontrol reconfigure
    fi
    alive "$DIR/slurmd.pid" || slurmd || die "slurmd did not start; see $DIR/log/slurmd.log"
    wait_idle
}

stop() {
    local name pidfile
    for name in slurmd slurmctld; do
        pidfile=$DIR/$name.pid
        if alive "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do alive "$pidfile" || break; sleep 0.2; done
            alive "$pidfile" && kill -9 "$(cat "$pidfile")"
            say "stopped $name"
        fi
        rm -f "$pidfile"
    done
    if [[ -e $DIR/munged.ours ]]; then
        munged --stop 2>/dev/null && say "stopped munged"
        rm -f "$DIR/munged.ours"
    fi
}

status() {
    local name ok=0
    for name in slurmctld slurmd; do
        if alive "$DIR/$name.pid"; then say "$name running (pid $(cat "$DIR/$name.pid"))"
        else say "$name not running"; ok=1; fi
    done
    sinfo 2>/dev/null || ok=1
    case $(node_state) in idle | mixed | allocated | completing) ;; *) ok=1 ;; esac
    return $ok
}

main() {
    local cmd=${1:-}
    [[ $cmd =~ ^(start|stop|status)$ ]] ||
        { echo "usage: $0 start | stop | status" >&2; exit 2; }
    if [[ $EUID -ne 0 ]]; then
        sudo -n true 2>/dev/null || die "must run as root (the daemons run as root); try sudo $0 $cmd"
        exec sudo -n "$0" "$@"
    fi
    "$cmd"
}

main "$@"
