#!/bin/bash
# A one-node Slurm cluster on this machine, to try the class-grading flow without a real cluster
# (and for the kit's test suite): munged, slurmctld and slurmd, all state in one folder.
#
#   deploy/slurm/local-cluster.sh start DIR   # prints the line to use it: export SLURM_CONF=DIR/slurm.conf
#   deploy/slurm/local-cluster.sh stop DIR    # cancels its jobs, stops the daemons, removes DIR
#
# DIR holds the configuration, the munge key, the daemons' state, spool, pid files and logs
# (DIR/log/), and nothing else: stop removes it.
#
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge); no systemd: the daemons
# are started here and found again by their pid files. Generated for this host: the node is this
# hostname with nproc CPUs and the machine's memory; a munge key made for this cluster; free
# ports; processes tracked by Linux process tree (proctrack/linuxproc) and no task plugin, so
# no cgroup plugin is needed. As root, jobs run as whoever submits them; as another user,
# slurmd runs as that user and can run only that user's jobs.
#
# Exit codes: 0 started (or stopped); 2 usage; 3 the packages are missing; 4 a daemon did not
# start in time (the logs are printed, then whatever was started is stopped and DIR removed).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
[ "$action" = stop ] && [ ! -d "$2" ] && exit 0
mkdir -p "$2"
dir=$(cd "$2" && pwd)
MARK=.local-slurm-cluster  # what stop looks for before it removes the folder
timeout=${LOCAL_CLUSTER_TIMEOUT:-30}  # seconds each daemon may take to come up

pid_of() { [ -s "$1" ] && cat "$1"; }
# Running, and not a zombie: an init that is not systemd may be slow to reap our daemons.
alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    [ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# End one of our daemons by the pid it recorded: TERM, then KILL after 10 s.
end() {
    local pid
    pid=$(pid_of "$1") || return 0
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    if [ -f "$dir/slurm.conf" ] && alive "$(pid_of "$dir/run/slurmctld.pid")"; then
        export SLURM_CONF=$dir/slurm.conf
        scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
        # Jobs end before their slurmd stops, or their processes would outlive the cluster.
        for _ in $(seq 30); do
            [ -z "$(squeue --noheader --states=RUNNING,COMPLETING 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    end "$dir/run/slurmd.pid"
    end "$dir/run/slurmctld.pid"
    end "$dir/run/munged.pid"
    # Only a folder this script made a cluster in.
    if [ -f "$dir/$MARK" ]; then rm -rf "$dir"; fi
}

# Wait up to $timeout s for a command to succeed; false if it never does.
wait_for() {
    for _ in $(seq $((timeout * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

fail() {
    echo "error: $1" >&2
    for log in "$dir"/log/*.log; do [ -s "$log" ] && { echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; }; done
    stop
    exit 4
}

# Two distinct free ports (slurmctld's, slurmd's), both held open while the kernel picks them.
free_ports() {
    python3 -c 'import socket
held = [socket.socket() for _ in range(2)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in held))'
}

start() {
    local missing=() command
    if [ ! -f "$dir/$MARK" ] && [ -n "$(ls -A "$dir")" ]; then
        echo "error: $dir is not empty: give a new folder (stop removes it)" >&2
        exit 2
    fi
    export PATH=$PATH:/usr/sbin  # the daemons, for a user whose PATH has no sbin
    for command in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "error: not installed: ${missing[*]} (apt-get install slurm-wlm munge)" >&2
        exit 3
    fi
    if alive "$(pid_of "$dir/run/slurmctld.pid")"; then
        echo "error: a cluster is already running from $dir; stop it first" >&2
        exit 2
    fi
    touch "$dir/$MARK"
    mkdir -p "$dir/munge" "$dir/run" "$dir/state" "$dir/spool" "$dir/log"
    chmod 700 "$dir/munge"
    rm -f "$dir/munge/munge.key"
    mungekey --create --keyfile="$dir/munge/munge.key"
    # --force: munged wants every folder above its socket open to all users, for other users'
    # jobs; this cluster runs only its own user's, and DIR may be in a private folder (pytest's).
    munged --force --socket="$dir/run/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" || fail "munged did not start"
    wait_for test -S "$dir/run/munge.socket" || fail "munged's socket did not appear within $timeout s"

    local node user cpus memory ports
    node=$(hostname -s)
    user=$(id -un)
    cpus=$(nproc)
    memory=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    read -r -a ports <<< "$(free_ports)"
    : > "$dir/plugstack.conf"  # not the system's /etc/slurm/plugstack.conf
    cat > "$dir/slurm.conf" <<EOF
# Generated by $0 for $node: a one-node cluster whose state lives in $dir.
ClusterName=kit-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/run/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
# No systemd and no cgroup plugin needed: processes are found by their parent links.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MailProg=/bin/true
# Finished jobs stay visible to squeue/scontrol for an hour (there is no accounting database).
MinJobAge=3600
# Look at pending jobs (a dependency just satisfied) every 2 s, not every minute.
SchedulerParameters=sched_interval=2
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF" -i || fail "slurmctld did not start"
    wait_for scontrol ping || fail "slurmctld did not answer within $timeout s"
    slurmd -f "$SLURM_CONF" -N "$node" || fail "slurmd did not start"
    node_idle() { sinfo --noheader --nodes="$node" --format=%T | grep -qx idle; }
    wait_for node_idle || fail "node $node did not become idle within $timeout s: $(sinfo --noheader --nodes="$node" --format='%T %E' 2>&1)"
    echo "export SLURM_CONF=$SLURM_CONF"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
