"""Host metrics and facts of a run, summarised: what ``run.json`` says about the machines.

Pure functions over the sampler's NDJSON lines (``bench.agent.hostmetrics``, one object per
second) and the facts object (``bench.agent.hostfacts``). Nothing here reads files or talks to
hosts; the controller passes the text in.

:func:`summarise` turns samples into one summary (optionally only those overlapping a time
window); :func:`host_section` builds run.json's ``hosts`` object (per host: roles, facts, the
run's summary and one summary per benchmark window); :func:`warnings` says where the load
generator may have been the bottleneck.

Conventions:

* cpu is "busy" = 100 - idle, in % of all the host's cores (so 100 means every core busy).
* Network figures are the sum over every interface except loopback (``lo``): traffic between
  processes on one host never leaves it and would double count.
* Rates are bytes/s in the summary; tables show MB/s (10^6).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.report.document import BenchmarkEntry, HostEntry, RunDoc

LOOPBACK = ("lo",)
AGENT_CPU_LIMIT_PCT = 90.0  # agent host busier than this (mean over a benchmark): it may be the limit
LATE_FRACTION = 0.01  # open loop: more than this share of ops sent late means the rate was not kept

Window = tuple[float, float]


class MetricsError(ValueError):
    """A metrics file that is not the sampler's NDJSON."""


def parse_ndjson(text: str, where: str = "metrics") -> list[dict[str, Any]]:
    """The samples of a metrics file, oldest first.

    A last line without its newline is a sample the sampler was writing when the file was
    copied (or the host died): it is dropped if it does not parse. Any other bad line is an
    error naming its line number.
    """
    samples: list[dict[str, Any]] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError:
            if number == len(lines):  # torn last line
                break
            raise MetricsError(f"{where}: line {number} is not JSON: {line[:80]!r}") from None
        if not isinstance(sample, dict) or not isinstance(sample.get("t"), (int, float)):
            raise MetricsError(f"{where}: line {number} is not a metrics sample (no numeric t)")
        samples.append(sample)
    samples.sort(key=lambda s: s["t"])
    return samples


def busy_pct(sample: Mapping[str, Any]) -> float | None:
    cpu = sample.get("cpu")
    if not isinstance(cpu, Mapping) or cpu.get("idle") is None:
        return None
    return round(100.0 - float(cpu["idle"]), 2)


def net_Bps(sample: Mapping[str, Any]) -> tuple[float, float] | None:
    """(rx, tx) bytes/s summed over the non-loopback interfaces."""
    net = sample.get("net")
    if not isinstance(net, Mapping):
        return None
    rx = tx = 0.0
    for iface, rates in net.items():
        if iface in LOOPBACK or not isinstance(rates, Mapping):
            continue
        rx += float(rates.get("rx_Bps") or 0)
        tx += float(rates.get("tx_Bps") or 0)
    return rx, tx


def in_window(samples: Iterable[Mapping[str, Any]], window: Window | None) -> list[Mapping[str, Any]]:
    """Samples whose interval ``(t - dt, t]`` overlaps ``window`` (epoch seconds, start..end)."""
    if window is None:
        return list(samples)
    start, end = window
    return [s for s in samples if s["t"] > start and s["t"] - float(s.get("dt") or 1.0) < end]


