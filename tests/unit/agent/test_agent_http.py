"""The http workload without sockets: request encoding, response framing (Content-Length,
chunked, HEAD, 1xx, until-close), keep-alive and reconnects, timeouts, the workload's op
stream, its checks, and the whole load loop against a scripted server.

The fake server parses what the client writes and answers through ``loop.call_soon`` in
seeded random-sized chunks, so response reassembly is exercised everywhere.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from engine_harness import run_phase

from bench.agent import cluster, httpclient
from bench.agent import workloads as W
from bench.agent.client import SubBatch
from bench.agent.engine import Engine
from bench.agent.stats import Recorder
from bench.spawn import spec
from bench.wire import hist
from bench.wire.catalogue import check_params
from bench.wire.job import effective_params

Reply = bytes | tuple[bytes, bool] | None  # bytes, (bytes, close after), or None: say nothing


def ok(body: bytes = b"hi", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class FakeTransport:
    def __init__(self, server: FakeHttp, proto: asyncio.Protocol, address: tuple[str, int]) -> None:
        self.server, self.proto, self.address = server, proto, address
        self.loop = asyncio.get_event_loop()
        self.buf = b""
        self.closed = False
        self.served = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "write on a closed transport"
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            method, target, version = lines[0].split(" ")
            assert version == "HTTP/1.1"
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            n = int(headers.get("content-length", "0"))
            if len(rest) < n:
                return
            body, self.buf = rest[:n], rest[n:]
            self.server.requests.append((self.server.links.index(self), method, target, headers, body))
            reply = self.server.respond(self, method, target, headers, body)
            self.served += 1
            if reply is None:
                continue
            data, close = reply if isinstance(reply, tuple) else (reply, False)
            self.deliver(data, close)

    def deliver(self, data: bytes, close: bool = False) -> None:
        rng = self.server.rng
        while data:
            cut = rng.randint(1, len(data))
            self.loop.call_soon(self._feed, data[:cut])
            data = data[cut:]
        if close:
            self.loop.call_soon(self.server_close)

    def _feed(self, chunk: bytes) -> None:
        if not self.closed:
            self.proto.data_received(chunk)

    def server_close(self) -> None:
        if not self.closed:
            self.closed = True
            self.proto.connection_lost(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.proto.connection_lost, None)


class FakeHttp:
    """A scripted HTTP server: ``respond(transport, method, target, headers, body) -> Reply``."""

    def __init__(self, respond: Callable[..., Reply], seed: int = 1) -> None:
        self.respond = respond
        self.rng = random.Random(seed)
        self.links: list[FakeTransport] = []
        self.requests: list[tuple[int, str, str, dict[str, str], bytes]] = []
        self.refuse = False
        self.hang = False  # a connect that never completes (a SYN nobody answers)

    async def create_connection(self, factory: Callable[[], asyncio.Protocol], host: str, port: int) -> Any:
        if self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.hang:
            await asyncio.Event().wait()
        proto = factory()
        t = FakeTransport(self, proto, (host, port))
        self.links.append(t)
        proto.connection_made(t)
        return t, proto


def request(method: str = "GET", target: str = "/") -> bytes:
    return httpclient.encode_request(method, target, "h:80", {}, "")


class Client:
    """One HttpConnection to a FakeHttp, and what it reported."""

    def __init__(self, server: FakeHttp, *, head: bool = False, timeout: float = 0.0) -> None:
        self.done: list[SubBatch] = []
        self.lost: list[str] = []
        self.server = server
        self.conn = httpclient.HttpConnection(asyncio.get_event_loop(), ("h", 80), "h:80", self.done.append,
                                              self.lost.append, head=head, timeout=timeout,
                                              create_connection=server.create_connection)

    def send(self, payload: bytes) -> SubBatch:
        sub = SubBatch(None, [(b"0", payload, 1)], payload, 1)
        self.conn.send(sub)
        return sub

    async def until(self, check: Callable[[], bool], turns: int = 10000) -> None:
        """Let the loop run until ``check()``; a generous bound, not a timing assertion."""
        for i in range(turns):
            if check():
                return
            await asyncio.sleep(0 if i < 100 else 0.001)
        raise AssertionError("condition never became true")

    async def one(self, payload: bytes = b"") -> SubBatch:
        n = len(self.done)
        sub = self.send(payload or request())
        await self.until(lambda: len(self.done) > n)
        assert self.done[-1] is sub
        return sub


def run(coro_fn: Callable[[], Any]) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


# ------------------------------------------------------------------ encoding


def test_request_has_host_agent_and_length_when_needed():
    get = httpclient.encode_request("GET", "/a?b=1", "web:8000", {"Accept": "x/y"}, "")
    assert get.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: web:8000\r\nUser-Agent: fleetbench/")
    assert b"Accept: x/y\r\n" in get and b"Content-Length" not in get and get.endswith(b"\r\n\r\n")
    post = httpclient.encode_request("POST", "/", "h", {"host": "other", "User-Agent": "me"}, "é")
    assert b"Host: h" not in post and b"host: other\r\n" in post and b"fleetbench/" not in post
    assert post.endswith(b"Content-Length: 2\r\n\r\n\xc3\xa9")
    assert b"Content-Length: 0" in httpclient.encode_request("PUT", "/", "h", {}, "")
    assert httpclient.host_header("::1", 8080) == "[::1]:8080" and httpclient.host_header("h", 80) == "h"


# ------------------------------------------------------------------ framing


def test_content_length_responses_reuse_one_connection():
    server = FakeHttp(lambda t, m, target, h, b: ok(b"x" * 5000 if target == "/big" else b""))

    async def main() -> None:
        c = Client(server)
        for target in ["/", "/big", "/", "/big"] * 5:
            sub = await c.one(request("GET", target))
            assert sub.errors is None and sub.got == 1
        assert len(server.links) == 1 and not c.lost

    run(main)


class _Wire:
    """What an HttpConnection writes on: nothing is sent anywhere, its reads are fed by hand."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


