"""bench.wire.hdr against hdrh: the same histograms give the same bytes, byte for byte.

The agent pex records with bench.wire.hdr; the controller decodes with hdrh. Every check here
records the same value/count pairs into both and compares ``encode()`` exactly, plus totals
and what hdrh decodes back.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

import bench
from bench.wire import hdr, hist

SETTINGS = (hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS)
#: Beyond HIGHEST but still inside hdrh's last bucket (it records there), and beyond it.
TOP_RECORDABLE = HdrHistogram(*SETTINGS).get_highest_equivalent_value(
    HdrHistogram(*SETTINGS).get_value_from_index(HdrHistogram(*SETTINGS).counts_len - 1))

values = st.one_of(st.integers(min_value=0, max_value=3000), st.integers(min_value=0, max_value=hist.HIGHEST),
                   st.integers(min_value=-5, max_value=TOP_RECORDABLE + 5))
pairs = st.lists(st.tuples(values, st.integers(min_value=0, max_value=10**6)), max_size=300)


def both(recorded: list[tuple[int, int]], settings: tuple[int, int, int] = SETTINGS) -> tuple[hdr.Histogram,
                                                                                               HdrHistogram]:
    ours, theirs = hdr.Histogram(*settings), HdrHistogram(*settings)
    for value, count in recorded:
        assert ours.record_value(value, count) == theirs.record_value(value, count), (value, count)
    return ours, theirs


def assert_same(ours: hdr.Histogram, theirs: HdrHistogram) -> None:
    assert ours.encode() == theirs.encode()
    assert ours.get_total_count() == theirs.get_total_count()
    assert ours.counts_len == theirs.counts_len
    # hdrh's decoder reads ours back bucket for bucket. Not compared: its decoded total (a C int)
    # and counts of 2**62 and more (it keeps 7 bits of a 9th byte that carries 8: its own
    # encodings of them do not round-trip either).
    expected = theirs.counts[:]
    if max(expected) < 2**62:
        assert HdrHistogram.decode(ours.encode()).counts[:] == expected


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_random_value_counts_encode_byte_for_byte_like_hdrh(recorded: list[tuple[int, int]]) -> None:
    assert_same(*both(recorded))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(min_value=-1000, max_value=2 * hist.HIGHEST), st.integers(1, 10**9), max_size=300))
def test_the_agents_fold_equals_hdrhs_record_value_loop_with_clamping(counts: dict[int, int]) -> None:
    """record_counts (what the agent folds a second with) is record_value of each clamped value."""
    ours, theirs = hist.recorder(), hist.new()
    ours.record_counts(counts, hist.HIGHEST)
    for value, count in counts.items():
        theirs.record_value(min(max(value, 0), hist.HIGHEST), count)
    assert_same(ours, theirs)


@settings(max_examples=50, deadline=None)
@given(st.lists(pairs, min_size=1, max_size=5))
def test_adding_histograms_encodes_like_hdrhs_add(parts: list[list[tuple[int, int]]]) -> None:
    ours_total, theirs_total = hdr.Histogram(*SETTINGS), HdrHistogram(*SETTINGS)
    for recorded in parts:
        ours, theirs = both(recorded)
        ours_total.add(ours)
        theirs_total.add(theirs)
    assert_same(ours_total, theirs_total)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(1, 60_000_000, 2), (1, 2, 1), (7, 100_000, 1), (1000, 2**40, 5), (1, 2**63 - 1, 3),
                        (3, 10**12, 4)]),
       st.lists(st.tuples(st.integers(min_value=0, max_value=2**63 - 1), st.integers(0, 1000)), max_size=50))
def test_other_settings_give_hdrhs_layout_and_bytes(settings_: tuple[int, int, int],
                                                    recorded: list[tuple[int, int]]) -> None:
    assert_same(*both(recorded, settings_))


@pytest.mark.parametrize("recorded", [
    [],  # empty: a header and no counts
    [(0, 1)],  # the zero bucket
    [(1, 1)],
    [(hist.HIGHEST, 1)],  # the highest value we track
    [(TOP_RECORDABLE, 1)],  # hdrh's own top bucket, above HIGHEST
    [(TOP_RECORDABLE + 1, 1), (-1, 1)],  # refused by both: nothing recorded
    [(500, 0)],  # a count of 0 still stretches the encoding to its bucket (hdrh's max_value)
    [(5, 3), (hist.HIGHEST, 0)],  # ... up to the top: one long run of zeros at the end
    [(1, 2**62)],  # huge counts: 9-byte words whose last byte carries 8 bits
    [(1, 2**63 - 1), (2, 2**56), (3, 2**56 - 1), (4, 2**49), (5, 2**14), (6, 2**14 - 1), (7, 64), (8, 63)],
    [(v, 1) for v in range(0, 5000, 3)],  # short runs of zeros between many buckets
    [(1, 1), (hist.HIGHEST, 1)],  # a run of zeros as long as the counts array
], ids=["empty", "zero", "one", "highest", "top-bucket", "out-of-range", "count-0", "count-0-at-top", "2^62",
        "word-boundaries", "many", "both-ends"])
def test_edge_cases_encode_byte_for_byte_like_hdrh(recorded: list[tuple[int, int]]) -> None:
    assert_same(*both(recorded))


def test_counts_beyond_64_bit_words_are_refused() -> None:
    """hdrh's C encoder aborts the process on such a count (it frees a buffer it does not own):
    ours says why instead. The agent never gets near it (MAX_TOTAL_COUNT is 2**53)."""
    ours = hdr.Histogram(*SETTINGS)
    ours.record_value(10, 2**63)
    with pytest.raises(OverflowError, match="64-bit"):
        ours.encode()


def test_the_agents_encoding_passes_the_controllers_checks_and_merges() -> None:
    a, b = hist.recorder(), hist.recorder()
    a.record_counts({100: 5, 2500: 1}, hist.HIGHEST)
    b.record_counts({100: 1, 10**12: 2}, hist.HIGHEST)  # clamped to HIGHEST
    merged = hist.merge([hist.encode(a), hist.encode(b)])
    assert merged.get_total_count() == 9
    assert merged.get_max_value() == merged.get_highest_equivalent_value(hist.HIGHEST)
    assert hist.summary(merged)["p50"] == 100


def test_bad_settings_and_mixed_adds_are_refused() -> None:
    with pytest.raises(ValueError, match="significant digits"):
        hdr.Histogram(1, 100, 6)
    with pytest.raises(ValueError, match="lowest"):
        hdr.Histogram(10, 15, 2)
    with pytest.raises(ValueError, match="different settings"):
        hist.recorder().add(hdr.Histogram(1, 100, 2))
    with pytest.raises(ValueError, match="beyond"):
        hist.recorder().record_counts({1: 1}, 2**40)


def test_the_agent_and_its_wire_import_and_record_without_hdrh() -> None:
    """The agent pex has no hdrhistogram: every module it ships must import, and a Recorder
    record and encode, with hdrh unimportable."""
    root = Path(bench.__file__).parent
    modules = [f"bench.{package}.{m.name}" for package in ("agent", "wire")
               for m in pkgutil.iter_modules([str(root / package)])]
    script = ("import sys, importlib; sys.modules['hdrh'] = None\n"
              f"for m in {modules!r}: importlib.import_module(m)\n"
              "from bench.agent.stats import Recorder\n"
              "r = Recorder(open_loop=True); r.begin(0.0, 1.7e9); r.record(0.5, 0.1, 0.2, 3, 0, None); r.finish()\n"
              "print(sorted(r.histograms()), r.series[0]['hist'][:8])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("['latency_us', 'service_us'] HISTFAA")
    assert "bench.agent.stats" in modules and "bench.wire.hdr" in modules


# -- reading on a host: decode and percentiles, as hdrh gives them --------------------------------


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_decode_and_percentiles_read_what_hdrh_reads(recorded: list[tuple[int, int]]) -> None:
    ours, theirs = hist.recorder(), HdrHistogram(*SETTINGS)
    for value, count in recorded:
        if 0 <= value <= hist.HIGHEST and count:
            ours.record_value(value, count)
            theirs.record_value(value, count)
    back = hdr.decode(ours.encode(), *SETTINGS)
    assert back.get_total_count() == theirs.get_total_count()
    for p in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert back.value_at_percentile(p) == theirs.get_value_at_percentile(p)
    if theirs.get_total_count():
        assert back.max_value() == theirs.get_max_value()
        assert back.mean() == pytest.approx(theirs.get_mean_value())


def test_decode_refuses_what_is_not_one_of_ours() -> None:
    other = HdrHistogram(1, 1000, 2)
    other.record_value(5)
    with pytest.raises(hdr.DecodeError, match="settings"):
        hdr.decode(other.encode(), *SETTINGS)
    with pytest.raises(hdr.DecodeError, match="base64"):
        hdr.decode("not base64!", *SETTINGS)
    with pytest.raises(hdr.DecodeError):
        hdr.decode("AAAAAAAAAAA=", *SETTINGS)
