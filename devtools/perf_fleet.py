"""What the controller itself costs as the fleet grows: its CPU per host for connect +
preflight + status (and OpenSSH's client for the same), and a whole ``inv spawn`` on a large
testbed (wall time, peak RSS).

CPU is the controller process's own (user + system of every thread, ``time.process_time``),
never the hosts': on a testbed the hosts' sshd share the controller's cores, but they are
other processes. OpenSSH's is that of its ``ssh`` processes, each read from ``wait4`` when it
exits. Peak RSS is the ``inv`` process's high-water mark, from ``wait4``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.perf_figures import Figure, PerfError, best
from devtools.testbed import Testbed
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet, preflight_command
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


def openssh_command() -> str:
    """What one ``ssh`` runs on a host to do what :func:`controller_cpu_s` does there: the
    preflight (as ``Fleet.open`` sends it to a host with no address override and no bundled
    python), then the status (``reaper.our_pids``), each in a subshell so the preflight's
    ``exit`` ends only it. We open a channel for each; ssh has the two in one."""
    return f"(\n{preflight_command()}\n) && (\n{reaper.find_command()}\n)"


def openssh_cpu_s(names: Sequence[str], ssh_config: Path, *options: str) -> float:
    """The CPU seconds (user + system) of OpenSSH's client doing what :func:`controller_cpu_s`
    does: one ``ssh -F ssh_config`` per host, all at once, each connecting (its default key
    exchange and ciphers unless ``options`` say otherwise), logging in and running
    :func:`openssh_command`. Each process's CPU is its own, from ``wait4``: its exec and
    dynamic loading count, as they do for every host it serves."""
    argv = ["ssh", "-F", str(ssh_config), "-n", "-T", "-o", "BatchMode=yes", *options]
    remote = openssh_command()
    total = 0.0
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="fleetbench-perf-ssh-") as scratch:
        running: list[tuple[str, subprocess.Popen, Path]] = []
        try:
            for name in names:
                err = Path(scratch) / f"{name}.err"
                with open(err, "wb") as fh:
                    proc = subprocess.Popen([*argv, name, remote], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=fh)
                running.append((name, proc, err))
        finally:
            for name, proc, err in running:  # every one started is waited for, even after a failure
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
                total += usage.ru_utime + usage.ru_stime
                if proc.returncode != 0:
                    failed[name] = f"exit {proc.returncode}: {err.read_text(errors='replace').strip()[-500:]}"
    if failed:
        raise PerfError(f"`{' '.join(argv)} HOST <preflight and status>` failed on {len(failed)} host(s): "
                        + "; ".join(f"{name}: {why}" for name, why in failed.items()))
    return total


#: What ``ssh -v`` says it negotiated: "kex: algorithm: X", "kex: server->client cipher: X MAC: Y ...".
_SSH_KEX = re.compile(r"debug1: kex: algorithm: (\S+)")
_SSH_CIPHER = re.compile(r"debug1: kex: server->client cipher: (\S+) MAC: (\S+)")
_SSH_HOSTKEY = re.compile(r"debug1: kex: host key algorithm: (\S+)")


def openssh_negotiated(ssh_config: Path, name: str, *options: str) -> dict[str, str]:
    """What OpenSSH's client negotiates with ``name``'s sshd (one ``ssh -v`` run, not measured)."""
    proc = subprocess.run(["ssh", "-v", "-F", str(ssh_config), "-n", "-T", "-o", "BatchMode=yes", *options, name,
                           "true"], capture_output=True, text=True, timeout=60)
    return parse_negotiated(proc.stderr)


def parse_negotiated(ssh_verbose: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if found := _SSH_KEX.search(ssh_verbose):
        out["kex"] = found.group(1)
    if found := _SSH_HOSTKEY.search(ssh_verbose):
        out["host_key"] = found.group(1)
    if found := _SSH_CIPHER.search(ssh_verbose):
        out["cipher"] = found.group(1)
        out["mac"] = found.group(2)
    return out


class _AgreedKex(logging.Handler):
    """Keeps the key exchange paramiko logs ("Kex: NAME"): it drops its kex engine once done."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.kex = ""

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"Kex: (\S+)$", record.getMessage())
        if found:
            self.kex = found.group(1)


