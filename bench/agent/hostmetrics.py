"""Per-second host metrics, sampled on every host (servers and agents) while benchmarks run.

``agent.pex metrics --interval 1 --out PATH [--pid-file F ...] [--pids 123,456] [--duration S]``
appends one JSON object per line (NDJSON) to PATH, written with one ``write`` per line so a lost
controller still finds every finished interval on disk. It runs until SIGTERM/SIGINT (or
``--duration``) and exits 0. One line, keys in this order::

    {"t": 1732464001.52,            # epoch seconds at the end of the interval
     "dt": 1.0,                     # seconds actually covered by the deltas below
     "cpu": {"user", "system", "iowait", "steal", "idle"},  # % of all cores; sums to 100
     "cores": 8, "load1": 0.42,
     "mem": {"used_bytes", "available_bytes", "total_bytes"},
     "net": {"eth0": {"rx_Bps", "tx_Bps"}, "lo": {...}},   # every interface, lo included
     "disk": {"read_Bps", "write_Bps"},                      # whole physical disks only
     "procs": {"1234": {"cpu_pct", "rss_bytes", "name", "tree"[, "pid_file"]},
               "999": {"gone": true, "name": "redis-server"}}}

``cpu.user`` includes nice, ``cpu.system`` includes irq and softirq, so the five always sum to
100 (guest time is already inside user). A proc's ``cpu_pct`` and ``rss_bytes`` cover the process
and its descendants (``tree`` processes in all: gunicorn's workers are the server too); its
``cpu_pct`` is % of one core (a busy multi-threaded server exceeds 100) and is null on the
first sample after the sampler adopted it. A section whose /proc file is unreadable is null.
The first line comes one interval after start: rates need two reads. A stop signal writes one
last sample, for the time since the one before (when that is at least half an interval).

Cheap by design (stdlib only, no subprocesses): every /proc file is opened once and re-read
from offset 0 each interval (seq_file regenerates it), and a watched pid's ``stat`` and ``statm`` stay
open, which also pins its identity: once that process exits, reads fail even if the pid is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

from bench.agent.procfs import (
    CLOCK_TICKS,
    PAGE_BYTES,
    PidStat,
    ProcStat,
    cpu_percentages,
    disk_rates,
    memory,
    net_rates,
    parse_children,
    parse_diskstats,
    parse_loadavg,
    parse_meminfo,
    parse_net_dev,
    parse_pid_file,
    parse_pid_stat,
    parse_pid_statm,
    parse_pids,
    parse_proc_stat,
    whole_disks,
)

# ----- the sampler: open files, previous reads -----


class Tree(NamedTuple):
    """A watched process and its living descendants, summed."""

    ticks: int  # PidStat.tree_ticks of each
    rss_bytes: int | None  # resident memory of each (pages a fork shares are counted per process)
    processes: int


#: The most descendants a watched process is followed to (a fork bomb must not make sampling slow).
MAX_TREE = 1024


class ProcFile:
    """A /proc file kept open and re-read from offset 0: one lseek and one or two reads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb", buffering=0)

    def read(self) -> str:
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")

    def close(self) -> None:
        self._file.close()


def _open(path: str) -> ProcFile | None:
    try:
        return ProcFile(path)
    except OSError:
        return None


class _Watched:
    __slots__ = ("pid", "file", "statm", "name", "prev_ticks", "prev_time", "pid_file")

    def __init__(self, pid: int, file: ProcFile, statm: ProcFile, pid_file: str | None) -> None:
        self.pid = pid
        self.file = file
        self.statm = statm
        self.name = ""
        self.prev_ticks: int | None = None
        self.prev_time = 0.0
        self.pid_file = pid_file

    def read(self) -> PidStat | None:
        """Its stat, or None once it has exited (reads fail with ESRCH, or it is a zombie)."""
        try:
            stat = parse_pid_stat(self.file.read())
        except (OSError, ValueError, IndexError):
            return None
        if stat.state in ("Z", "X", "x"):
            return None
        self.name = stat.name
        return stat

    def rss_bytes(self) -> int | None:
        try:
            return parse_pid_statm(self.statm.read()) * PAGE_BYTES
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        self.file.close()
        self.statm.close()


