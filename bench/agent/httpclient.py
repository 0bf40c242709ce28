"""A small HTTP/1.1 client for the load loop: keep-alive connections, one request in flight.

Requests are encoded once, when the workload is built (method, target, headers and body are
fixed per benchmark), so an op is ready-made bytes exactly like a RESP op. Responses are only
framed, never materialised: the status line, the headers that decide framing
(``Content-Length``, ``Transfer-Encoding: chunked``, ``Connection``) and then the body is
counted off and dropped.

A connection is kept alive across requests and reopened when the server closes it (after
``Connection: close``, an HTTP/1.0 response, a body delimited by the close, or an idle
timeout): a request that found its reused connection closed before any byte of the answer is
sent once more on a fresh one, as browsers and curl do. Anything else that goes wrong with
one request (a status outside 2xx/3xx, a timeout, a connection that drops mid-response or
cannot be reopened) is an error *of that op*; only bytes that are not HTTP at all are fatal,
because they mean the benchmark points at the wrong port.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import Any, Callable

import bench
from bench.agent.client import Dial, SubBatch, connect_within, describe

MAX_HEAD = 64 * 1024  # a status line plus headers longer than this is not a response we can use
CONNECT_TIMEOUT_S = 10.0

#: ``loop.create_connection``'s shape (protocol factory, host, port); tests pass a fake.
CreateConnection = Callable[[Callable[[], asyncio.Protocol], str, int], Awaitable[Any]]

# Parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


class BadResponse(Exception):
    """The server sent something that is not an HTTP/1.x response."""


def host_header(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 80 else f"{shown}:{port}"


def encode_request(method: str, target: str, host: str, headers: Mapping[str, str], body: str) -> bytes:
    """One complete request. ``Host`` and ``User-Agent`` are added unless ``headers`` has them;
    ``Content-Length`` whenever there is a body (or the method expects one)."""
    names = {k.lower() for k in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: fleetbench/{bench.__version__}")
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    data = body.encode()
    if data or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _header(lower_head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lowercase) in a lowercased head, or None."""
    start = lower_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lower_head.find(b"\r\n", start)
    return lower_head[start:end if end >= 0 else len(lower_head)].strip()


class _Link(asyncio.Protocol):
    """One TCP connection of an HttpConnection; events from a link it has dropped are ignored."""

    def __init__(self, owner: HttpConnection) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.served = 0  # responses completed on this link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner._made(self)

    def data_received(self, data: bytes) -> None:
        self.owner._data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self, exc)


