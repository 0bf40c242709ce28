"""Text of a /proc file in, plain values out: the pure half of the host metrics sampler
(bench.agent.hostmetrics), tested without a host. Linux's formats as documented in proc(5)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import NamedTuple

CPU_FIELDS = ("user", "system", "iowait", "steal", "idle")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# Whole-disk fallback when /sys/block is unreadable: stacked or memory-backed devices whose I/O
# is already counted on the disks below them (or is not disk I/O at all).
VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "nbd", "drbd")
_PARTITION_SUFFIX = re.compile(r"p?\d+$")


class ProcStat(NamedTuple):
    """The aggregate ``cpu`` line of /proc/stat as (user, nice, system, idle, iowait, irq,
    softirq, steal) ticks, and the number of ``cpuN`` lines (online logical cores)."""

    cpu: tuple[int, ...]
    cores: int


def parse_proc_stat(text: str) -> ProcStat:
    cpu: tuple[int, ...] = ()
    cores = 0
    for line in text.split("\n"):
        if not line.startswith("cpu"):
            if cpu:
                break  # the cpu lines come first; skip the long intr/softirq lines
            continue
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:9]]
            cpu = tuple(values + [0] * (8 - len(values)))  # steal is absent before 2.6.11
        else:
            cores += 1
    if not cpu:
        raise ValueError("no aggregate cpu line in /proc/stat")
    return ProcStat(cpu, cores)


def cpu_percentages(prev: ProcStat, cur: ProcStat) -> dict[str, float] | None:
    """Percent of all cores spent in each of CPU_FIELDS between two reads; None if no tick
    passed. Each counter's delta is clamped at 0 (iowait is known to step backwards)."""
    d = [max(0, c - p) for p, c in zip(prev.cpu, cur.cpu)]
    user, nice, system, idle, iowait, irq, softirq, steal = d
    total = sum(d)
    if total <= 0:
        return None
    parts = (user + nice, system + irq + softirq, iowait, steal, idle)
    return {name: round(100.0 * part / total, 2) for name, part in zip(CPU_FIELDS, parts)}


def parse_meminfo(text: str) -> dict[str, int]:
    """Every /proc/meminfo field, in bytes for the ``kB`` ones and as-is for counts."""
    out: dict[str, int] = {}
    for line in text.split("\n"):
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if not fields:
            continue
        value = int(fields[0])
        out[key.strip()] = value * 1024 if len(fields) > 1 and fields[1] == "kB" else value
    return out


def memory(meminfo: dict[str, int]) -> dict[str, int]:
    """used = total - available. MemAvailable (Linux 3.14+) is approximated by
    free + buffers + cached on older kernels."""
    total = meminfo["MemTotal"]
    available = meminfo.get("MemAvailable")
    if available is None:
        available = meminfo.get("MemFree", 0) + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    return {"used_bytes": total - available, "available_bytes": available, "total_bytes": total}


def parse_loadavg(text: str) -> float:
    return float(text.split()[0])


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """{interface: (rx_bytes, tx_bytes)} from /proc/net/dev (of this network namespace)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.split("\n"):
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue  # the two header lines
        fields = rest.split()
        if len(fields) < 9:
            continue
        out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def parse_diskstats(text: str) -> dict[str, tuple[int, int]]:
    """{device: (sectors_read, sectors_written)} for every line of /proc/diskstats."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.split("\n"):
        fields = line.split()
        if len(fields) < 10:
            continue  # blank, or the 7-field partition lines of 2.6.x kernels
        out[fields[2]] = (int(fields[5]), int(fields[9]))
    return out


def is_partition(name: str, names: Iterable[str]) -> bool:
    """Name-only test: ``sda1`` of ``sda``, ``nvme0n1p2`` of ``nvme0n1``, ``mmcblk0p1``..."""
    for parent in names:
        if parent != name and name.startswith(parent) and _PARTITION_SUFFIX.fullmatch(name[len(parent):]):
            return True
    return False


