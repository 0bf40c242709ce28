"""A run as OpenMetrics text (``export/metrics.prom``), for Prometheus and Grafana.

Every sample carries its own timestamp (whole epoch seconds: the start of the second it covers;
a host sample's, the end of its second rounded) and the labels ``run`` (the run id),
``benchmark`` and ``host``, so the file can be loaded into a TSDB after the fact
(``promtool tsdb create-blocks-from openmetrics metrics.prom DIR``)::

    fleetbench_ops_per_second{run, benchmark, host="all"}          ops completed in each second
    fleetbench_errors_per_second{run, benchmark, host="all"}       ops failed in each second
    fleetbench_latency_seconds{run, benchmark, host="all", quantile="0.5"|"0.9"|"0.99"|"0.999"|"1"}
        a summary (quantiles without _count and _sum): that second's latency percentiles (1: the
        max) over all agents, from the exact merge of their per-second histograms (bench.report.seconds)
    fleetbench_host_cpu_busy_percent{run, benchmark, host}         per sampled host, % of all cores
    fleetbench_host_network_receive_bytes_per_second{...}, ..._transmit_...   non-loopback
    fleetbench_host_memory_used_bytes{...}

A benchmark's series are fleet-wide (``host="all"``): a percentile cannot be summed over hosts.
A host sample's ``benchmark`` is the benchmark whose measured window holds it (any of its
repetitions), or ``"none"`` between benchmarks. Seconds from agents that sent no ``at`` (results of
older agents) are placed at their benchmark's start plus ``t``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bench.report import hosts as host_metrics
from bench.report import timeline
from bench.report.document import RunDoc
from bench.wire import hist

QUANTILES = ((50.0, "0.5"), (90.0, "0.9"), (99.0, "0.99"), (99.9, "0.999"))
FLEET = "all"
BETWEEN = "none"
_REPETITION = re.compile(r"#[1-9][0-9]*\Z")


class _Family:
    """One metric family. A summary's samples are grouped as OpenMetrics wants them: per series
    (its labels but ``quantile``), per timestamp, its quantiles in the order they were added."""

    def __init__(self, name: str, help_text: str, unit: str = "", kind: str = "gauge") -> None:
        self.name, self.help, self.unit, self.kind = name, help_text, unit, kind
        self.series: dict[tuple[tuple[str, str], ...], dict[int, dict[str, float]]] = {}

    def add(self, labels: Mapping[str, str], t: float, value: float) -> None:
        quantile = labels.get("quantile", "")
        base = tuple((k, v) for k, v in labels.items() if k != "quantile")
        # Whole seconds: OpenMetrics allows fractions, but `promtool check metrics` parses the
        # Prometheus text format, whose timestamps are integers. One value per series and second.
        self.series.setdefault(base, {}).setdefault(round(t), {}).setdefault(quantile, value)

    def lines(self) -> list[str]:
        if not self.series:
            return []
        out = [f"# TYPE {self.name} {self.kind}"]
        if self.unit:
            out.append(f"# UNIT {self.name} {self.unit}")
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        for base, by_time in self.series.items():  # one series' points together, oldest first
            for t in sorted(by_time):
                for quantile, value in by_time[t].items():
                    labels = (*base, ("quantile", quantile)) if quantile else base
                    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    out.append(f"{self.name}{{{text}}} {_number(value)} {t}")
        return out


def render(run: RunDoc, host_samples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> str:
    """The OpenMetrics text of ``run`` (run.json) and its hosts' metric samples (by host)."""
    run_id = str(run.get("run_id", ""))
    ops = _Family("fleetbench_ops_per_second", "operations completed in the second, all agents")
    errors = _Family("fleetbench_errors_per_second", "operations failed in the second, all agents")
    latency = _Family("fleetbench_latency_seconds", "latency percentiles of the second's ops, all agents (exact)",
                      "seconds", kind="summary")
    for name, part in timeline.parts(run):
        labels = {"run": run_id, "benchmark": name, "host": FLEET}
        for t, point in timeline.seconds(part):
            ops.add(labels, t, float(point.get("ops") or 0))
            errors.add(labels, t, float(point.get("errors") or 0))
            if not point.get("ops"):
                continue
            for p, q in QUANTILES:
                value = point.get(hist.percentile_key(p))
                if isinstance(value, (int, float)):
                    latency.add({**labels, "quantile": q}, t, value / 1e6)
            if isinstance(point.get("max"), (int, float)):
                latency.add({**labels, "quantile": "1"}, t, point["max"] / 1e6)
    families = [ops, errors, latency, *_host_families(run, run_id, host_samples or {})]
    lines = [line for family in families for line in family.lines()]
    return "\n".join([*lines, "# EOF"]) + "\n"


def _host_families(run: RunDoc, run_id: str,
                   samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[_Family]:
    cpu = _Family("fleetbench_host_cpu_busy_percent", "host cpu busy, % of all its cores")
    rx = _Family("fleetbench_host_network_receive_bytes_per_second", "bytes/s received, non-loopback interfaces")
    tx = _Family("fleetbench_host_network_transmit_bytes_per_second", "bytes/s sent, non-loopback interfaces")
    mem = _Family("fleetbench_host_memory_used_bytes", "memory in use", "bytes")
    windows = host_metrics.benchmark_windows(run.get("benchmarks", ()))
    for host, host_samples in samples.items():
        for sample in host_samples:
            t = float(sample["t"])
            labels = {"run": run_id, "benchmark": _window_of(t, windows), "host": str(host)}
            _maybe(cpu, labels, t, host_metrics.busy_pct(sample))
            net = host_metrics.net_Bps(sample)
            if net is not None:
                rx.add(labels, t, net[0])
                tx.add(labels, t, net[1])
            used = (sample.get("mem") or {}).get("used_bytes") if isinstance(sample.get("mem"), Mapping) else None
            _maybe(mem, labels, t, used)
    return [cpu, rx, tx, mem]


def _maybe(family: _Family, labels: Mapping[str, str], t: float, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        family.add(labels, t, float(value))


def _window_of(t: float, windows: Mapping[str, tuple[float, float]]) -> str:
    """The benchmark measuring at ``t`` (a repetition ``name#k`` counts as ``name``)."""
    for label, (start, end) in windows.items():
        if start <= t <= end + 1.0:  # a sample stamps the end of its second
            return _REPETITION.sub("", label)
    return BETWEEN


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