def summarise(samples: Sequence[Mapping[str, Any]], window: Window | None = None) -> dict[str, Any]:
    """One summary of the samples (those overlapping ``window``, if given).

    ::

        {"samples", "first_t", "last_t", "cores",
         "cpu_pct": {"mean", "max"},                      # busy, % of all cores
         "cpu_parts_pct": {"user", "system", "iowait", "steal"},   # means
         "load1_max", "mem_used_max_bytes", "mem_total_bytes",
         "net_Bps": {"rx_mean", "tx_mean", "rx_max", "tx_max"},   # non-loopback
         "disk_Bps": {"read_mean", "write_mean", "read_max", "write_max"},
         "procs": [{"pid", "name", "pid_file", "samples", "cpu_pct_mean", "cpu_pct_max",
                    "rss_max_bytes", "tree_max", "gone"}]}        # the server processes

    A figure with no sample to read it from is None. A proc's cpu_pct is % of one core; it
    and its rss cover the process's tree (``tree_max``: the most processes it had at once).
    """
    chosen = in_window(samples, window)
    out: dict[str, Any] = {
        "samples": len(chosen),
        "first_t": chosen[0]["t"] if chosen else None,
        "last_t": chosen[-1]["t"] if chosen else None,
        "cores": next((s["cores"] for s in reversed(chosen) if isinstance(s.get("cores"), int)), None),
    }
    busy = [b for b in map(busy_pct, chosen) if b is not None]
    out["cpu_pct"] = _mean_max(busy)
    parts: dict[str, float | None] = {}
    for part in ("user", "system", "iowait", "steal"):
        values = [float(s["cpu"][part]) for s in chosen if isinstance(s.get("cpu"), Mapping)
                  and s["cpu"].get(part) is not None]
        parts[part] = _round(statistics.fmean(values)) if values else None
    out["cpu_parts_pct"] = parts
    loads = [float(s["load1"]) for s in chosen if s.get("load1") is not None]
    out["load1_max"] = max(loads) if loads else None
    mems = [s["mem"] for s in chosen if isinstance(s.get("mem"), Mapping)]
    out["mem_used_max_bytes"] = max((int(m["used_bytes"]) for m in mems), default=None)
    out["mem_total_bytes"] = int(mems[-1]["total_bytes"]) if mems else None
    nets = [n for n in map(net_Bps, chosen) if n is not None]
    rx, tx = _mean_max([n[0] for n in nets]), _mean_max([n[1] for n in nets])
    out["net_Bps"] = {"rx_mean": rx["mean"], "tx_mean": tx["mean"], "rx_max": rx["max"], "tx_max": tx["max"]}
    disks = [s["disk"] for s in chosen if isinstance(s.get("disk"), Mapping)]
    rd = _mean_max([float(d.get("read_Bps") or 0) for d in disks])
    wr = _mean_max([float(d.get("write_Bps") or 0) for d in disks])
    out["disk_Bps"] = {"read_mean": rd["mean"], "write_mean": wr["mean"], "read_max": rd["max"],
                       "write_max": wr["max"]}
    out["procs"] = _procs(chosen)
    return out


