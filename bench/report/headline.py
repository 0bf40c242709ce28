"""The headline figures of a benchmark: what the CI and dashboard exports carry.

A :class:`Figure` reads one number from a merged benchmark entry of run.json
(bench.report.document.BenchmarkEntry), in its base unit, or None when the entry measured nothing (no op
completed). github-action-benchmark's two files, the Bencher Metric Format and ``inv runs
--format csv`` all take their figures from :data:`FIGURES` (and the csv also :data:`ERRORS`), so
a figure added here reaches every one of them, in the file of its direction.

A repeated benchmark's figure is read from its folded entry (all repetitions together:
throughput over their summed time, latency from their merged histogram) and its
:func:`spread` from the repetitions' own entries: the merged value lies between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.report.document import BenchmarkEntry
from bench.wire import hist

Entry = BenchmarkEntry


@dataclass(frozen=True)
class Figure:
    key: str                # stable: part of every export's names and columns
    unit: str               # of what ``read`` returns: "ops/s", "us" (latency), "ops"
    bigger_is_better: bool
    read: Callable[[Entry], float | None]
    only_with: str | None = None  # a key an entry must have for the figure to be one of its columns

    def applies(self, entries: Iterable[Entry]) -> bool:
        """Whether a column of this figure belongs with a benchmark of these entries (a search's found
        rate only with a search)."""
        return self.only_with is None or any(self.only_with in e for e in entries)


def _measured(entry: Entry) -> bool:
    return isinstance(entry.get("ops"), int) and entry["ops"] > 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _throughput(entry: Entry) -> float | None:
    return _number(entry.get("ops_per_s")) if _measured(entry) else None


def _latency(key: str) -> Callable[[Entry], float | None]:
    def read(entry: Entry) -> float | None:
        return _number((entry.get("latency_us") or {}).get(key)) if _measured(entry) else None
    return read


def _errors(entry: Entry) -> float | None:
    return _number(entry.get("errors"))


def _capacity(entry: Entry) -> float | None:
    """A capacity search's found rate (bench.report.search); None without a search or a pass."""
    found = entry.get("search")
    return _number(found.get("found")) if isinstance(found, Mapping) else None


THROUGHPUT = Figure("ops_per_s", "ops/s", True, _throughput)
CAPACITY = Figure("capacity_ops_per_s", "ops/s", True, _capacity, only_with="search")
LATENCY = tuple(Figure(hist.percentile_key(p), "us", False, _latency(hist.percentile_key(p)))
                for p in hist.PERCENTILES)
ERRORS = Figure("errors", "ops", False, _errors)

# Bigger is better: throughput and a capacity search's found rate (the highest rate that met its
# SLO); smaller: the latency percentiles.
FIGURES: tuple[Figure, ...] = (THROUGHPUT, CAPACITY, *LATENCY)


def spread(figure: Figure, entry: Entry) -> tuple[float, float] | None:
    """(lowest, highest) of ``figure`` over a repeated benchmark's repetitions; None when it
    was not repeated or a repetition lacks the figure."""
    repeats = entry.get("repeats") or ()
    values = [figure.read(r) for r in repeats]
    if len(values) < 2 or any(v is None for v in values):
        return None
    present = [v for v in values if v is not None]
    return min(present), max(present)


def in_unit(figure: Figure, value: float, unit: str) -> float:
    """``value`` (in the figure's unit) in ``unit``: latency in "ms" or "ns"; others as they are."""
    if figure.unit == "us" and unit in _FROM_US:
        return round(value * _FROM_US[unit], 6)
    if unit != figure.unit:
        raise ValueError(f"figure {figure.key} is in {figure.unit}, not convertible to {unit}")
    return value


_FROM_US = {"us": 1.0, "ms": 1e-3, "ns": 1e3}