class Sweeper:
    """Times out requests for many connections with one periodic timer.

    A timer per request (``call_later`` + ``cancel``) cost about a third of the client's
    throughput; instead each connection notes when its oldest request went out, and this
    looks every ``timeout / 10`` (at most 0.5 s): a request times out within 10% of its limit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.every = min(0.5, timeout / 10)
        self.conns: set[HttpConnection] = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, conn: HttpConnection) -> None:
        self.conns.add(conn)
        if self.handle is None:
            self.handle = self.loop.call_later(self.every, self._sweep)

    def remove(self, conn: HttpConnection) -> None:
        self.conns.discard(conn)

    def _sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for conn in [c for c in self.conns if c.pending and now - c.since > self.timeout]:
            conn._timed_out()
        if self.conns:
            self.handle = self.loop.call_later(self.every, self._sweep)


class HttpConnection:
    """One worker's keep-alive connection to one HTTP server (implements ``client.Conn``).

    The engine hands it one request at a time (the http workload keeps ``pipeline`` at 1);
    responses are still matched to requests in order through ``pending``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, address: tuple[str, int], label: str,
                 complete: Callable[[SubBatch], None], lost: Callable[[str], None], *,
                 head: bool = False, timeout: float = 10.0,
                 create_connection: CreateConnection | None = None, sweeper: Sweeper | None = None) -> None:
        self.loop = loop
        self.create_connection = create_connection or loop.create_connection
        self.address = address
        self.label = label
        self.complete = complete
        self.lost = lost
        self.head = head  # HEAD requests: responses have headers only
        self.timeout = timeout  # per request; 0 = none
        self.link: _Link | None = None
        self.opening: asyncio.Future[None] | None = None
        self.pending: deque[SubBatch] = deque()  # sent or queued, answered in order
        self.queued: list[bytes] = []  # requests waiting for a link
        self.closing = False
        self.since = 0.0  # loop time the oldest pending request went out
        self.sweeper = sweeper if sweeper is not None or timeout <= 0 else Sweeper(loop, timeout)
        if self.sweeper is not None:
            self.sweeper.add(self)
        self.retried = False  # the request at the head of pending was already resent once
        self._last_head = b""  # see _head
        self._last_reading: tuple[int, bytes, bool, int, int, bool] = (0, b"", False, _HEAD, 0, False)
        self._reset_parser()

    def _reset_parser(self) -> None:
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.status = 0
        self.status_line = b""
        self.close_after = False

    # ------------------------------------------------------------------ links

    def open(self) -> asyncio.Future[None]:
        """Open a link now (the engine awaits the first one: failing it is fatal)."""
        if self.opening is None:
            self.opening = self.loop.create_task(self._connect())
            self.opening.add_done_callback(self._opened)
        return self.opening

    async def _connect(self) -> None:
        link = _Link(self)
        host, port = self.address
        limit = self.timeout if 0 < self.timeout < CONNECT_TIMEOUT_S else CONNECT_TIMEOUT_S
        await connect_within(self.create_connection(lambda: link, host, port), limit)

    def _opened(self, fut: asyncio.Future[None]) -> None:
        if self.opening is fut:
            self.opening = None
        exc = None if fut.cancelled() else fut.exception()
        if exc is None or self.closing:
            return
        self._fail_pending(b"cannot connect to %s: %s" % (self.label.encode(), describe(exc).encode()))

    def _made(self, link: _Link) -> None:
        if self.closing:
            link.transport.close()  # type: ignore[union-attr]
            return
        self.link = link
        self.opening = None  # open already, though the task may take a few more turns to finish
        self._reset_parser()
        if self.queued:
            link.transport.write(b"".join(self.queued))  # type: ignore[union-attr]
            self.queued = []

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None and link.transport is not None:
            link.transport.close()
        self._reset_parser()

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self.link or self.closing:
            return
        self.link = None
        if self.state == _UNTIL_CLOSE and self.pending:
            self._respond()  # the close was the end of the body (one request in flight)
            return
        if not self.pending:
            self._reset_parser()
            return
        got_nothing = self.state == _HEAD and not self.buf
        self._reset_parser()
        if got_nothing and link.served > 0 and not self.retried:
            # The server closed an idle keep-alive connection as we reused it: send again.
            self.retried = True
            self.queued = [sub.payload for sub in self.pending]
            self.open()
            return
        why = f": {exc}" if exc else ""
        self._fail_pending(b"connection to %s closed before the response%s" % (self.label.encode(), why.encode()))

    def close(self) -> None:
        self.closing = True
        if self.sweeper is not None:
            self.sweeper.remove(self)
        if self.opening is not None:
            self.opening.cancel()
        if self.link is not None and self.link.transport is not None:
            self.link.transport.close()
        self.link = None

    # ------------------------------------------------------------------ requests

    def send(self, sub: SubBatch) -> None:
        if self.closing:
            return
        if not self.pending:
            self.since = self.loop.time()
        self.pending.append(sub)
        link = self.link
        if link is not None and link.transport is not None:
            link.transport.write(sub.payload)
        else:
            self.queued.append(sub.payload)
            self.open()

    def _timed_out(self) -> None:
        self._drop_link()  # a late answer must not be taken for the next request's
        self._fail_pending(b"no response from %s within %gs" % (self.label.encode(), self.timeout))

    def _fail_pending(self, message: bytes) -> None:
        """Every pending request fails with ``message`` (their connection is gone)."""
        subs = list(self.pending)
        self.pending.clear()
        self.queued = []
        self.retried = False
        for sub in subs:
            errors = [(i, message) for i in range(sub.got, sub.want)]
            sub.errors = errors if sub.errors is None else sub.errors + errors
            sub.got = sub.want
            self.complete(sub)

    # ------------------------------------------------------------------ responses

    def _data(self, link: _Link, data: bytes) -> None:
        if link is not self.link:
            return
        rest = data
        try:
            if not self.buf and self.state == _HEAD and self.pending:
                rest = self._whole(data)  # the usual read: one whole response
                if not rest or self.link is not link:
                    return
            self._parse(link, rest)
        except BadResponse as exc:
            self.lost(f"not an HTTP response from {self.label} ({exc}): {bytes(data[:80])!r}")
            self.close()

    def _whole(self, data: bytes) -> bytes:
        """Settle a response that starts ``data`` and is all in it, without copying it into the
        buffer (what ``_parse`` does with every byte); what is left of ``data`` for ``_parse``."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data
        after = end + 4
        if self._head(data[:end]):
            self._respond()
            return data[after:]
        if self.state == _BODY and len(data) - after >= self.remaining:
            after += self.remaining
            self._respond()
            return data[after:]
        return data[after:]  # a body to come, chunks, interim: _parse goes on in the state set

    def _parse(self, link: _Link, data: bytes) -> None:
        """Feed ``data`` through the response state machine, across reads (raises BadResponse)."""
        buf = self.buf
        buf += data
        while buf:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise BadResponse(f"no end of headers in {MAX_HEAD} bytes")
                    return
                if not self.pending:
                    raise BadResponse("a response nobody asked for")
                head = bytes(buf[:end])
                del buf[:end + 4]
                if self._head(head):
                    self._respond()
                    if self.link is not link:
                        return  # the server closes it: anything after is not ours
            elif state == _BODY or state == _CHUNK_DATA:
                n = self.remaining
                if len(buf) < n:
                    self.remaining = n - len(buf)
                    buf.clear()
                    return
                del buf[:n]
                if state == _BODY:
                    self._respond()
                    if self.link is not link:
                        return
                else:
                    self.state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE or state == _TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise BadResponse("a chunk size or trailer line that does not end")
                    return
                line = bytes(buf[:end])
                del buf[:end + 2]
                if state == _TRAILERS:
                    if not line:
                        self._respond()
                        if self.link is not link:
                            return
                else:
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise BadResponse(f"bad chunk size line {line[:40]!r}") from None
                    if size == 0:
                        self.state = _TRAILERS
                    else:
                        self.state = _CHUNK_DATA
                        self.remaining = size + 2  # the data and its CRLF
            else:  # _UNTIL_CLOSE: the body is whatever comes until the server closes
                buf.clear()
                return

    def _head(self, head: bytes) -> bool:
        """Read a response head; True if the response is complete without a body. A server
        sends the same head again and again (a Date header changes it once a second): the
        last head's reading is kept and reused, as parsing it cost a third of the client."""
        if head == self._last_head:
            self.status, self.status_line, self.close_after, self.state, self.remaining, done = self._last_reading
            return done
        done = self._read_head(head)
        self._last_head = head
        self._last_reading = (self.status, self.status_line, self.close_after, self.state, self.remaining, done)
        return done

    def _read_head(self, head: bytes) -> bool:
        eol = head.find(b"\r\n")
        line = head if eol < 0 else head[:eol]
        if not line.startswith(b"HTTP/1.") or len(line) < 12:
            raise BadResponse(f"status line {line[:40]!r}")
        try:
            status = int(line[9:12])
        except ValueError:
            raise BadResponse(f"status line {line[:40]!r}") from None
        lower = head.lower()
        connection = _header(lower, b"connection") or b""
        if line[5:8] == b"1.0":
            self.close_after = b"keep-alive" not in connection
        else:
            self.close_after = b"close" in connection
        self.status, self.status_line = status, line
        if status < 200:
            if status == 101:
                raise BadResponse("101 Switching Protocols is not supported")
            return False  # an interim response (100 Continue): the real one follows
        if self.head or status == 204 or status == 304:
            return True
        encoding = _header(lower, b"transfer-encoding")
        if encoding is not None and encoding.endswith(b"chunked"):
            self.state = _CHUNK_SIZE
            return False
        length = _header(lower, b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise BadResponse(f"Content-Length {length[:20]!r}") from None
            if n < 0:
                raise BadResponse(f"Content-Length {n}")
            if n == 0:
                return True
            self.state, self.remaining = _BODY, n
            return False
        self.state, self.close_after = _UNTIL_CLOSE, True
        return False

    def _respond(self) -> None:
        """The response at the head of the queue is complete: settle its op."""
        sub = self.pending[0]
        status = self.status
        if not 200 <= status < 400:
            request = sub.ops[sub.got][1]
            eol = request.find(b"\r\n")
            message = b"%s (%s on %s)" % (self.status_line, request[:eol], self.label.encode())
            if sub.errors is None:
                sub.errors = [(sub.got, message)]
            else:
                sub.errors.append((sub.got, message))
        sub.got += 1
        self.retried = False
        if self.link is not None:
            self.link.served += 1
        if self.close_after:
            self._drop_link()  # before complete(): the next request must go to a fresh link
        else:
            self.state = _HEAD
        if sub.got < sub.want:
            return
        self.pending.popleft()
        if self.pending:
            self.since = self.loop.time()
        self.complete(sub)


def dialer(*, head: bool, timeout: float, create_connection: CreateConnection | None = None) -> Dial:
    """A ``client.Dial`` opening HttpConnections (``head``: the method is HEAD)."""
    sweepers: dict[asyncio.AbstractEventLoop, Sweeper] = {}

    def dial(loop: asyncio.AbstractEventLoop, address: tuple[str, int], label: str,
             complete: Callable[[SubBatch], None], lost: Callable[[str], None]) -> tuple[HttpConnection, Any]:
        sweeper = sweepers.setdefault(loop, Sweeper(loop, timeout)) if timeout > 0 else None
        conn = HttpConnection(loop, address, label, complete, lost, head=head, timeout=timeout,
                              create_connection=create_connection, sweeper=sweeper)
        return conn, conn.open()

    return dial
