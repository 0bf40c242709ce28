"""A run's per-second points, each with its epoch second, for the exports that carry time series.

A benchmark's seconds live in its entry's ``timeseries`` (a repeated benchmark's in each
repetition's entry under ``repeats``). Points from agents that send wall-clock seconds carry
``at`` (the second, epoch seconds); older agents' carry only ``t``, seconds from their
benchmark's start, and are placed at its ``started_at`` plus ``t``.
"""

from __future__ import annotations

from collections.abc import Iterator

from bench.report.document import BenchmarkEntry, MergedSecond, RunDoc


def parts(run: RunDoc) -> list[tuple[str, BenchmarkEntry]]:
    """(benchmark name, entry holding seconds): each repetition of a repeated benchmark, else the entry."""
    return [(str(e["name"]), p) for e in run.get("benchmarks", ()) for p in (e.get("repeats") or (e,))]


def seconds(part: BenchmarkEntry) -> Iterator[tuple[float, MergedSecond]]:
    """(epoch seconds of the second's start, point) of one entry's timeseries."""
    start = part.get("started_at")
    for point in part.get("timeseries") or ():
        if isinstance(point.get("at"), int):
            yield float(point["at"]), point
        elif isinstance(start, (int, float)) and isinstance(point.get("t"), (int, float)):
            yield float(start) + float(point["t"]), point
