"""fleetbench's ``fab`` entry point: ad-hoc operations on the hosts given with ``-H``.

    fab -S .testbed/ssh_config -H tb1,tb2 status
    fab -S .testbed/ssh_config -H tb1 push --file ./thing.bin
    fab -S .testbed/ssh_config -H tb1 logs --lines 50
    fab -S .testbed/ssh_config -H tb1,tb2 stop

The modules beside this one are the side-effect half of fleetbench (SSH, builds, processes);
``cli/`` composes them into the tasks of ``fleetbench`` (and of ``inv``, through the checkout's
``tasks.py``). Here, each task first makes Fabric's connection check host keys (Fabric itself
accepts any key), then acts on the host through fleetbench's own seam (fabfile.remote.host), as
the pipeline's tasks do.
"""

from __future__ import annotations

from pathlib import Path

from fabric import Connection, task

from fabfile.remote import reaper
from fabfile.remote.host import Host, SshHost
from fabfile.remote.shell import REMOTE_DIR, cmd, run
from fabfile.remote.ssh import SshSettings, open_checked, secure
from fabfile.ship.push import ProgressPrinter, sha256_file
from fabfile.ship.push import push as push_file
from fabfile.terminal import say

LOG_TAIL_BYTES = 1 << 20


def _checked(c: Connection) -> Host:
    if not c.is_connected:
        secure(c, SshSettings())
        c.fleetbench_name = c.original_host
        open_checked(c, SshSettings())
    return SshHost(c)


@task
def status(c):
    """What fleetbench has on this host: files, server nodes and running processes."""
    h = _checked(c)
    script = (
        f"cd {cmd(REMOTE_DIR)} 2>/dev/null || {{ echo 'nothing deployed'; exit 0; }}; "
        "echo 'files:'; ls -l bin 2>/dev/null | sed -n 's/^/  /p'; "
        "for d in nodes/*/; do [ -d \"$d\" ] || continue; pid=$(cat \"$d/server.pid\" 2>/dev/null); "
        "if [ -n \"$pid\" ] && [ -d /proc/$pid ]; then s=running; else s=stopped; fi; "
        "n=${d#nodes/}; echo \"node ${n%/}: pid ${pid:-?} $s\"; "
        # How to connect by hand: the command reads the password on the host, it is never printed.
        "if [ -f \"$d/auth\" ] && [ -n \"$pid\" ] && [ -d /proc/$pid ]; then "
        "a=$(cat \"$d/address\" 2>/dev/null); "
        "x=$(ls bin/server-*.pex 2>/dev/null | head -n 1); "
        "if [ -n \"$x\" ]; then "
        "echo \"  connect on this host: REDISCLI_AUTH=\\\"\\$(cat ~/.fleetbench/${d}auth)\\\" "
        "PEX_SCRIPT=redis-cli PEX_ROOT=~/.fleetbench/pex ~/.fleetbench/$x -h $a -p ${n%/}\"; else "
        # A redis-server built from source comes without redis-cli: our agent sends one command.
        "x=$(ls bin/agent-*.pex 2>/dev/null | head -n 1); "
        "echo \"  query on this host: PEX_ROOT=~/.fleetbench/pex ~/.fleetbench/$x redis call "
        "--auth-file ~/.fleetbench/${d}auth $a ${n%/} INFO server\"; fi; fi; done"
    )
    say(f"[{h.name}]")
    say(run(h, script).rstrip())
    pids = reaper.our_pids(h)
    say(f"processes of ours: {' '.join(map(str, pids)) if pids else 'none'}")


@task(help={"file": "local file to put into ~/.fleetbench/files/ on the host"})
def push(c, file):
    """Push a local file via cat (verified by sha256, installed atomically, skipped if present)."""
    h = _checked(c)
    path = Path(file)
    remote = f"{REMOTE_DIR}/files/{path.name}"
    run(h, f"umask 077 && mkdir -p {cmd(REMOTE_DIR + '/files')} && chmod 700 {cmd(REMOTE_DIR)}")
    sent = push_file(h, path, remote, sha256_file(path), ProgressPrinter(path.name))
    say(f"[{h.name}] {remote}: {'pushed' if sent else 'already there'}")


@task(help={"lines": "lines of each log (default 30)"})
def logs(c, lines=30):
    """The tail of every server node's logs on this host."""
    h = _checked(c)
    script = (
        f"cd {cmd(REMOTE_DIR)}/nodes 2>/dev/null || {{ echo 'no server nodes'; exit 0; }}; "
        "for f in */start.log */server.log; do "
        # A log line can be any length: the last MB at most, then its last lines.
        f"[ -s \"$f\" ] && {{ echo \"== $f\"; tail -c {LOG_TAIL_BYTES} \"$f\" | tail -n {int(lines)}; }}; done; true"
    )
    say(f"[{h.name}]")
    say(run(h, script).rstrip())


@task
def stop(c):
    """Stop every fleetbench process on this host (servers, agents, samplers)."""
    h = _checked(c)
    pids = reaper.reap(h)
    say(f"[{h.name}] stopped: {' '.join(map(str, pids)) if pids else 'nothing was running'}")