class Sampler:
    """Call ``sample()`` once per interval: the first call only primes the previous reads and
    returns None; every later call returns one sample dict covering the time since the last."""

    def __init__(
        self,
        pids: Sequence[int] = (),
        pid_files: Sequence[str] = (),
        proc: str = "/proc",
        sys_block: str | None = "/sys/block",
    ) -> None:
        self._proc = proc
        self._sys_block = sys_block
        self._stat = _open(os.path.join(proc, "stat"))
        self._meminfo = _open(os.path.join(proc, "meminfo"))
        self._loadavg = _open(os.path.join(proc, "loadavg"))
        self._net = _open(os.path.join(proc, "net", "dev"))
        self._disk = _open(os.path.join(proc, "diskstats"))
        self._disk_names: tuple[str, ...] = ()
        self._disks: list[str] = []
        self._prev_time: float | None = None
        self._prev_stat: ProcStat | None = None
        self._prev_net: dict[str, tuple[int, int]] = {}
        self._prev_disk: dict[str, tuple[int, int]] = {}
        self._watched: dict[int, _Watched] = {}
        self._gone: dict[str, dict[str, object]] = {}  # reported on the next sample, once
        self._pid_files: dict[str, int | None] = {path: None for path in pid_files}
        for pid in pids:
            if self._adopt(pid, None, at=time.monotonic()) is None:
                self._gone[str(pid)] = {"gone": True, "name": None}

    # -- watched processes --

    def _adopt(self, pid: int, pid_file: str | None, at: float) -> _Watched | None:
        if pid in self._watched:
            watched = self._watched[pid]
            if pid_file is not None and watched.pid_file is None:
                watched.pid_file = pid_file
            return watched
        file = _open(os.path.join(self._proc, str(pid), "stat"))
        if file is None:
            return None
        statm = _open(os.path.join(self._proc, str(pid), "statm"))
        if statm is None:
            file.close()
            return None
        watched = _Watched(pid, file, statm, pid_file)
        stat = watched.read()
        if stat is None:
            watched.close()
            return None
        watched.prev_ticks = self._tree(watched, stat).ticks
        watched.prev_time = at
        self._watched[pid] = watched
        return watched

    def _tree(self, watched: _Watched, stat: PidStat) -> Tree:
        """A watched process with its descendants: a server is often a tree (gunicorn's master
        and workers, a pex that runs its server as a child), and only the whole tree is the server."""
        ticks, rss, count = stat.tree_ticks, watched.rss_bytes(), 1
        for pid in self._descendants(watched.pid):
            base = os.path.join(self._proc, str(pid))
            try:
                with open(os.path.join(base, "stat"), "rb") as f:
                    child = parse_pid_stat(f.read().decode("utf-8", "replace"))
                with open(os.path.join(base, "statm"), "rb") as f:
                    child_rss = parse_pid_statm(f.read().decode("ascii", "replace")) * PAGE_BYTES
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile: its ticks reach its parent's reaped_ticks
            ticks += child.tree_ticks
            rss = None if rss is None else rss + child_rss
            count += 1
        return Tree(ticks, rss, count)

    def _descendants(self, pid: int) -> list[int]:
        """Every living descendant of ``pid`` (at most MAX_TREE), from each thread's children list."""
        found: list[int] = []
        seen = {pid}
        todo = [pid]
        while todo and len(found) < MAX_TREE:
            parent = todo.pop()
            task_dir = os.path.join(self._proc, str(parent), "task")
            try:
                threads = os.listdir(task_dir)
            except OSError:
                continue
            for tid in threads:
                try:
                    with open(os.path.join(task_dir, tid, "children"), "rb") as f:
                        children = parse_children(f.read().decode("ascii", "replace"))
                except OSError:
                    continue
                for child in children:
                    if child not in seen and len(found) < MAX_TREE:
                        seen.add(child)
                        found.append(child)
                        todo.append(child)
        return found

    def _follow_pid_files(self, at: float) -> list[tuple[_Watched, PidStat]]:
        """Re-read each pidfile whose pid is not (or no longer) watched; adopt a live pid."""
        adopted = []
        for path, pid in self._pid_files.items():
            if pid is not None and pid in self._watched:
                continue
            try:
                with open(path, "rb") as f:
                    new_pid = parse_pid_file(f.read().decode("ascii", "replace"))
            except OSError:
                new_pid = None
            self._pid_files[path] = None
            if new_pid is None:
                continue
            fresh = new_pid not in self._watched
            watched = self._adopt(new_pid, path, at)
            if watched is None:
                continue
            self._pid_files[path] = new_pid
            if fresh:
                stat = watched.read()
                if stat is not None:
                    adopted.append((watched, stat))
        return adopted

    def _procs(self, now: float) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = dict(self._gone)
        self._gone.clear()
        for pid, watched in list(self._watched.items()):
            stat = watched.read()
            if stat is None:
                entry: dict[str, object] = {"gone": True, "name": watched.name}
                if watched.pid_file is not None:
                    entry["pid_file"] = watched.pid_file
                out[str(pid)] = entry
                watched.close()
                del self._watched[pid]
                continue
            tree = self._tree(watched, stat)
            cpu_pct = None
            if watched.prev_ticks is not None and now > watched.prev_time:
                # A descendant that left the tree (daemonized, reparented) takes its ticks along:
                # the sum may shrink, which is no CPU used, not negative CPU.
                seconds = (tree.ticks - watched.prev_ticks) / CLOCK_TICKS
                cpu_pct = round(100.0 * max(0.0, seconds) / (now - watched.prev_time), 2)
            watched.prev_ticks = tree.ticks
            watched.prev_time = now
            out[str(pid)] = self._proc_entry(watched, stat, tree, cpu_pct)
        for watched, stat in self._follow_pid_files(now):
            out[str(watched.pid)] = self._proc_entry(watched, stat, self._tree(watched, stat), None)
        return out

    @staticmethod
    def _proc_entry(watched: _Watched, stat: PidStat, tree: Tree, cpu_pct: float | None) -> dict[str, object]:
        entry: dict[str, object] = {"cpu_pct": cpu_pct, "rss_bytes": tree.rss_bytes, "name": stat.name,
                                    "tree": tree.processes}
        if watched.pid_file is not None:
            entry["pid_file"] = watched.pid_file
        return entry

    # -- one sample --

    @staticmethod
    def _read(file: ProcFile | None) -> str | None:
        if file is None:
            return None
        try:
            return file.read()
        except OSError:
            return None

    def sample(self) -> dict[str, object] | None:
        now = time.monotonic()
        wall = time.time()
        stat_text = self._read(self._stat)
        stat = parse_proc_stat(stat_text) if stat_text is not None else None
        net_text = self._read(self._net)
        net = parse_net_dev(net_text) if net_text is not None else None
        disk_text = self._read(self._disk)
        disk = parse_diskstats(disk_text) if disk_text is not None else None
        if disk is not None:
            names = tuple(disk)
            if names != self._disk_names:  # a disk came or went: classify them again
                self._disk_names = names
                self._disks = whole_disks(names, self._sys_block)

        if self._prev_time is None:
            self._prev_time, self._prev_stat = now, stat
            self._prev_net, self._prev_disk = net or {}, disk or {}
            self._follow_pid_files(now)
            for watched in self._watched.values():  # restart their cpu clocks here
                s = watched.read()
                if s is not None:
                    watched.prev_ticks, watched.prev_time = self._tree(watched, s).ticks, now
            return None

        dt = now - self._prev_time
        mem_text = self._read(self._meminfo)
        load_text = self._read(self._loadavg)
        sample: dict[str, object] = {
            "t": round(wall, 3),
            "dt": round(dt, 4),
            "cpu": cpu_percentages(self._prev_stat, stat) if stat and self._prev_stat else None,
            "cores": stat.cores if stat else os.cpu_count(),
            "load1": parse_loadavg(load_text) if load_text else None,
            "mem": memory(parse_meminfo(mem_text)) if mem_text else None,
            "net": net_rates(self._prev_net, net, dt) if net is not None and dt > 0 else None,
            "disk": disk_rates(self._prev_disk, disk, self._disks, dt) if disk is not None and dt > 0 else None,
            "procs": self._procs(now),
        }
        self._prev_time, self._prev_stat = now, stat
        self._prev_net, self._prev_disk = net or {}, disk or {}
        return sample

    def close(self) -> None:
        for file in (self._stat, self._meminfo, self._loadavg, self._net, self._disk):
            if file is not None:
                file.close()
        for watched in self._watched.values():
            watched.close()
        self._watched.clear()


