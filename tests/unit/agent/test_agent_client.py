"""NodeConnection: FIFO completion, reply reassembly, big values, protocol errors."""

from __future__ import annotations

import asyncio

import pytest

from bench.agent.client import NodeConnection, SubBatch, describe, open_connection


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def make():
    done: list[SubBatch] = []
    lost: list[str] = []
    conn = NodeConnection("h:1", done.append, lost.append)
    return conn, done, lost


def test_writes_before_connect_are_queued():
    conn, done, _ = make()
    conn.send(SubBatch(None, [], b"A", 1))
    conn.send(SubBatch(None, [], b"B", 1))
    t = Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    assert t.written == [b"AB"]
    conn.send(SubBatch(None, [], b"C", 1))
    assert t.written == [b"AB", b"C"]


def test_fifo_completion_across_arbitrary_splits():
    stream = b"+OK\r\n+OK\r\n:1\r\n$3\r\nabc\r\n-ERR no\r\n+OK\r\n"
    for cut in range(1, len(stream)):
        conn, done, lost = make()
        conn.connection_made(Transport())  # type: ignore[arg-type]
        subs = [SubBatch(i, [], b"", w) for i, w in enumerate((2, 3, 1))]
        for s in subs:
            conn.send(s)
        conn.data_received(stream[:cut])
        conn.data_received(stream[cut:])
        assert [s.batch for s in done] == [0, 1, 2] and not lost
        assert subs[1].errors == [(2, b"ERR no")] and subs[0].errors is None


def test_ok_fast_path():
    conn, done, _ = make()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    sub = SubBatch(None, [], b"", 16)
    conn.send(sub)
    conn.data_received(b"+OK\r\n" * 16)
    assert done == [sub] and sub.got == 16 and sub.errors is None


def test_big_bulk_is_buffered_not_rescanned():
    conn, done, _ = make()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    value = b"v" * 1_000_000
    reply = b"$%d\r\n%s\r\n+OK\r\n" % (len(value), value)
    conn.send(SubBatch(None, [], b"", 2))
    step = 65536
    for n, i in enumerate(range(0, len(reply), step)):
        conn.data_received(reply[i:i + step])
        if i + step < len(value) + 12:
            # still inside the value: chunks pile up untouched until `need` bytes are in
            assert conn.need == 10 + len(value) + 2 and len(conn.chunks) == n + 1
    assert len(done) == 1 and done[0].got == 2 and conn.chunks == []


def test_unexpected_data_is_reported_once():
    conn, done, lost = make()
    t = Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(b"+surprise\r\n")
    assert len(lost) == 1 and "unexpected reply" in lost[0] and t.closed
    conn.connection_lost(None)
    assert len(lost) == 1


def test_close_is_not_a_loss():
    conn, _, lost = make()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    conn.close()
    conn.connection_lost(None)
    assert lost == []
    other, _, lost2 = make()
    other.connection_made(Transport())  # type: ignore[arg-type]
    other.connection_lost(ConnectionResetError("reset"))
    assert lost2 == ["connection to h:1 lost: reset"]


def test_a_failure_is_described_by_its_text_else_its_type():
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "[Errno 111] Connection refused"
    assert describe(TimeoutError()) == "TimeoutError"  # wait_for's: no text at all
    assert describe(OSError("  ")) == "OSError"


class _NeverConnects:
    """An event loop's create_connection that never completes (a SYN nobody answers)."""

    async def create_connection(self, factory, host, port):
        await asyncio.Event().wait()


def test_a_connect_that_never_completes_says_it_timed_out_and_after_how_long():
    conn, _, _ = make()

    async def main() -> None:
        await open_connection(_NeverConnects(), "h", 1, conn, timeout=0.01)  # type: ignore[arg-type]

    with pytest.raises(ConnectionError, match=r"^timed out after 0\.01 s$"):
        asyncio.run(main())
