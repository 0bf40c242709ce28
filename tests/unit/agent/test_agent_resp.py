"""RESP encoding and the two reply readers (counting ``scan`` and value ``parse``)."""

from __future__ import annotations

import pytest

from bench.agent import resp

REPLIES = [
    b"+OK\r\n",
    b":12\r\n",
    b"$5\r\nhello\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"-ERR wrong type\r\n",
    b"*2\r\n$1\r\na\r\n:1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*2\r\n*1\r\n+x\r\n$4\r\na\r\nb\r\n",  # nested; a bulk value containing CRLF
    b"-MOVED 3999 127.0.0.1:6381\r\n",
]
STREAM = b"".join(REPLIES)


def test_encode():
    assert resp.encode("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    assert resp.bulk(b"ab") == b"$2\r\nab\r\n"


def test_scan_counts_and_picks_out_errors():
    pos, count, errors, need = resp.scan(STREAM, 0, 100)
    assert (pos, count, need) == (len(STREAM), len(REPLIES), 0)
    assert errors == [(5, b"ERR wrong type"), (10, b"MOVED 3999 127.0.0.1:6381")]


def test_scan_stops_at_want():
    pos, count, errors, _ = resp.scan(STREAM, 0, 3)
    assert count == 3 and pos == sum(len(r) for r in REPLIES[:3]) and errors is None


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_scan_never_counts_a_cut_reply(cut):
    head = STREAM[:cut]
    pos, count, _, need = resp.scan(head, 0, 100)
    boundaries = [0]
    for r in REPLIES:
        boundaries.append(boundaries[-1] + len(r))
    complete = max(i for i, b in enumerate(boundaries) if b <= cut)
    assert count == complete and pos == boundaries[complete]
    if need:
        assert need > cut  # a cut bulk reports how long the buffer must become


def test_scan_reports_the_length_a_long_bulk_needs():
    value = b"x" * 10_000
    data = b"$10000\r\n" + value[:100]
    pos, count, _, need = resp.scan(data, 0, 1)
    assert (pos, count, need) == (0, 0, 8 + 10_000 + 2)


def test_scan_rejects_garbage():
    with pytest.raises(resp.ProtocolError):
        resp.scan(b"?what\r\n", 0, 1)


def test_parse_values():
    values = []
    pos = 0
    while pos < len(STREAM):
        v, pos = resp.parse(STREAM, pos)
        values.append(v)
    assert values[:5] == [b"OK", 12, b"hello", None, b""]
    assert isinstance(values[5], resp.ReplyError) and str(values[5]) == "ERR wrong type"
    assert values[6:10] == [[b"a", 1], None, [], [[b"x"], b"a\r\nb"]]
    assert isinstance(values[10], resp.ReplyError)


def test_parse_incomplete():
    for cut in (1, 4, 7, 12):
        with pytest.raises(resp.Incomplete):
            resp.parse(b"*2\r\n$5\r\nhello\r\n:1\r\n"[:cut])
