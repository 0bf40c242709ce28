"""Latency histograms: one HdrHistogram per measured quantity, carried encoded in JSON.

Percentiles are always read from a histogram, and histograms from several agents are merged
by adding counts (exact), never by averaging percentiles.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

# Microseconds, from 1 us to one hour, three significant digits (0.1% value precision).
UNIT = "us"
LOWEST = 1
HIGHEST = 3_600_000_000
SIGNIFICANT_DIGITS = 3

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST, HIGHEST, SIGNIFICANT_DIGITS)


def encode(histogram: HdrHistogram) -> str:
    """The standard compressed, base64 HdrHistogram V2 encoding, as text."""
    return histogram.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def merge(encoded: Iterable[str]) -> HdrHistogram:
    merged = new()
    for text in encoded:
        part = decode(text)
        if part.get_total_count():  # adding an empty histogram would reset min to 0 (an hdrh quirk)
            merged.add(part)
    return merged


def percentile_key(p: float) -> str:
    return "p" + (f"{p:g}")


def percentiles(histogram: HdrHistogram, wanted: Iterable[float]) -> dict[float, int]:
    """Values at the given percentiles, equal to ``get_value_at_percentile`` but fast.

    hdrh walks the whole counts array in Python for every percentile (~5 ms each); this
    accumulates only the recorded range once and bisects.
    """
    wanted = list(wanted)
    total = histogram.get_total_count()
    if not total:
        return {p: 0 for p in wanted}
    lo = histogram.get_counts_array_index(histogram.get_min_value())
    hi = histogram.get_counts_array_index(histogram.get_max_value())
    cumulative = list(itertools.accumulate(histogram.counts[lo:hi + 1]))
    out: dict[float, int] = {}
    for p in wanted:
        i = bisect.bisect_left(cumulative, histogram.get_target_count_at_percentile(p))
        if i >= len(cumulative):  # counts outside min..max: trust the slow path
            out[p] = histogram.get_value_at_percentile(p)
            continue
        value = histogram.get_value_from_index(lo + i)
        out[p] = (histogram.get_highest_equivalent_value(value) if p
                  else histogram.get_lowest_equivalent_value(value))
    return out


def summary(histogram: HdrHistogram) -> dict[str, float]:
    """count, min, mean, the PERCENTILES (as p50, p90, p99, p99.9) and max, in UNIT."""
    count = histogram.get_total_count()
    out: dict[str, float] = {"count": count}
    if count == 0:
        out.update({"min": 0, "mean": 0.0, "max": 0})
        out.update({percentile_key(p): 0 for p in PERCENTILES})
        return out
    out["min"] = histogram.get_min_value()
    out["mean"] = round(histogram.get_mean_value(), 3)
    for p, value in percentiles(histogram, PERCENTILES).items():
        out[percentile_key(p)] = value
    out["max"] = histogram.get_max_value()
    return out
