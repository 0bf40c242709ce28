"""The perf suite's figures: their goals, how one is judged, and the suite's output."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.testbed import Testbed

#: figure -> (comparison, goal); None: informational, shown beside the figure it explains.
GOALS: dict[str, tuple[str, float] | None] = {
    "controller_cpu_per_host_vs_openssh": ("<=", 1.0),
    "controller_cpu_ms_per_host": None,
    "controller_per_host_128_vs_8": ("<=", 1.25),
    "spawn_128_hosts_ok": (">=", 1.0),
    "controller_rss_mb_per_host": ("<=", 1.0),
    "fanout_ratio": ("<=", 1.5),
    "push_vs_openssh": (">=", 1.0),
    "noop_deploy_ratio": ("<=", 0.1),
    "agent_vs_redis_benchmark_p1": (">=", 0.8),
    "agent_vs_redis_benchmark_p16": (">=", 0.5),
    "agent_cpu_per_op_vs_redis_benchmark": ("<=", 1.5),
    "http_agent_cpu_per_req_vs_wrk": ("<=", 2.0),
    "latency_p50_vs_redis_benchmark_c1": ("<=", 1.2),
    "merge_1000_s": ("<", 1.0),
    "search_overhead": ("<=", 1.15),
}
FIGURES = tuple(GOALS)
CONTROLLER_FIGURES = ("controller_cpu_per_host_vs_openssh", "controller_cpu_ms_per_host",
                      "controller_per_host_128_vs_8")
SPAWN_FIGURES = ("spawn_128_hosts_ok", "controller_rss_mb_per_host")
PEER_FIGURES = ("agent_vs_redis_benchmark_p1", "agent_vs_redis_benchmark_p16", "agent_cpu_per_op_vs_redis_benchmark",
                "http_agent_cpu_per_req_vs_wrk", "latency_p50_vs_redis_benchmark_c1")


class PerfError(Exception):
    pass


@dataclass
class Figure:
    key: str
    value: float
    detail: str  # how it was measured, with both sides' figures
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Whether the figure meets its goal; None for an informational figure (it has none)."""
        goal = GOALS[self.key]
        if goal is None:
            return None
        op, bound = goal
        return {"<=": self.value <= bound, ">=": self.value >= bound, "<": self.value < bound}[op]

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "informational"}[self.met]


def goal_text(key: str) -> str:
    """``"<= 1"``, or ``"-"`` for an informational figure."""
    goal = GOALS[key]
    return "-" if goal is None else f"{goal[0]} {goal[1]:g}"


def best(samples: Sequence[float], *, high: bool = False) -> float:
    return max(samples) if high else min(samples)


def timed(fn: Callable[[], Any]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


# -- output ------------------------------------------------------------------------------------------


def report(figures: Sequence[Figure], testbed: Testbed, count: int, errors: Mapping[str, str]) -> dict[str, Any]:
    """One JSON object: every figure at the top level, then goals, how each was measured,
    and why any figure is missing."""
    out: dict[str, Any] = {f.key: round(f.value, 4) for f in figures}
    out["goals"] = {f.key: goal_text(f.key) for f in figures}
    out["met"] = {f.key: f.met for f in figures}
    out["details"] = {f.key: {"measured": f.detail, **{k: v for k, v in f.raw.items() if not k.endswith("_output")}}
                      for f in figures}
    out["errors"] = dict(errors)
    out["machine"] = {"cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
                      "testbed": {"prefix": testbed.prefix, "subnet": testbed.subnet, "hosts": count}}
    return out


def table(figures: Sequence[Figure], errors: Mapping[str, str]) -> str:
    rows = [(f.key, f"{f.value:.3f}", goal_text(f.key), {True: "yes", False: "NO", None: "info"}[f.met], f.detail)
            for f in figures]
    rows += [(key, "-", goal_text(key), "-", f"not measured: {why.splitlines()[0]}")
             for key, why in errors.items()]
    head = ("figure", "value", "goal", "met", "measured")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
             for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
