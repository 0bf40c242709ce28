"""Small, deterministic runs and host samples for the tests of compare, hosts, export and plots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import merge as result
from bench.wire import hist, labels
from bench.wire.result import RESULT_SCHEMA

T0 = 1_790_000_000.0  # an epoch second to hang runs on


def encoded(values: Sequence[int]) -> str:
    h = hist.new()
    for v in values:
        h.record_value(v)
    return hist.encode(h)


def agent_result(name: str, num: int, agents: int, values: Sequence[int], *, started_at: float = T0,
                 elapsed: float = 2.0, workload: str = "set", service: Sequence[int] | None = None,
                 late_ops: int | None = None, run_id: str = "r", per_second: bool = False) -> dict[str, Any]:
    """One agent's result; its timeseries spreads ``values`` over whole seconds plus a partial one.
    ``per_second``: as today's agents send it, wall-clock seconds (``at``) each with its histogram."""
    seconds = int(elapsed)
    per = len(values) // max(1, seconds)
    if per_second:
        chunks = [values[s * per:(s + 1) * per] for s in range(seconds)] + [values[seconds * per:]]
        series = [{"t": s, "at": int(started_at) + s, "ops": len(chunk), "errors": 0,
                   "hist": encoded(chunk) if chunk else None} for s, chunk in enumerate(chunks)]
    else:
        series = [{"t": s, "ops": per, "errors": 0, "p50": sorted(values)[len(values) // 2], "p99": max(values)}
                  for s in range(seconds)]
        series.append({"t": seconds, "ops": 1, "errors": 0, "p50": values[0], "p99": values[0]})
    out: dict[str, Any] = {
        "schema": RESULT_SCHEMA, "run_id": run_id, "benchmark": name, "workload": workload, "agent_num": num,
        "agents": agents, "host": f"a{num % 2 + 1}", "python": "3.11.2", "fleetbench": "0.1.0",
        "started_at": started_at, "elapsed_s": elapsed, "ops": len(values), "errors": 0, "error_samples": [],
        "histograms": {"latency_us": encoded(values)}, "timeseries": series, "job": {},
    }
    if service is not None:
        out["histograms"]["service_us"] = encoded(service)
    if late_ops is not None:
        out["late_ops"] = late_ops
    return out


def spread(base: int, n: int, step: int = 7) -> list[int]:
    return [base * (i % step + 1) for i in range(n)]


def make_run(run_id: str, benchmarks: Sequence[tuple[str, Sequence[int]]], *, repeat: int = 1,
             scale: dict[str, float] | None = None, name: str = "spawn",
             hosts: dict[str, Any] | None = None, per_second: bool = False) -> dict[str, Any]:
    """A run of benchmarks (name, latency values of one agent); ``repeat`` repetitions each, the
    k-th repetition's ops scaled by ``scale[name]`` (slower) and a little deterministic jitter.
    ``per_second``: the agents send exact wall-clock seconds (see :func:`agent_result`)."""
    entries = []
    clock = T0
    for bench_name, values in benchmarks:
        for k in range(1, repeat + 1):
            label = labels.repetition_label(bench_name, k) if repeat > 1 else bench_name
            factor = (scale or {}).get(bench_name, 1.0)
            jitter = 1 + 0.01 * ((k * 7) % 5 - 2)  # -2% .. +2%
            n = int(len(values) / factor * jitter)
            vals = [int(v * factor) for v in (list(values) * 2)[:n]]
            results = [agent_result(label, i, 2, vals, started_at=clock, elapsed=2.0, per_second=per_second)
                       for i in range(2)]
            entries.append(result.merge_benchmark(label, results, []))
            clock += 3.0
    meta = {"run_id": run_id, "name": name, "started_at": T0, "finished_at": clock, "spawn": {}, "deployment": {}}
    run = result.build_run(meta, entries)
    if hosts is not None:
        run["hosts"] = hosts
    return run


def sample(t: float, *, idle: float = 50.0, rx: float = 1e6, tx: float = 2e6, procs: dict | None = None
           ) -> dict[str, Any]:
    """One sampler line (bench.agent.hostmetrics), as the sampler writes it."""
    busy = 100.0 - idle
    return {"t": t, "dt": 1.0, "cpu": {"user": busy * 0.6, "system": busy * 0.4, "iowait": 0.0, "steal": 0.0,
                                       "idle": idle},
            "cores": 2, "load1": 1.5, "mem": {"used_bytes": 1_000_000_000, "available_bytes": 3_000_000_000,
                                              "total_bytes": 4_000_000_000},
            "net": {"eth0": {"rx_Bps": rx, "tx_Bps": tx}, "lo": {"rx_Bps": 9e9, "tx_Bps": 9e9}},
            "disk": {"read_Bps": 0.0, "write_Bps": 4096.0},
            "procs": procs if procs is not None else {}}


def search_steps(name: str, steps: Sequence[tuple[float, int]], *, agents: int = 2,
                 step_s: float = 2.0) -> list[dict[str, Any]]:
    """The merged entries of a capacity search's steps: (rate, each op's latency in us) per step,
    every agent sending its share of the rate for ``step_s``."""
    entries = []
    for k, (rate, latency) in enumerate(steps, 1):
        label = labels.step_label(name, k)
        per_agent = int(rate * step_s / agents)
        results = []
        for n in range(agents):
            r = agent_result(label, n, agents, [latency] * per_agent, elapsed=step_s, late_ops=0)
            r["job"] = {"rate": rate / agents, "agents": agents, "duration_s": step_s}
            results.append(r)
        entries.append(result.merge_benchmark(label, results, []))
    return entries
