"""How the figures of many combine into one: what merging agents' results into a benchmark entry
(``bench.report.merge``) and folding its repetitions into one (``bench.report.repeats``) share.

Histograms combine by adding their counts (exact: a percentile is never averaged), measured
windows by the first start and the last end, error samples by the first distinct ones, and a
rate is ops over seconds. Each function returns the keys it gives a
:class:`bench.report.document.BenchmarkEntry`, to be spread into it in run.json's key order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from hdrh.histogram import HdrHistogram

from bench.report.document import LatencySummary
from bench.report.results import is_number
from bench.wire import hist

MAX_ERROR_SAMPLES = 10


class LateCauses(TypedDict, total=False):
    """late_ops by cause, when every agent (or repetition) says it (bench.wire.result)."""

    late_busy_ops: int
    late_loop_ops: int


class Window(TypedDict):
    started_at: float | None  # epoch seconds; None: not known
    finished_at: float | None


class Latency(TypedDict):
    latency_us: LatencySummary
    histogram: str


class Service(TypedDict, total=False):
    service_us: LatencySummary
    service_histogram: str


class Merged:
    """A histogram that others are added to; empty ones are skipped.

    (HdrHistogram.add of an empty histogram sets the sum's min to 0, so skipping them is
    needed for a correct min, not only a saving.)
    """

    def __init__(self) -> None:
        self.histogram = hist.new()
        self.count_added = 0

    def add(self, other: HdrHistogram) -> None:
        self.count_added += 1
        if other.get_total_count():
            self.histogram.add(other)


def latency(histograms: Iterable[HdrHistogram]) -> Latency:
    """The exact merge of latency histograms (counts added), summarised and encoded."""
    merged = Merged()
    for h in histograms:
        merged.add(h)
    return {"latency_us": hist.summary(merged.histogram), "histogram": hist.encode(merged.histogram)}


def service(histograms: Sequence[HdrHistogram]) -> Service:
    """The exact merge of service-time histograms; nothing when none reported service time."""
    if not histograms:
        return {}
    merged = latency(histograms)
    return {"service_us": merged["latency_us"], "service_histogram": merged["histogram"]}


def span(windows: Sequence[Window]) -> Window:
    """The first start and the last end of ``windows`` (None where none gives a number)."""
    starts = [float(start) for w in windows if is_number(start := w.get("started_at"))]
    ends = [float(end) for w in windows if is_number(end := w.get("finished_at"))]
    return {"started_at": round(min(starts), 6) if starts else None,
            "finished_at": round(max(ends), 6) if ends else None}


def error_samples(each: Iterable[Iterable[Any]]) -> list[str]:
    """Up to MAX_ERROR_SAMPLES distinct error samples, in the order the agents (or repetitions) give them."""
    samples: list[str] = []
    for given in each:
        for sample in given:
            if len(samples) < MAX_ERROR_SAMPLES and str(sample) not in samples:
                samples.append(str(sample))
    return samples


def rate(ops: int, seconds: float) -> float:
    """ops per second, to three decimals; 0.0 over no time."""
    return round(ops / seconds, 3) if seconds > 0 else 0.0
