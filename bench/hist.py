"""Latency histograms: one HdrHistogram per measured quantity, carried encoded in JSON.

Percentiles are always read from a histogram, and histograms from several agents are merged
by adding counts (exact), never by averaging percentiles.
"""

from __future__ import annotations

from typing import Dict, Iterable

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
        merged.add(decode(text))
    return merged


def percentile_key(p: float) -> str:
    return "p" + (f"{p:g}")


def summary(histogram: HdrHistogram) -> Dict[str, float]:
    """count, min, mean, the PERCENTILES (as p50, p90, p99, p99.9) and max, in UNIT."""
    count = histogram.get_total_count()
    out: Dict[str, float] = {"count": count}
    if count == 0:
        out.update({"min": 0, "mean": 0.0, "max": 0})
        out.update({percentile_key(p): 0 for p in PERCENTILES})
        return out
    out["min"] = histogram.get_min_value()
    out["mean"] = round(histogram.get_mean_value(), 3)
    for p in PERCENTILES:
        out[percentile_key(p)] = histogram.get_value_at_percentile(p)
    out["max"] = histogram.get_max_value()
    return out
