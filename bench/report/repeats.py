"""Folding repetitions: the entries of ``name#1`` .. ``name#N`` into one entry ``name``.

A benchmark with ``repeat = N > 1`` runs N times; repetition k (1-based) is labelled ``name#k``
(bench.wire.labels.repetition_label) and merged into its own entry (``bench.report.merge``).
:func:`merge_repeats` folds them: the combined figures (bench.report.combine), the noise of
their throughput, and the repetitions' own entries under ``"repeats"``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from hdrh.histogram import HdrHistogram

from bench.report import combine
from bench.report.document import BenchmarkEntry, RepeatSpread
from bench.report.results import LATE_CAUSES, ResultError, decode
from bench.wire.labels import split_label

# The counts summed over repetitions (late_busy_ops and late_loop_ops only when every one says them).
_Count = Literal["agents", "agents_ok", "ops", "errors", "late_ops", "late_busy_ops", "late_loop_ops"]


def merge_repeats(name: str, entries: Sequence[BenchmarkEntry]) -> BenchmarkEntry:
    """Fold the entries of repetitions ``name#1`` .. ``name#N`` into one entry ``name``.

    Counts (agents, agents_ok, ops, errors, late_ops) and ``seconds`` are summed over the
    repetitions, ``ops_per_s`` is ops / seconds, latency comes from the exact merge of the
    repetitions' histograms, ``failures`` and ``agent_results`` are concatenated with a
    ``"repetition"`` field added. ``ops_per_s_repeats`` holds min, mean, max and sample stdev
    of the repetitions' own ops_per_s (the noise estimate). ``"repeat"`` is the number of
    repetitions, and ``"repeats"`` holds the repetitions' own entries (each with
    ``"repetition"``), where their timeseries live; the folded entry has no timeseries.
    """
    numbered = _numbered_repetitions(name, entries)
    reps = [entry for _, entry in numbered]
    workload = _one_workload(name, reps)
    latencies, services = _histograms_of(reps)
    latency, service = combine.latency(latencies), combine.service(services)
    ops, seconds = _sum(reps, "ops"), sum(e.get("seconds", 0) for e in reps)
    return {
        "name": name,
        "workload": workload,
        "repeat": len(numbered),
        "agents": _sum(reps, "agents"),
        "agents_ok": _sum(reps, "agents_ok"),
        "ops": ops,
        "errors": _sum(reps, "errors"),
        "late_ops": _sum(reps, "late_ops"),
        **_folded_late_causes(reps),
        "seconds": seconds,
        "ops_per_s": combine.rate(ops, seconds),
        "ops_per_s_repeats": _spread([float(e.get("ops_per_s", 0.0)) for e in reps]),
        **combine.span(reps),
        **latency,
        **service,
        "error_samples": combine.error_samples(e.get("error_samples", ()) for e in reps),
        "failures": [{**f, "repetition": k} for k, e in numbered for f in e.get("failures", ())],
        "agent_results": [{**r, "repetition": k} for k, e in numbered for r in e.get("agent_results", ())],
        "repeats": [{**e, "repetition": k} for k, e in numbered],
    }


def _numbered_repetitions(name: str, entries: Sequence[BenchmarkEntry]) -> list[tuple[int, BenchmarkEntry]]:
    """``(k, entry)`` of each repetition ``name#k``, by k; refused when one is not name's or k repeats."""
    if not entries:
        raise ResultError(f"benchmark {name!r}: no repetitions to fold")
    numbered = []
    for entry in entries:
        base, k = split_label(str(entry.get("name", "")))
        if base != name or k is None:
            raise ResultError(f"benchmark {name!r}: {entry.get('name')!r} is not a repetition of it")
        numbered.append((k, entry))
    numbered.sort(key=lambda pair: pair[0])
    ks = [k for k, _ in numbered]
    if len(set(ks)) != len(ks):
        raise ResultError(f"benchmark {name!r}: repetition listed twice in {ks}")
    return numbered


def _one_workload(name: str, reps: Sequence[BenchmarkEntry]) -> str | None:
    """The workload every repetition ran (None when none says); refused when they differ."""
    workloads = {str(e["workload"]) for e in reps if e.get("workload") is not None}
    if len(workloads) > 1:
        raise ResultError(f"benchmark {name!r}: repetitions ran different workloads {sorted(workloads)}")
    return workloads.pop() if workloads else None


def _histograms_of(reps: Sequence[BenchmarkEntry]) -> tuple[list[HdrHistogram], list[HdrHistogram]]:
    """Each repetition's latency histogram and, where it has one, its service-time histogram, decoded."""
    latencies, services = [], []
    for e in reps:
        where = f"benchmark {e.get('name')!r}"
        latencies.append(decode(e.get("histogram"), f"{where}: histogram"))
        if e.get("service_histogram") is not None:
            services.append(decode(e.get("service_histogram"), f"{where}: service_histogram"))
    return latencies, services


def _sum(reps: Sequence[BenchmarkEntry], key: _Count) -> int:
    return sum(e.get(key, 0) for e in reps)


def _folded_late_causes(reps: Sequence[BenchmarkEntry]) -> combine.LateCauses:
    """late_ops by cause over the repetitions, when every repetition says it."""
    if not all(key in e for e in reps for key in LATE_CAUSES):
        return {}
    return {"late_busy_ops": _sum(reps, "late_busy_ops"), "late_loop_ops": _sum(reps, "late_loop_ops")}


def _spread(rates: Sequence[float]) -> RepeatSpread:
    """min, mean, max and sample stdev (0.0 for one) of the repetitions' ops_per_s."""
    return {"min": round(min(rates), 3), "mean": round(statistics.fmean(rates), 3), "max": round(max(rates), 3),
            "stdev": round(statistics.stdev(rates), 3) if len(rates) > 1 else 0.0}