# ----- the command -----

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metrics", description="Sample this host's metrics every interval, as NDJSON, until SIGTERM."
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--out", required=True, help="NDJSON file to append to ('-' for stdout)")
    p.add_argument("--pids", default="", help="comma-separated pids to watch")
    p.add_argument(
        "--pid-file", action="append", default=[], metavar="F",
        help="watch the pid in F; re-read F whenever that pid is gone (repeatable)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return p


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.interval <= 0 or (args.duration is not None and args.duration <= 0):
        print("metrics: --interval and --duration must be > 0", file=sys.stderr)
        return 2
    try:
        pids = parse_pids(args.pids)
    except ValueError as exc:
        print(f"metrics: --pids: {exc}", file=sys.stderr)
        return 2

    if args.out == "-":
        fd, own_fd = sys.stdout.fileno(), False
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fd, own_fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), True
    try:
        sampler = Sampler(pids=pids, pid_files=args.pid_file)
        try:
            return _run(sampler, fd, args.interval, args.duration)
        finally:
            sampler.close()
    finally:
        if own_fd:
            os.close(fd)


def _write_sample(fd: int, sample: dict[str, object] | None) -> bool:
    if sample is None:
        return True
    try:
        _write_all(fd, (json.dumps(sample, separators=(",", ":")) + "\n").encode("utf-8"))
    except OSError as exc:
        print(f"metrics: cannot write a sample: {exc}", file=sys.stderr)
        return False
    return True


