"""Encoded histograms come from hosts: decoding one is bounded by what a histogram of ours can be."""

from __future__ import annotations

import base64
import random
import struct
import tracemalloc
import zlib

import pytest

from bench.wire import hist


def _encoding(payload: bytes, zeros: int = 0) -> str:
    """The V2 encoding of ``payload`` followed by ``zeros`` zero bytes (streamed: never held whole)."""
    packer = zlib.compressobj(9)
    packed = packer.compress(payload)
    chunk = bytes(1 << 20)
    for start in range(0, zeros, len(chunk)):
        packed += packer.compress(chunk[: zeros - start])
    packed += packer.flush()
    return base64.b64encode(struct.pack(">II", 0x1C849314, len(packed)) + packed).decode()


def _header(lowest: int = hist.LOWEST, highest: int = hist.HIGHEST, digits: int = hist.SIGNIFICANT_DIGITS) -> bytes:
    return struct.pack(">IIIIQQd", 0x1C849313, 0, 0, digits, lowest, highest, 1.0)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except hist.HistogramError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_a_real_histogram_at_its_largest_still_decodes():
    rng = random.Random(1)
    h = hist.new()
    for _ in range(200_000):
        h.record_value(rng.randint(hist.LOWEST, hist.HIGHEST))
    text = hist.encode(h)
    assert len(text) <= hist.MAX_ENCODED_CHARS
    assert hist.decode(text).get_total_count() == 200_000


def test_a_zlib_bomb_is_refused_before_it_is_inflated():
    # What a hostile agent can send: 130 KB that inflate to 128 MB, with our own settings in its header.
    bomb = _encoding(_header(), zeros=128 << 20)
    assert len(bomb) < 200_000
    small = _encoding(_header(), zeros=hist.MAX_PAYLOAD_BYTES * 4)  # well under the length limit
    assert len(small) < hist.MAX_ENCODED_CHARS
    for text in (bomb, small):
        with pytest.raises(hist.HistogramError, match="more than"):
            hist.decode(text)
    assert _peak_bytes(lambda: hist.decode(bomb)) < 4 * 1024 * 1024
    assert _peak_bytes(lambda: hist.decode(small)) < 4 * 1024 * 1024


def test_a_header_asking_for_a_huge_counts_array_is_refused_before_allocating():
    text = _encoding(_header(lowest=1, highest=2**62, digits=5) + bytes(16))
    with pytest.raises(hist.HistogramError, match="settings"):
        hist.decode(text)
    assert _peak_bytes(lambda: hist.decode(text)) < 1024 * 1024


@pytest.mark.parametrize("text, why", [
    ("", "too short"),
    ("not base64 at all!", "not base64"),
    (base64.b64encode(b"\x00" * 40).decode(), "not an HdrHistogram"),
    (base64.b64encode(struct.pack(">II", 0x1C849314, 5) + b"abcde").decode(), "corrupt"),
    (_encoding(b"short"), "payload too short"),
    (_encoding(struct.pack(">IIIIQQd", 0xDEADBEEF, 0, 0, 3, 1, hist.HIGHEST, 1.0)), "not an HdrHistogram V2 payload"),
])
def test_garbage_is_a_histogram_error_naming_why(text, why):
    with pytest.raises(hist.HistogramError, match=why):
        hist.decode(text)


def test_a_total_count_no_run_could_record_is_refused():
    h = hist.new()
    h.record_value(10, 2**60)
    with pytest.raises(hist.HistogramError, match="plausible"):
        hist.decode(hist.encode(h))