SEQUENCE = [ok(b"abc"), ok(b"abc"), ok(b"hello"), b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", ok(b"abc")]


def _feed(reads: list[bytes]) -> list[SubBatch]:
    """Six requests answered by SEQUENCE, arriving as ``reads``; the settled requests."""
    done: list[SubBatch] = []
    conn = httpclient.HttpConnection(asyncio.new_event_loop(), ("h", 80), "h:80", done.append,
                                     lambda why: pytest.fail(why), timeout=0)
    link = httpclient._Link(conn)
    link.transport = _Wire()  # type: ignore[assignment]
    conn._made(link)
    for i in range(len(SEQUENCE)):
        conn.send(SubBatch(None, [(b"0", b"GET /%d HTTP/1.1\r\n\r\n" % i, 1)], b"", 1))
    for data in reads:
        link.data_received(data)
    return done


@pytest.mark.parametrize("how", ["one read each", "all in one read", "byte by byte", "cut inside heads"])
def test_repeated_and_changing_heads_frame_every_response_however_it_arrives(how: str):
    whole = b"".join(SEQUENCE)
    reads = {"one read each": SEQUENCE, "all in one read": [whole],
             "byte by byte": [whole[i:i + 1] for i in range(len(whole))],
             "cut inside heads": [piece for r in SEQUENCE for piece in (r[:10], r[10:])]}[how]
    done = _feed(reads)
    assert len(done) == len(SEQUENCE) and all(sub.got == 1 for sub in done)
    assert [sub.errors for sub in done] == [None, None, None, [(0, b"HTTP/1.1 410 Gone (GET /3 HTTP/1.1 on h:80)")],
                                            None, None]


def test_chunked_with_extensions_and_trailers():
    body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\n"
    server = FakeHttp(lambda *a: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body)

    async def main() -> None:
        c = Client(server)
        for _ in range(10):
            assert (await c.one()).errors is None
        assert len(server.links) == 1 and not c.lost

    run(main)


def test_statuses_outside_2xx_3xx_are_op_errors_naming_the_request():
    codes = {"/ok": b"204 No Content", "/moved": b"301 Moved Permanently", "/gone": b"410 Gone",
             "/boom": b"503 Service Unavailable"}

    def respond(t, m, target, h, b):
        status = codes[target]
        return b"HTTP/1.1 %s\r\n%s\r\n" % (status, b"" if status.startswith(b"204") else b"Content-Length: 0\r\n")

    server = FakeHttp(respond)

    async def main() -> None:
        c = Client(server)
        assert (await c.one(request("GET", "/ok"))).errors is None
        assert (await c.one(request("GET", "/moved"))).errors is None
        assert (await c.one(request("GET", "/gone"))).errors == [(0, b"HTTP/1.1 410 Gone (GET /gone HTTP/1.1 on h:80)")]
        assert (await c.one(request("DELETE", "/boom"))).errors == [
            (0, b"HTTP/1.1 503 Service Unavailable (DELETE /boom HTTP/1.1 on h:80)")]
        assert len(server.links) == 1

    run(main)


def test_head_and_304_have_no_body_and_1xx_is_skipped():
    def respond(t, method, target, h, b):
        if method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        if target == "/cached":
            return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after")

    server = FakeHttp(respond)

    async def main() -> None:
        head = Client(server, head=True)
        for _ in range(3):
            assert (await head.one(request("HEAD"))).errors is None
        c = Client(server)
        assert (await c.one(request("GET", "/cached"))).errors is None
        assert (await c.one(request("GET", "/"))).errors is None
        assert (await c.one(request("GET", "/cached"))).errors is None
        assert not head.lost and not c.lost and len(server.links) == 2

    run(main)


def test_server_that_closes_after_each_response_gets_a_new_connection_each_time():
    responses = {
        "close": lambda: (ok(extra=b"Connection: close\r\n"), True),
        "http10": lambda: (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", True),
        "until-close": lambda: (b"HTTP/1.0 200 OK\r\n\r\nbody until the end", True),
    }
    for name, make in responses.items():
        server = FakeHttp(lambda *a, make=make: make())

        async def main(server: FakeHttp = server, name: str = name) -> None:
            c = Client(server)
            for _ in range(4):
                assert (await c.one()).errors is None, name
            assert not c.lost

        run(main)
        assert len(server.links) == 4, name
        assert [r[0] for r in server.requests] == [0, 1, 2, 3], name  # one request per connection


def test_http10_keep_alive_is_honoured():
    server = FakeHttp(lambda *a: b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        c = Client(server)
        for _ in range(3):
            assert (await c.one()).errors is None

    run(main)
    assert len(server.links) == 1


def test_idle_close_of_a_reused_connection_is_retried_once():
    def respond(t, *a):
        if t.served == 1:  # the second request on a link: the server had closed it meanwhile
            t.loop.call_soon(t.server_close)
            return None
        return ok()

    server = FakeHttp(respond)

    async def main() -> None:
        c = Client(server)
        assert (await c.one()).errors is None
        assert (await c.one()).errors is None  # resent on a second link
        assert not c.lost

    run(main)
    assert len(server.links) == 2 and [r[0] for r in server.requests] == [0, 0, 1]


def test_close_mid_response_or_on_a_fresh_link_is_an_op_error():
    def respond(t, m, target, h, b):
        if target == "/half":
            t.deliver(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
            return None
        t.loop.call_soon(t.server_close)  # on a fresh link: no retry
        return None

    server = FakeHttp(respond)

    async def main() -> None:
        c = Client(server)
        half = await c.one(request("GET", "/half"))
        assert half.errors == [(0, b"connection to h:80 closed before the response")]
        fresh = await c.one(request("GET", "/never"))
        assert fresh.errors is not None and b"closed before the response" in fresh.errors[0][1]
        assert not c.lost

    run(main)


def test_timeout_is_an_op_error_and_a_late_answer_is_ignored():
    late: list[FakeTransport] = []

    def respond(t, m, target, h, b):
        if target == "/slow":
            late.append(t)
            return None
        return ok()

    server = FakeHttp(respond)

    async def main() -> None:
        c = Client(server, timeout=0.05)
        slow = await c.one(request("GET", "/slow"))
        assert slow.errors == [(0, b"no response from h:80 within 0.05s")]
        assert late[0].closed
        late[0].proto.data_received(ok(b"late"))  # a dropped link's bytes go nowhere
        assert (await c.one()).errors is None
        assert not c.lost and len(server.links) == 2

    run(main)


def test_reconnect_failure_is_an_op_error():
    server = FakeHttp(lambda *a: (ok(extra=b"Connection: close\r\n"), True))

    async def main() -> None:
        c = Client(server)
        assert (await c.one()).errors is None
        server.refuse = True
        sub = await c.one()
        assert sub.errors is not None and sub.errors[0][1].startswith(b"cannot connect to h:80:")
        server.refuse = False
        assert (await c.one()).errors is None
        assert not c.lost

    run(main)


@pytest.mark.parametrize("garbage", [b"-ERR unknown command 'GET'\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_bytes_that_are_not_http_are_fatal(garbage):
    server = FakeHttp(lambda *a: garbage)

    async def main() -> None:
        c = Client(server)
        c.send(request())
        await c.until(lambda: bool(c.lost))
        assert "not an HTTP response from h:80" in c.lost[0]

    run(main)


def test_unsolicited_response_is_fatal():
    server = FakeHttp(lambda *a: ok())

    async def main() -> None:
        c = Client(server)
        await c.one()
        server.links[0].deliver(ok())
        await c.until(lambda: bool(c.lost))
        assert "nobody asked for" in c.lost[0]

    run(main)


# ------------------------------------------------------------------ the workload


def plan(params: dict[str, Any], targets=("a:1", "b:2"), kind: str = "command", agent: int = 0,
         pipeline: int = 1) -> W.Plan:
    ctx = W.Context(effective_params("http", params), agent, 2, 1, pipeline, tuple(targets), kind)
    return W.build("http", ctx)


def test_ops_cycle_over_every_node_and_path():
    p = plan({"paths": ["/x", "/y", "/z"]})
    assert p.nodes == [("a", 1), ("b", 2)]
    ops = W.draw(p, 12)
    seen = [(key, payload.split(b"\r\n")[0], payload.split(b"\r\n")[1]) for key, payload, _ in ops]
    assert seen[:6] == [(b"0", b"GET /x HTTP/1.1", b"Host: a:1"), (b"1", b"GET /x HTTP/1.1", b"Host: b:2"),
                        (b"0", b"GET /y HTTP/1.1", b"Host: a:1"), (b"1", b"GET /y HTTP/1.1", b"Host: b:2"),
                        (b"0", b"GET /z HTTP/1.1", b"Host: a:1"), (b"1", b"GET /z HTTP/1.1", b"Host: b:2")]
    assert seen[6:] == seen[:6] and all(n == 1 for _, _, n in ops)
    assert W.draw(plan({"paths": ["/x", "/y", "/z"]}, agent=1), 1)[0] == ops[1]  # agent 1 starts one later


def test_urls_replace_the_server_nodes():
    p = plan({"urls": ["http://web:8080/a", "http://web:8080/b?q=1", "http://other/"], "method": "POST",
              "body": "{}", "headers": {"Content-Type": "application/json"}}, kind="redis")
    assert p.nodes == [("web", 8080), ("other", 80)]
    ops = W.draw(p, 3)
    assert [o[0] for o in ops] == [b"0", b"0", b"1"]
    assert ops[1][1].startswith(b"POST /b?q=1 HTTP/1.1\r\nHost: web:8080\r\n")
    assert ops[2][1].endswith(b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert b"Host: other\r\n" in ops[2][1]


def test_workload_refusals():
    with pytest.raises(ValueError, match="pipeline must be 1"):
        plan({}, pipeline=2)
    with pytest.raises(ValueError, match="needs params.urls"):
        plan({}, kind="redis-cluster")


def test_param_checks_shared_by_spec_and_agent():
    problems = dict(check_params("http", {"paths": ["/ok", "no-slash", "/a b"], "urls": ["https://x/", "ftp://y"],
                                          "headers": {"Content-Length": "3", "Bad Name": "v", "X": "a\r\nb"}}))
    assert set(problems) == {"paths[1]", "paths[2]", "urls[0]", "urls[1]", "headers.Content-Length",
                             "headers.Bad Name", "headers.X"}
    assert "https is not supported" in problems["urls[0]"]
    assert check_params("http", {"paths": [], "urls": []}) == [("paths", "must list at least one path (or give urls)")]


def spawn_problems(benchmark: dict[str, Any], kind: str = "command") -> list[str]:
    server = {"kind": kind, "script": "srv"} if kind == "command" else {"kind": kind}
    data = {"hosts": {"servers": ["s1"], "agents": ["a1"]}, "server": server,
            "benchmark": [{"name": "b", "workload": "http", "iterations": 10, **benchmark}]}
    try:
        spec.parse(data)
    except spec.SpecError as exc:
        return exc.problems
    return []


def test_spec_reports_http_problems_by_key():
    assert spawn_problems({}) == []
    assert spawn_problems({"pipeline": 4}) == [
        "benchmark[0].pipeline: workload 'http' sends one request at a time per connection (HTTP/1.1, no "
        "pipelining); raise connections instead"]
    assert spawn_problems({"params": {"urls": ["https://x/"]}}) == [
        "benchmark[0].params.urls[0]: 'https://x/': https is not supported (the agent speaks plain HTTP/1.1); "
        "use http://"]
    assert spawn_problems({"params": {"headers": {"Transfer-Encoding": "chunked"}}}) == [
        "benchmark[0].params.headers.Transfer-Encoding: set by the agent from the body; remove it"]
    assert spawn_problems({"params": {"urls": ["http://x:81/"]}}, kind="redis") == []


def test_direct_router_routes_by_node_index():
    r = cluster.DirectRouter([("a", 1), ("b", 2), ("c", 3)])
    assert not r.single and r.active_nodes() == [0, 1, 2]
    assert [r.route(k) for k in (b"2", b"0", b"1")] == [2, 0, 1]
    assert cluster.DirectRouter([("a", 1)]).single


# ------------------------------------------------------------------ the whole loop


def engine_run(p: W.Plan, server: FakeHttp, phase: dict[str, Any], connections: int = 3) -> tuple[Engine, Recorder]:
    dial = httpclient.dialer(head=False, timeout=5.0, create_connection=server.create_connection)
    return run_phase(cluster.DirectRouter(p.nodes), dial, p.next_ops, connections=connections, **phase)


def test_engine_closed_loop_counts_every_request_and_error():
    server = FakeHttp(lambda t, m, target, h, b: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                      if target == "/missing" else ok())
    p = plan({"paths": ["/", "/missing"]})
    eng, rec = engine_run(p, server, {"iterations": 400})
    assert eng.fatal is None
    assert len(server.requests) == 400 and rec.ops == 200 and rec.errors == 200
    assert sorted(rec.error_samples) == ["HTTP/1.1 404 Not Found (GET /missing HTTP/1.1 on a:1)",
                                         "HTTP/1.1 404 Not Found (GET /missing HTTP/1.1 on b:2)"]
    assert {r[2] for r in server.requests} == {"/", "/missing"}
    assert len(server.links) == 6  # 3 workers x 2 nodes, all kept alive
    assert hist.decode(hist.encode(rec.latency)).get_total_count() == 200
    assert sum(s["ops"] for s in rec.series) == 200 and sum(s["errors"] for s in rec.series) == 200


def test_engine_open_loop_records_service_time_too():
    server = FakeHttp(lambda *a: ok())
    eng, rec = engine_run(plan({}), server, {"iterations": 60, "rate": 2000.0})
    assert eng.fatal is None and rec.ops == 60
    assert rec.service is not None and rec.service.get_total_count() == 60


def test_a_connect_that_times_out_says_so_and_after_how_long(monkeypatch):
    monkeypatch.setattr(httpclient, "CONNECT_TIMEOUT_S", 0.01)
    server = FakeHttp(lambda *a: ok())
    server.hang = True

    async def main() -> None:
        c = Client(server)  # no request timeout: only the connect's limit
        sub = await c.one()
        assert sub.errors is not None and sub.errors[0][1] == b"cannot connect to h:80: timed out after 0.01 s"

    run(main)


def test_engine_refused_first_connection_is_fatal():
    server = FakeHttp(lambda *a: ok())
    server.refuse = True
    with pytest.raises(ConnectionError, match="cannot connect to a:1"):
        engine_run(plan({}, targets=("a:1",)), server, {"iterations": 5})