def _run(sampler: Sampler, fd: int, interval: float, duration: float | None) -> int:
    # Stop signals are blocked and collected by sigtimedwait, which doubles as the sleep: no
    # handler can interrupt a half-written line, and a stop is seen at once.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        start = time.monotonic()
        end = start + duration if duration is not None else None
        sampler.sample()
        tick = 1
        while True:
            due = start + tick * interval
            if end is not None and due > end + 1e-6:
                return 0
            if signal.sigtimedwait(STOP_SIGNALS, max(0.0, due - time.monotonic())) is not None:
                # The time since the last sample, as one more (its dt says how long) unless that
                # is under half an interval (rates over a sliver are noise): on a loaded host the
                # stop can come before a due sample was taken, and the run's end must be recorded.
                last = sampler.sample()
                covered = last["dt"] if last is not None else 0.0
                if isinstance(covered, float) and covered >= interval / 2 and not _write_sample(fd, last):
                    return 1
                return 0
            if not _write_sample(fd, sampler.sample()):
                return 1
            # After a stall (suspended VM, SIGSTOP), skip the missed ticks rather than burst.
            tick = max(tick + 1, int((time.monotonic() - start) / interval) + 1)
    finally:
        while signal.sigtimedwait(STOP_SIGNALS, 0) is not None:
            pass  # a repeated stop signal must not kill us as we unblock it
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