def whole_disks(names: Iterable[str], sys_block: str | None = "/sys/block") -> list[str]:
    """The devices among ``names`` whose I/O is physical disk I/O, counted once.

    With sysfs: in ``/sys/block`` (so not a partition) and with a ``device`` link (so backed by
    a bus device, not loop/zram/dm/md stacked on a disk already counted). Without sysfs, or if
    that finds none: by name.
    """
    names = list(names)
    if sys_block is not None and os.path.isdir(sys_block):
        found = sorted(
            n for n in names if os.path.exists(os.path.join(sys_block, n.replace("/", "!"), "device"))
        )
        if found:
            return found  # else a masked or odd sysfs: judge by name
    return sorted(
        n for n in names if not n.startswith(VIRTUAL_DISK_PREFIXES) and not is_partition(n, names)
    )


def rates(
    prev: dict[str, tuple[int, int]], cur: dict[str, tuple[int, int]], dt: float
) -> dict[str, tuple[float, float]]:
    """Per-key (a/s, b/s) of two counter pairs; keys not in both reads are skipped, and a
    counter that went backwards (device re-created, counter reset) counts as 0."""
    out: dict[str, tuple[float, float]] = {}
    for key, (a, b) in cur.items():
        before = prev.get(key)
        if before is None:
            continue
        out[key] = (max(0, a - before[0]) / dt, max(0, b - before[1]) / dt)
    return out


def net_rates(
    prev: dict[str, tuple[int, int]], cur: dict[str, tuple[int, int]], dt: float
) -> dict[str, dict[str, float]]:
    return {
        iface: {"rx_Bps": round(rx, 1), "tx_Bps": round(tx, 1)}
        for iface, (rx, tx) in sorted(rates(prev, cur, dt).items())
    }


def disk_rates(
    prev: dict[str, tuple[int, int]], cur: dict[str, tuple[int, int]], disks: Iterable[str], dt: float
) -> dict[str, float]:
    wanted = set(disks)
    per_disk = rates({k: v for k, v in prev.items() if k in wanted}, cur, dt)
    return {
        "read_Bps": round(sum(r for r, _ in per_disk.values()) * SECTOR_BYTES, 1),
        "write_Bps": round(sum(w for _, w in per_disk.values()) * SECTOR_BYTES, 1),
    }


class PidStat(NamedTuple):
    name: str  # comm, at most 15 characters
    state: str  # R, S, D, Z, ...
    cpu_ticks: int  # utime + stime of all its threads, in CLOCK_TICKS
    reaped_ticks: int = 0  # cutime + cstime: what its exited (and waited-for) children used

    @property
    def tree_ticks(self) -> int:
        """Its own CPU and that of the children it reaped: summed over a process tree, every
        tick of the tree's processes, living or exited, is counted exactly once."""
        return self.cpu_ticks + self.reaped_ticks


def parse_pid_stat(text: str) -> PidStat:
    # comm may hold spaces and parentheses: it runs from the first "(" to the last ")".
    open_at = text.index("(")
    close_at = text.rindex(")")
    rest = text[close_at + 1 :].split()  # rest[0] is field 3 (state)
    return PidStat(
        name=text[open_at + 1 : close_at],
        state=rest[0],
        cpu_ticks=int(rest[11]) + int(rest[12]),  # fields 14 and 15
        reaped_ticks=int(rest[13]) + int(rest[14]),  # fields 16 and 17
    )


def parse_children(text: str) -> list[int]:
    """/proc/PID/task/TID/children: the pids of that thread's children, space-separated."""
    return [int(word) for word in text.split() if word.isdigit()]


def parse_pid_statm(text: str) -> int:
    """Resident pages from /proc/PID/statm. Not stat's field 24: since Linux 6.2 that one is
    a per-CPU counter read without summing, off by up to tens of pages; statm sums it."""
    return int(text.split()[1])


def parse_pid_file(text: str) -> int | None:
    """The pid in a pidfile's first word, or None if it is empty or not a positive integer."""
    fields = text.split()
    if not fields or not fields[0].isdigit():
        return None
    pid = int(fields[0])
    return pid if pid > 0 else None


def parse_pids(text: str) -> list[int]:
    """``--pids 123,456`` (spaces and empty items tolerated)."""
    pids = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        if not item.isdigit() or int(item) <= 0:
            raise ValueError(f"not a pid: {item!r}")
        pids.append(int(item))
    return pids
