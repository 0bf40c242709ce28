"""One TCP connection to one server node, as a bare asyncio Protocol.

A Protocol rather than streams: data arrives in ``data_received`` with no coroutine, future or
task per reply, which is most of the per-op cost of a naive asyncio client. Requests go out
as pre-encoded bytes in a single ``write`` per batch; replies come back in order, so a FIFO
of outstanding batches is all the bookkeeping there is.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Protocol

from bench.agent.resp import encode, scan

# Precomputed "+OK" runs: the SET reply stream can be recognised by one comparison.
_OK: dict[int, bytes] = {n: b"+OK\r\n" * n for n in range(1, 257)}


class SubBatch:
    """The part of one batch that went to one node: its ops, bytes and expected replies."""

    __slots__ = ("batch", "ops", "payload", "want", "got", "errors", "asking", "hops")

    def __init__(self, batch: Any, ops: Sequence[tuple[bytes, bytes, int]], payload: bytes, want: int,
                 asking: bool = False, hops: int = 0) -> None:
        self.batch = batch
        self.ops = ops
        self.payload = payload
        self.want = want  # replies expected
        self.got = 0  # replies seen so far
        self.errors: list[tuple[int, bytes]] | None = None  # (reply index, message)
        self.asking = asking  # first reply belongs to an ASKING prefix, not to an op
        self.hops = hops  # redirects its ops have followed so far


class Conn(Protocol):
    """What the engine needs of one worker's connection to one node, whatever it speaks:
    RESP here, HTTP/1.1 (``httpclient``), or in-process calls (``pyload``)."""

    def send(self, sub: SubBatch) -> None:
        """Start the sub-batch's ops; call ``complete(sub)`` once, when all are done."""

    def close(self) -> None:
        """Stop; no ``complete`` or ``lost`` calls after this."""


#: ``dial(loop, address, label, complete, lost)`` -> (the connection, an awaitable that opens
#: it; the engine treats its failure as fatal). ``lost(message)`` reports a fatal problem.
Dial = Callable[[asyncio.AbstractEventLoop, tuple[str, int], str, Callable[[SubBatch], None], Callable[[str], None]],
                tuple[Conn, Awaitable[Any]]]


class NodeConnection(asyncio.Protocol):
    """Writes sub-batches and hands each one to ``complete`` once all its replies are in.

    Writes made before the TCP connection is up are queued (lazy connections to nodes found by
    a MOVED redirect). An unexpected close is reported once through ``lost``.
    """

    def __init__(self, label: str, complete: Callable[[SubBatch], None], lost: Callable[[str], None],
                 auth: str | None = None) -> None:
        self.label = label
        self.complete = complete
        self.lost = lost
        self.transport: asyncio.Transport | None = None
        self.pending: deque[SubBatch] = deque()
        self.queued: list[bytes] = []
        # With a password, AUTH is the first thing every connection sends (also the lazy ones a
        # redirect opens); its reply is checked here and never reaches ``complete``.
        self.auth_sub: SubBatch | None = None
        if auth is not None:
            self.auth_sub = SubBatch(None, (), encode("AUTH", auth), 1)
            self.send(self.auth_sub)
        self.closing = False
        # A reply cut short by the end of a read: the bytes so far and, for a long bulk
        # value, the length needed before it is worth scanning again.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.queued:
            transport.write(b"".join(self.queued))  # type: ignore[attr-defined]
            self.queued = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closing:
            self.closing = True
            self.lost(f"connection to {self.label} lost: {exc or 'closed by the server'}")

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _authenticated(self, sub: SubBatch) -> bool:
        self.auth_sub = None
        if not sub.errors:
            return True
        self.lost(f"{self.label} refused AUTH: {sub.errors[0][1].decode(errors='replace')}")
        self.close()
        return False

    def send(self, sub: SubBatch) -> None:
        self.pending.append(sub)
        transport = self.transport
        if transport is not None:
            transport.write(sub.payload)
        else:
            self.queued.append(sub.payload)

    def data_received(self, data: bytes) -> None:
        if self.chunks:
            self.chunks.append(data)
            self.buffered += len(data)
            if self.buffered < self.need:
                return
            data = b"".join(self.chunks)
            self.chunks = []
        pending = self.pending
        end = len(data)
        pos = 0
        need = 0
        while pending:
            sub = pending[0]
            want = sub.want - sub.got
            if pos == 0 and sub.got == 0 and end == 5 * want and data == _OK.get(want):
                pos = end  # fast path: the whole read is exactly this batch's "+OK"s
                sub.got = sub.want
            else:
                pos, count, errors, need = scan(data, pos, want)
                if errors is not None:
                    base = sub.got
                    found = [(base + i, m) for i, m in errors]
                    if sub.errors is None:
                        sub.errors = found
                    else:
                        sub.errors.extend(found)
                sub.got += count
                if count < want:
                    break
            pending.popleft()
            if sub is self.auth_sub:
                if not self._authenticated(sub):
                    return
            else:
                self.complete(sub)
            if pos >= end:
                break
        if pos < end:
            if not pending:
                self.lost(f"unexpected reply from {self.label}: {data[pos:pos + 80]!r}")
                self.close()
                return
            rest = data[pos:]
            self.chunks = [rest]
            self.buffered = len(rest)
            self.need = need - pos if need else 0


def describe(exc: BaseException) -> str:
    """Why something failed, never empty: the exception's text, else its type (asyncio's
    TimeoutError, and a few others, have no text)."""
    text = str(exc).strip()
    return text or type(exc).__name__


async def connect_within(connecting: Awaitable[Any], timeout: float) -> Any:
    """``connecting`` (a ``create_connection``), given up after ``timeout`` seconds with a
    ConnectionError that says so: ``wait_for``'s own TimeoutError says nothing."""
    try:
        return await asyncio.wait_for(connecting, timeout)
    except asyncio.TimeoutError:
        raise ConnectionError(f"timed out after {timeout:g} s") from None


async def open_connection(loop: asyncio.AbstractEventLoop, host: str, port: int, conn: NodeConnection,
                          timeout: float = 10.0) -> NodeConnection:
    await connect_within(loop.create_connection(lambda: conn, host, port), timeout)
    return conn