def fleet_negotiated(name: str, settings: SshSettings) -> dict[str, str]:
    """What our transport negotiates with ``name``'s sshd (one connect, not measured)."""
    logger = logging.getLogger("paramiko.transport")
    agreed, level = _AgreedKex(), logger.level
    logger.addHandler(agreed)
    logger.setLevel(logging.DEBUG)
    fleet = Fleet([name], settings)
    try:
        fleet.connect()
    finally:
        logger.removeHandler(agreed)
        logger.setLevel(level)
    try:
        t: Any = fleet.connections[name].transport
        cipher = t.local_cipher or ""
        # paramiko names a MAC under GCM too, but computes none (the cipher authenticates).
        return {"kex": agreed.kex, "host_key": t.host_key_type or "", "cipher": cipher,
                "mac": "<implicit>" if "gcm" in cipher else t.local_mac or ""}
    finally:
        fleet.close()


def openssh_start_cpu_s(names: Sequence[str], ssh_config: Path) -> float:
    """For the record: the CPU of an ``ssh`` that starts and reads its configuration for each
    host (``ssh -G``) and connects nowhere: what of OpenSSH's per-host cost is its process."""
    total = 0.0
    for name in names:
        proc = subprocess.Popen(["ssh", "-F", str(ssh_config), "-G", name], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0  # reaped here: Popen must not wait again
        total += usage.ru_utime + usage.ru_stime
    return total


#: The fleet size of controller_cpu_per_host_vs_openssh and controller_cpu_ms_per_host.
PER_HOST_FLEET = 32
#: OpenSSH with the key exchange and cipher our transport negotiates with the testbed's sshd
#: (an informational side: what of the ratio is the algorithms, what is the client).
OURS_ALGORITHMS = ("-o", "KexAlgorithms=curve25519-sha256", "-o", "Ciphers=aes128-gcm@openssh.com")


def controller_cpu_figures(ours_ms: Mapping[int, Sequence[float]], openssh_ms: Sequence[float],
                       openssh_ours_algorithms_ms: Sequence[float] = (), openssh_start_ms: Sequence[float] = (),
                       negotiated: Mapping[str, Any] | None = None, command: str = "") -> list[Figure]:
    """The controller's per-host CPU figures from samples in ms per host: ``ours_ms`` per fleet
    size (PER_HOST_FLEET at least; 8 and 128 give controller_per_host_128_vs_8), OpenSSH's
    over PER_HOST_FLEET hosts with its defaults and, for the record, with our algorithms and
    its process start alone. Each side is its best sample (the least disturbed on a shared
    machine)."""
    hosts = PER_HOST_FLEET
    if not ours_ms.get(hosts) or not openssh_ms:
        raise PerfError(f"no samples of ours or of OpenSSH's at {hosts} hosts: nothing to compare")
    per_host = {n: best(v) for n, v in ours_ms.items()}
    ours, theirs = per_host[hosts], best(openssh_ms)
    if theirs <= 0:
        raise PerfError(f"OpenSSH's ssh processes counted no CPU ({list(openssh_ms)}): the measure is broken")
    raw: dict[str, Any] = {
        "ms_per_host": {str(n): list(v) for n, v in ours_ms.items()},
        "best_ms_per_host": {str(n): v for n, v in per_host.items()},
        "openssh_ms_per_host": list(openssh_ms), "best_openssh_ms_per_host": theirs,
        "negotiated": dict(negotiated or {}), "command": command,
    }
    notes = [f"{hosts} hosts"]
    if openssh_ours_algorithms_ms:
        same = best(openssh_ours_algorithms_ms)
        raw["openssh_ours_algorithms_ms_per_host"] = list(openssh_ours_algorithms_ms)
        raw["vs_openssh_ours_algorithms"] = ours / same
        notes.append(f"ssh with our key exchange and cipher {same:.2f} ms: {ours / same:.2f}")
    if openssh_start_ms:
        raw["openssh_start_ms_per_host"] = list(openssh_start_ms)
        notes.append(f"an ssh that only starts {best(openssh_start_ms):.2f} ms")
    figures = [
        Figure("controller_cpu_per_host_vs_openssh", ours / theirs,
               f"our CPU for connect + preflight + status {ours:.2f} ms per host / one `ssh` per host doing the "
               f"same {theirs:.2f} ms ({'; '.join(notes)})", raw),
        Figure("controller_cpu_ms_per_host", ours,
               f"our CPU for connect + preflight + status over {hosts} hosts: {ours * hosts:.0f} ms / {hosts}"
               + (f" (ms per host at {', '.join(f'{n}: {v:.2f}' for n, v in per_host.items())})"
                  if len(per_host) > 1 else ""), raw),
    ]
    if 8 in per_host and 128 in per_host:
        figures.append(Figure("controller_per_host_128_vs_8", per_host[128] / per_host[8],
                              f"per-host CPU at 128 hosts {per_host[128]:.2f} ms / at 8 hosts {per_host[8]:.2f} ms",
                              raw))
    return figures


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
