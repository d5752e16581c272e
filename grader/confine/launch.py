"""Start a confined process: join its control groups, set its rlimits, clear its environment, exec.

    python -I -S launch.py [--join FILE]... [--rlimit NAME=N]... [--env K=V]... -- COMMAND...

Run by the grader (outside the sandbox) in front of ``bwrap`` or of the command itself. Doing this
in the new process, before it runs anything else, leaves no window in which a child could be
forked outside the limits. Standard library only, and no ``import grader``: this file is run by
path (``-I -S``: no site, no environment, no current folder on ``sys.path``).
"""

import os
import sys

try:
    import resource
except ImportError:  # Windows: no rlimits; the grader's watchdog is all there is
    resource = None

RLIMITS = {
    "cpu": "RLIMIT_CPU",  # seconds of CPU time per process
    "fsize": "RLIMIT_FSIZE",  # bytes per file written
    "core": "RLIMIT_CORE",  # no core dumps
    "nproc": "RLIMIT_NPROC",  # processes of this user (the fallback where no pids cgroup)
}


def main(argv):
    if "--" not in argv:
        sys.exit("launch.py: missing -- before the command")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    env = {}
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--join":  # a cgroup's cgroup.procs: this process, and all it forks, join
            with open(value, "w") as handle:
                handle.write(str(os.getpid()))
        elif flag == "--rlimit":
            name, number = value.split("=", 1)
            kind = getattr(resource, RLIMITS[name], None) if resource is not None else None
            if kind is None:
                continue
            limit = int(number)
            soft, hard = resource.getrlimit(kind)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(kind, (limit, limit))
        elif flag == "--env":
            key, _, text = value.partition("=")
            env[key] = text
        else:
            sys.exit(f"launch.py: unknown option {flag}")
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