def _procs(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for sample in samples:
        procs = sample.get("procs")
        if not isinstance(procs, Mapping):
            continue
        for pid, entry in procs.items():
            if not isinstance(entry, Mapping):
                continue
            p = seen.setdefault(pid, {"pid": int(pid) if str(pid).isdigit() else pid, "name": None,
                                      "pid_file": None, "cpu": [], "rss": [], "tree": [], "gone": False})
            p["name"] = entry.get("name") or p["name"]
            p["pid_file"] = entry.get("pid_file") or p["pid_file"]
            if entry.get("gone"):
                p["gone"] = True
                continue
            if entry.get("cpu_pct") is not None:
                p["cpu"].append(float(entry["cpu_pct"]))
            if entry.get("rss_bytes") is not None:
                p["rss"].append(int(entry["rss_bytes"]))
            if isinstance(entry.get("tree"), int):
                p["tree"].append(entry["tree"])
    out = []
    for p in seen.values():
        cpu = _mean_max(p.pop("cpu"))
        rss, tree = p.pop("rss"), p.pop("tree")
        out.append({**p, "samples": len(rss), "cpu_pct_mean": cpu["mean"], "cpu_pct_max": cpu["max"],
                    "rss_max_bytes": max(rss) if rss else None, "tree_max": max(tree) if tree else None})
    return sorted(out, key=lambda p: str(p["pid"]))


def _round(value: float) -> float:
    return round(value, 2)


def _mean_max(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": _round(statistics.fmean(values)), "max": _round(max(values))}


# ---------------------------------------------------------------------------------------------
# run.json's hosts section


def benchmark_windows(benchmarks: Iterable[BenchmarkEntry]) -> dict[str, Window]:
    """``{label: (started_at, finished_at)}`` of every benchmark (and repetition) that has them."""
    out: dict[str, Window] = {}
    for entry in benchmarks:
        for part in (entry, *entry.get("repeats", ())):
            start, end = part.get("started_at"), part.get("finished_at")
            if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
                out[str(part["name"])] = (float(start), float(end))
    return out


def host_section(roles: Mapping[str, Sequence[str]], facts: Mapping[str, dict[str, Any] | None],
                 metrics: Mapping[str, Sequence[Mapping[str, Any]]],
                 windows: Mapping[str, Window],
                 addresses: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, HostEntry]:
    """run.json's ``hosts``: one object per host, in ``roles`` order, then any other host seen.

    ``{"roles": ["server", "agent"], "facts": {...} | None, "metrics": summarise(all) | None,
    "benchmarks": {label: summarise(window)}}``, and ``"addresses": {"ssh": ..., "private": ...,
    "learned_from": ...}`` for a host the deployment recorded them of (where the controller
    reached it, where the other hosts did); a host whose sampler left nothing has ``metrics``
    None and no ``benchmarks``.
    """
    addresses = addresses or {}
    names = list(dict.fromkeys([*roles, *facts, *metrics]))
    out: dict[str, HostEntry] = {}
    for name in names:
        samples = list(metrics.get(name) or ())
        entry: HostEntry = {"roles": list(roles.get(name, ())), "facts": facts.get(name),
                            "metrics": summarise(samples) if samples else None, "benchmarks": {}}
        if isinstance(addresses.get(name), Mapping):
            entry["addresses"] = dict(addresses[name])
        if samples:
            for label, window in windows.items():
                entry["benchmarks"][label] = summarise(samples, window)
        out[name] = entry
    return out


def roles_of(spawn: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{host: ["server"] | ["agent"] | ["server", "agent"]}`` from a normalised spawn dict."""
    hosts = spawn.get("hosts") or {}
    out: dict[str, list[str]] = {}
    for role, key in (("server", "servers"), ("agent", "agents")):
        for host in hosts.get(key) or ():
            if role not in out.setdefault(host, []):
                out[host].append(role)
    return out


def warnings(run: RunDoc) -> list[str]:
    """Where the load generator may have been the bottleneck, one line each.

    * an agent host whose cpu averaged above AGENT_CPU_LIMIT_PCT during a benchmark;
    * an open-loop benchmark with more than LATE_FRACTION of its ops sent late (the corrected
      latency includes that wait), saying which side was the limit (:func:`late_cause`).
    """
    lines: list[str] = []
    hosts = run.get("hosts") or {}
    for entry in run.get("benchmarks", ()):
        for part in entry.get("repeats") or (entry,):
            label = str(part.get("name"))
            for host, info in hosts.items():
                if "agent" not in (info.get("roles") or ()):
                    continue
                cpu = ((info.get("benchmarks") or {}).get(label) or {}).get("cpu_pct") or {}
                if cpu.get("mean") is not None and cpu["mean"] > AGENT_CPU_LIMIT_PCT:
                    lines.append(f"{label}: agent host {host} cpu averaged {cpu['mean']:.0f}% "
                                 f"(max {cpu['max']:.0f}%): the load generator may be the bottleneck")
            late, ops = int(part.get("late_ops") or 0), int(part.get("ops") or 0) + int(part.get("errors") or 0)
            if late and ops and late / ops > LATE_FRACTION:
                lines.append(f"{label}: {late:,} of {ops:,} ops ({100 * late / ops:.1f}%) were sent late: "
                             f"{late_cause(part)} (latency counts the wait; service time does not)")
    return lines


def late_cause(entry: BenchmarkEntry) -> str:
    """Which side kept an open-loop benchmark's ops from going out on time, from the agents' own
    split of its late ops (``late_busy_ops``: no connection free; ``late_loop_ops``: one was)."""
    busy, loop = entry.get("late_busy_ops"), entry.get("late_loop_ops")
    if not isinstance(busy, int) or not isinstance(loop, int) or busy + loop == 0:
        return ("the agents could not keep the rate, or the server held every connection "
                "(these agents do not say which)")
    if busy >= loop:
        return (f"every connection was busy waiting on the server ({busy:,} waited for one): the server was "
                "the limit, not the agents; more connections would measure its queue")
    return (f"the agents' CPU or event loop was the limit ({loop:,} were due while a connection was free "
            "and went out late): the load generator could not keep the rate")
