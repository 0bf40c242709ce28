"""Facts about one host, gathered once per run so results can say what they ran on.

``agent.pex facts [--out PATH] [--pex-dir DIR]`` prints one JSON object on one line of stdout
and writes the same line to ``--out`` (atomically: a temp file renamed into place)::

    {"schema": "fleetbench.host-facts/1", "collected_at": 1732464000.1,
     "hostname": "bench-1", "cpu_model": "AMD EPYC 7B13", "logical_cores": 8,
     "usable_cores": 8, "memory_total_bytes": 33554432000, "kernel": "6.1.0-18-amd64",
     "os": "Debian GNU/Linux 12 (bookworm)", "machine": "x86_64",
     "libc": {"name": "glibc", "version": "2.36"},
     "python": {"version": "3.11.2", "implementation": "CPython", "executable": "/usr/bin/python3"},
     "boot_time": 1732400000, "clocksource": "tsc", "cpu_governor": "performance",
     "disks": ["nvme0n1"], "fleetbench_version": "0.1.0", "agent_pex": "/tmp/fb/agent.pex",
     "pex": [{"name": "agent.pex", "path": "/tmp/fb/agent.pex", "size_bytes": 123, "sha256": "..."}]}

Anything unreadable is null rather than an error (``usable_cores``: the CPUs this process may
run on; ``agent_pex``: the pex this runs from, if any; ``pex``: every ``*.pex`` in ``--pex-dir``,
a directory-layout pex with a null sha256; [] without ``--pex-dir``). Stdlib only, Python 3.9+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import socket
import sys
import time
from typing import Any

from bench import __version__
from bench.agent.procfs import parse_diskstats, parse_meminfo, whole_disks

FACTS_SCHEMA = "fleetbench.host-facts/1"

# /proc/cpuinfo keys naming the CPU, by architecture: x86 and most, MIPS, 32-bit ARM, POWER,
# RISC-V.
_CPU_MODEL_KEYS = ("model name", "cpu model", "Processor", "cpu", "uarch")


# ----- pure parsers -----


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """One dict per blank-line-separated block of /proc/cpuinfo."""
    blocks: list[dict[str, str]] = []
    block: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            if not line.strip() and block:
                blocks.append(block)
                block = {}
            continue
        block[key.strip()] = value.strip()
    if block:
        blocks.append(block)
    return blocks


def cpu_model(text: str) -> str | None:
    """The CPU's name from /proc/cpuinfo. arm64 kernels print no name, only ids: those are
    given as "ARM implementer 0x41 part 0xd0c"."""
    blocks = parse_cpuinfo(text)
    for block in blocks:
        for key in _CPU_MODEL_KEYS:
            if block.get(key):
                return block[key]
    for block in blocks:
        if "CPU implementer" in block and "CPU part" in block:
            return f"ARM implementer {block['CPU implementer']} part {block['CPU part']}"
    return None


def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release's shell-style KEY=value lines, values unquoted."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            words = shlex.split(value)
            value = " ".join(words)
        except ValueError:
            value = value.strip("\"'")
        out[key.strip()] = value
    return out


def parse_btime(proc_stat_text: str) -> int | None:
    """Boot time (epoch seconds) from /proc/stat's ``btime`` line."""
    for line in proc_stat_text.split("\n"):
        if line.startswith("btime "):
            return int(line.split()[1])
    return None


# ----- reading this host -----


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pex_files(directory: str) -> list[dict[str, Any]]:
    """Every ``*.pex`` in ``directory``, sorted by name; a directory-layout pex (packed or
    loose) is listed with a null sha256."""
    out: list[dict[str, Any]] = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".pex"):
            continue
        path = os.path.abspath(os.path.join(directory, name))
        if os.path.isdir(path):
            out.append({"name": name, "path": path, "size_bytes": None, "sha256": None})
        elif os.path.isfile(path):
            out.append({"name": name, "path": path, "size_bytes": os.path.getsize(path), "sha256": sha256_file(path)})
    return out


def _first_line(path: str) -> str | None:
    text = _read(path)
    if text is None:
        return None
    return text.strip() or None


def gather(pex_dir: str | None = None) -> dict[str, Any]:
    meminfo_text = _read("/proc/meminfo")
    cpuinfo_text = _read("/proc/cpuinfo")
    stat_text = _read("/proc/stat")
    diskstats_text = _read("/proc/diskstats")
    os_release_text = _read("/etc/os-release")
    if os_release_text is None:
        os_release_text = _read("/usr/lib/os-release")
    try:
        usable_cores: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cores = None
    return {
        "schema": FACTS_SCHEMA,
        "collected_at": round(time.time(), 3),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(cpuinfo_text) if cpuinfo_text is not None else None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "memory_total_bytes": parse_meminfo(meminfo_text).get("MemTotal") if meminfo_text else None,
        "kernel": platform.release(),
        "os": parse_os_release(os_release_text).get("PRETTY_NAME") if os_release_text else None,
        "machine": platform.machine(),
        "libc": libc(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "boot_time": parse_btime(stat_text) if stat_text else None,
        "clocksource": _first_line("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "cpu_governor": _first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "disks": whole_disks(parse_diskstats(diskstats_text)) if diskstats_text else [],
        "fleetbench_version": __version__,
        "agent_pex": os.environ.get("PEX"),
        "pex": pex_files(pex_dir) if pex_dir else [],
    }


def libc() -> dict[str, str] | None:
    """The C library the host's Python runs on (what its binary wheels must match), e.g.
    glibc 2.36; None where Python cannot tell (musl before Python 3.12 among them)."""
    name, version = platform.libc_ver()
    return {"name": name, "version": version} if name and version else None


def _write_atomically(path: str, data: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="facts", description="Print (and write) one JSON object of this host's facts.")
    p.add_argument("--out", default=None, help="also write the JSON line to this file")
    p.add_argument("--pex-dir", default=None, help="list *.pex files here with their sha256")
    args = p.parse_args(argv)
    if args.pex_dir is not None and not os.path.isdir(args.pex_dir):
        print(f"facts: --pex-dir {args.pex_dir}: not a directory", file=sys.stderr)
        return 2
    line = json.dumps(gather(args.pex_dir), sort_keys=False, separators=(",", ":")) + "\n"
    if args.out is not None:
        _write_atomically(args.out, line)
    sys.stdout.write(line)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
