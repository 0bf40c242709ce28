"""Latency histograms: one HdrHistogram per measured quantity, carried encoded in JSON.

Percentiles are always read from a histogram, and histograms from several agents are merged
by adding counts (exact), never by averaging percentiles.

Two sides, one format. Agents record into :func:`recorder` (``bench.wire.hdr``: pure Python,
so the agent pex builds for every platform and Python) and send :func:`encode`'s text. The
controller reads with hdrh (:func:`decode`, :func:`merge`, :func:`percentiles`, its log
writer): hdrh is imported only there, never on a host.

Encoded histograms come from hosts, so :func:`decode` checks one before hdrh sees it: its
length, its settings and the size it decompresses to are bounded by what a histogram of ours
(:func:`new`) can be. hdrh alone inflates whatever it is given (a 398 KB zlib bomb took 301 MB)
and allocates the counts array the header asks for.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bench.wire import hdr

if TYPE_CHECKING:  # the controller's reader; the agent pex has no hdrh
    from hdrh.histogram import HdrHistogram

# Microseconds, from 1 us to one hour, three significant digits (0.1% value precision).
UNIT = "us"
LOWEST = 1
HIGHEST = 3_600_000_000
SIGNIFICANT_DIGITS = 3

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def recorder() -> hdr.Histogram:
    """An empty histogram of our settings to record into: what agents use."""
    return hdr.Histogram(LOWEST, HIGHEST, SIGNIFICANT_DIGITS)


def new() -> HdrHistogram:
    """An empty hdrh histogram of our settings, to merge into (controller only)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST, HIGHEST, SIGNIFICANT_DIGITS)


def encode(histogram: HdrHistogram | hdr.Histogram) -> str:
    """The standard compressed, base64 HdrHistogram V2 encoding, as text (the same for both kinds)."""
    return histogram.encode().decode("ascii")


class HistogramError(ValueError):
    """An encoded histogram that is not one of ours (settings, format) or is larger than one can be."""


# The V2 wire format (bench.wire.hdr): base64 of [cookie, length] + zlib([header] + LEB128/ZigZag counts).
_VARINT_MAX_BYTES = 9  # per count
_COUNTS_LEN = recorder().counts_len
#: The most a payload of our settings can decompress to: its header and every count at full width.
MAX_PAYLOAD_BYTES = hdr.PAYLOAD.size + _COUNTS_LEN * _VARINT_MAX_BYTES
#: The longest encoding of such a payload (zlib adds at most 0.1% + a few bytes to incompressible data).
MAX_ENCODED_CHARS = 4 * -(-(hdr.OUTER.size + MAX_PAYLOAD_BYTES + MAX_PAYLOAD_BYTES // 1000 + 64) // 3)
#: More than any real run records (a billion ops a second for a week is 6e14); sums of these stay exact.
MAX_TOTAL_COUNT = 2**53


def decode(text: str) -> HdrHistogram:
    """The histogram ``text`` encodes; :class:`HistogramError` when it is not one of ours or too large."""
    from hdrh.histogram import HdrHistogram

    check_encoded(text)
    histogram = HdrHistogram.decode(text.encode("ascii"))
    total = histogram.get_total_count()
    if not 0 <= total <= MAX_TOTAL_COUNT:
        raise HistogramError(f"total count {total} is not a plausible count")
    return histogram


def check_encoded(text: str) -> None:
    """Refuse, before anything is inflated or allocated, an encoding that no histogram of ours has."""
    if not isinstance(text, str):
        raise HistogramError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_ENCODED_CHARS:
        raise HistogramError(f"{len(text)} characters, more than any histogram of ours ({MAX_ENCODED_CHARS})")
    try:
        payload = hdr.inflate(text, MAX_PAYLOAD_BYTES)
    except hdr.DecodeError as exc:
        raise HistogramError(str(exc)) from None
    _, _, _, digits, lowest, highest, _ = hdr.PAYLOAD.unpack_from(payload)
    settings = (lowest, highest, digits)
    if settings != (LOWEST, HIGHEST, SIGNIFICANT_DIGITS):
        raise HistogramError(f"histogram settings (lowest, highest, digits) {settings} differ from "
                             f"bench.wire.hist's {(LOWEST, HIGHEST, SIGNIFICANT_DIGITS)}")


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
