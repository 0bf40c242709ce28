"""The bounded readers of what hosts send (fabfile.remote.streams)."""

from __future__ import annotations

import gzip

import pytest

from fabfile.remote.streams import ByteTail, HostDataError, LineCutter, gunzip


def test_byte_tail_keeps_the_last_bytes_and_counts_the_rest():
    tail = ByteTail(10)
    for piece in (b"0123456789", b"abcdefghij", b"ABC\nDEF"):
        tail.feed(piece)
    assert tail.kept() == b"ghijABC\nDEF" [-10:]
    assert tail.dropped == 17 and tail.total == 27
    assert list(tail.lines_from_end()) == [b"DEF"]  # the first kept line began before the tail
    whole = ByteTail(100)
    whole.feed(b"a\nb\n\nc")
    assert list(whole.lines_from_end()) == [b"c", b"", b"b", b"a"]
    assert tail.text().startswith("[... the first 17 bytes were dropped")


def test_a_skipped_gap_drops_what_came_before_it_and_is_counted():
    tail = ByteTail(10)
    tail.feed(b"before\n")
    tail.skip(1000)  # the host sent only what followed 1000 bytes it skipped
    tail.feed(b"after")
    assert tail.kept() == b"after" and tail.dropped == 1007 and tail.total == 1012
    assert tail.text().startswith("[... the first 1007 bytes were dropped")


def test_line_cutter_cuts_long_lines_and_keeps_short_ones():
    cutter = LineCutter(5)
    assert cutter.feed(b"ab\ncdefgh") == ["ab"]
    assert cutter.feed(b"ij\nk") == ["cdefg [... 3 more bytes of this line not shown]"]
    assert cutter.flush() == ["k"]
    assert cutter.flush() == []


def test_gunzip_refuses_to_inflate_past_its_limit():
    bomb = gzip.compress(bytes(50 << 20))
    assert gunzip(gzip.compress(b"fine"), 10, "x") == b"fine"
    with pytest.raises(HostDataError, match="inflates to more than"):
        gunzip(bomb, 1 << 20, "tb1: metrics")
    with pytest.raises(HostDataError, match="not valid gzip"):
        gunzip(b"\x1f\x8bnope", 1 << 20, "tb1: metrics")
