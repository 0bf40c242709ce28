"""What the controller itself costs as the fleet grows: its CPU per host for connect +
preflight + status, and a whole ``inv spawn`` on a large testbed (wall time, peak RSS).

CPU is the controller process's own (user + system of every thread, ``time.process_time``),
never the hosts': on a testbed the hosts' sshd share the controller's cores, but they are
other processes. Peak RSS is the ``inv`` process's high-water mark, from ``wait4``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.testbed import Testbed
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet
from fabfile.remote.ssh import SshSettings


def controller_cpu_s(names: Sequence[str], settings: SshSettings) -> float:
    """Our CPU seconds for what a fresh ``inv`` call does first: connect to every host, the
    preflight (python3, private directory, free space), and a status (our processes)."""
    started = time.process_time()
    fleet = Fleet(names, settings)
    try:
        fleet.open()
        fleet.each(lambda h: reaper.our_pids(fleet[h]), what="status")
    finally:
        fleet.close()  # joins each connection's transport thread: its CPU is counted
    return time.process_time() - started


def spawn_file(servers: Sequence[str], agents: Sequence[str], *, seconds: float, rate: float) -> str:
    """A Redis Cluster on ``servers`` (a single Redis on one), an agent on every agent host,
    one short open-loop SET benchmark at a low rate: the fleet's cost, not the server's."""
    kind = "redis-cluster" if len(servers) >= 3 else "redis"
    return (
        f'name = "perf-spawn-{len(set([*servers, *agents]))}"\n[hosts]\n'
        f"servers = {json.dumps(list(servers))}\nagents = {json.dumps(list(agents))}\n"
        f'[server]\nkind = "{kind}"\nport = 7200\n'
        f'[[benchmark]]\nname = "set"\nworkload = "set"\nagents = {len(agents)}\nduration = "{seconds:g}s"\n'
        f"connections = 1\nrate = {rate:g}\n"
    )


@dataclass(frozen=True)
class SpawnRun:
    exit_code: int
    wall_s: float
    cpu_s: float  # the inv process and what it waited for
    peak_rss_mb: float
    output: str

    def status(self) -> str | None:
        """The run's status as ``inv spawn`` reported it ("run ID: STATUS -> PATH")."""
        for line in reversed(self.output.splitlines()):
            found = _RUN_LINE.match(line.strip())
            if found:
                return found.group(2)
        return None


_RUN_LINE = re.compile(r"run (\S+): (\w+) -> ")


def run_measured(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> SpawnRun:
    """Run ``argv`` to completion; its wall time, CPU and peak RSS (from ``wait4``)."""
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(65536), b"")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    reader.join(10)
    return SpawnRun(proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                    b"".join(chunks).decode(errors="replace"))


def available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hosts_memory_mb(testbed: Testbed) -> float:
    """The PSS of every process on the testbed's hosts: each host's sshd (its pid 1) and
    everything under it (sessions, servers, agents). PSS shares shared pages out fairly."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total_kb = 0
    todo = [h.sshd_pid for h in testbed.hosts() if h.sshd_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total_kb += next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return total_kb / 1024
