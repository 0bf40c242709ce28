"""The load loop against an in-memory fake Redis (no sockets): counts, phases, open loop,
errors, MOVED/ASK redirects, lost connections and stalls.

The fake transport answers each write by parsing the RESP commands and delivers the replies
in seeded random-sized chunks, so reply reassembly is exercised on every test.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from bench.agent import cluster, resp
from bench.agent import engine as engine_mod
from bench.agent.engine import Engine, Phase
from bench.agent.stats import Recorder
from bench.agent.workloads import Op
from bench.wire import hist

Address = tuple[str, int]


class FakeNode:
    def __init__(self, address: Address, owned: set[int] | None = None) -> None:
        self.address = address
        self.owned = owned  # None: a plain (non-cluster) server
        self.data: dict[bytes, bytes] = {}
        self.calls: list[bytes] = []
        self.moved: dict[int, Address] = {}  # slot -> owner, for slots we do not own
        self.migrating: dict[int, Address] = {}  # slot -> target, keys absent here get ASK
        self.importing: set[int] = set()
        self.silent = False  # swallow everything (a stalled server)
        self.delay_s = 0.0  # hold every reply this long (a slow server)

    def execute(self, cmd: list[bytes], asking: bool) -> bytes:
        verb = cmd[0].upper()
        self.calls.append(verb)
        if verb == b"ASKING":
            return b"+OK\r\n"
        if verb in (b"SET", b"GET", b"SETBIT", b"BITCOUNT", b"BITOP"):
            key = cmd[3] if verb == b"BITOP" else cmd[1]
            slot = cluster.key_slot(key)
            if self.owned is not None and slot not in self.owned:
                if slot in self.importing and asking:
                    pass
                else:
                    host, port = self.moved[slot]
                    return b"-MOVED %d %s:%d\r\n" % (slot, host.encode(), port)
            if slot in self.migrating and key not in self.data:
                host, port = self.migrating[slot]
                return b"-ASK %d %s:%d\r\n" % (slot, host.encode(), port)
        if verb == b"SET":
            self.data[cmd[1]] = cmd[2]
            return b"+OK\r\n"
        if verb == b"GET":
            v = self.data.get(cmd[1])
            return b"$-1\r\n" if v is None else resp.bulk(v)
        if verb in (b"SETBIT", b"BITCOUNT", b"BITOP"):
            self.data.setdefault(cmd[1] if verb != b"BITOP" else cmd[2], b"")
            return b":0\r\n"
        return b"-ERR unknown command '%s'\r\n" % verb


class FakeTransport:
    def __init__(self, node: FakeNode, conn: asyncio.Protocol, loop: asyncio.AbstractEventLoop, rng: random.Random):
        self.node, self.conn, self.loop, self.rng = node, conn, loop, rng
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.node.silent or self.closed:
            return
        replies, pos, asking = [], 0, False
        while pos < len(data):
            cmd, pos = resp.parse(data, pos)
            replies.append(self.node.execute(cmd, asking))
            asking = cmd[0].upper() == b"ASKING"
        out = b"".join(replies)
        if self.node.delay_s:
            self.loop.call_later(self.node.delay_s, self._deliver, out)
            return
        while out:  # deliver in random-sized chunks, as TCP may
            cut = self.rng.randint(1, max(1, len(out)))
            self.loop.call_soon(self._deliver, out[:cut])
            out = out[cut:]

    def _deliver(self, chunk: bytes) -> None:
        if not self.closed:
            self.conn.data_received(chunk)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.conn.connection_lost, None)


class FakeServers:
    def __init__(self, nodes: list[FakeNode]) -> None:
        self.nodes = {n.address: n for n in nodes}
        self.transports: list[FakeTransport] = []
        self.rng = random.Random(1)

    def ranges(self) -> list[tuple[int, int, Address]]:
        out = []
        for n in self.nodes.values():
            for s in sorted(n.owned or ()):
                out.append((s, s, n.address))
        return out


@pytest.fixture
def fake(monkeypatch):
    holder: dict[str, FakeServers] = {}

    async def fake_open(loop, host, port, conn, timeout=10.0):
        servers = holder["servers"]
        node = servers.nodes.get((host, port))
        if node is None:
            raise ConnectionRefusedError(111, "Connection refused")
        t = FakeTransport(node, conn, loop, servers.rng)
        servers.transports.append(t)
        conn.connection_made(t)
        return conn

    async def fake_discover(targets, timeout=5.0, auth=None):
        return holder["servers"].ranges()

    monkeypatch.setattr(engine_mod, "open_connection", fake_open)
    monkeypatch.setattr(cluster, "discover", fake_discover)

    def install(nodes: list[FakeNode]) -> FakeServers:
        holder["servers"] = FakeServers(nodes)
        return holder["servers"]

    return install


def set_ops(prefix: bytes = b"k", keys: int = 1000, seed: int = 1):
    rand = random.Random(seed).random

    def next_ops(n: int) -> list[Op]:
        out = []
        for _ in range(n):
            key = prefix + b"%d" % int(rand() * keys)
            out.append((key, resp.encode(b"SET", key, b"v"), 1))
        return out

    return next_ops


def run(router: cluster.Router, phase: Phase, connections: int = 3, prefill: Phase | None = None,
        during=None) -> Engine:
    loop = asyncio.new_event_loop()
    try:
        eng = Engine(loop, router, connections, log=lambda m: None)

        async def go() -> None:
            await eng.connect()
            if prefill is not None:
                await eng.run(prefill)
            if during is not None:
                loop.call_soon(during, eng)
            await eng.run(phase)

        try:
            loop.run_until_complete(go())
        except ConnectionError:
            pass
        eng.close()
        loop.run_until_complete(asyncio.sleep(0))
        if phase.recorder is not None:
            phase.recorder.finish()
        return eng
    finally:
        loop.close()


def single(fake) -> tuple[FakeNode, cluster.Router]:
    node = FakeNode(("n", 1))
    fake([node])
    return node, cluster.Router([("n", 1)])


@pytest.mark.parametrize("pipeline,connections", [(1, 1), (16, 5), (7, 50)])
def test_iterations_are_exact(fake, pipeline, connections):
    node, router = single(fake)
    rec = Recorder(open_loop=False)
    eng = run(router, Phase(set_ops(), pipeline, iterations=1003, recorder=rec), connections)
    assert eng.fatal is None and not eng.interrupted
    assert rec.ops == 1003 and rec.errors == 0 and node.calls.count(b"SET") == 1003
    assert hist.decode(rec.histograms()["latency_us"]).get_total_count() == 1003
    assert sum(s["ops"] for s in rec.series) == 1003


def test_unrecorded_phase_then_measured_phase(fake):
    node, router = single(fake)
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(), 4, iterations=100, recorder=rec),
        prefill=Phase(set_ops(b"p"), 8, iterations=50))
    assert rec.ops == 100 and node.calls.count(b"SET") == 150
    assert sum(1 for k in node.data if k.startswith(b"p")) > 0


def test_warmup_is_not_recorded(fake):
    node, router = single(fake)
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(), 2, iterations=200, warmup_s=0.05, recorder=rec))
    assert rec.ops == 200 and node.calls.count(b"SET") > 200


def test_duration(fake):
    node, router = single(fake)
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(), 2, duration_s=0.15, recorder=rec), connections=2)
    assert rec.ops > 0 and rec.ops == node.calls.count(b"SET")
    assert 0.14 < rec.elapsed() < 0.5


def test_open_loop_follows_the_schedule(fake):
    node, router = single(fake)
    rec = Recorder(open_loop=True)
    run(router, Phase(set_ops(), 4, duration_s=0.25, rate=2000.0, recorder=rec), connections=2)
    assert rec.ops == 500  # 125 batches of 4 due in [0, 0.25)
    assert hist.decode(rec.histograms()["service_us"]).get_total_count() == 500
    assert 0.24 < rec.elapsed() < 0.3


def test_late_ops_that_waited_for_a_busy_connection_blame_the_server(fake):
    node, router = single(fake)
    node.delay_s = 0.03  # each reply 30 ms: 2 connections serve ~67 batches/s of the 500 due
    rec = Recorder(open_loop=True)
    run(router, Phase(set_ops(), 1, duration_s=0.2, rate=500.0, recorder=rec), connections=2)
    assert rec.late_ops > 20 and rec.late_busy_ops + rec.late_loop_ops == rec.late_ops
    assert rec.late_busy_ops > 0.9 * rec.late_ops  # nearly all waited for a connection


def test_late_ops_due_while_a_connection_was_free_blame_the_agents_loop(fake):
    _, router = single(fake)
    rec = Recorder(open_loop=True)

    def block_the_loop(eng: Engine) -> None:  # the agent's CPU busy elsewhere for 100 ms
        eng.loop.call_later(0.05, time.sleep, 0.1)

    run(router, Phase(set_ops(), 1, duration_s=0.3, rate=1000.0, recorder=rec), connections=300,
        during=block_the_loop)
    assert rec.late_loop_ops >= 50  # ~100 fell due during the block, with connections to spare
    assert rec.late_busy_ops == 0 and rec.late_ops == rec.late_loop_ops


def test_open_loop_iterations(fake):
    node, router = single(fake)
    rec = Recorder(open_loop=True)
    run(router, Phase(set_ops(), 3, iterations=100, rate=5000.0, recorder=rec), connections=1)
    assert rec.ops == 100 and node.calls.count(b"SET") == 100


def test_error_replies_are_counted_per_op_and_sampled(fake):
    node, router = single(fake)
    rand = random.Random(2).random

    def next_ops(n: int) -> list[Op]:
        out = []
        for i in range(n):
            if rand() < 0.25:
                out.append((b"x", resp.encode(b"NOPE%d" % (i % 2)), 1))
            else:
                out.append((b"k", resp.encode(b"SET", b"k", b"v"), 1))
        return out

    rec = Recorder(open_loop=False)
    run(router, Phase(next_ops, 8, iterations=400, recorder=rec))
    assert rec.ops + rec.errors == 400 and 60 < rec.errors < 140
    assert sorted(rec.error_samples) == ["ERR unknown command 'NOPE0'", "ERR unknown command 'NOPE1'"]
    assert hist.decode(rec.histograms()["latency_us"]).get_total_count() == rec.ops


def test_multi_command_ops_fail_as_one(fake):
    node, router = single(fake)

    def next_ops(n: int) -> list[Op]:
        good = resp.encode(b"BITOP", b"AND", b"d", b"a") + resp.encode(b"BITCOUNT", b"d")
        bad = resp.encode(b"BITOP", b"AND", b"d", b"a") + resp.encode(b"OOPS") + resp.encode(b"OOPS")
        return [(b"d", good if i % 2 else bad, 2 if i % 2 else 3) for i in range(n)]

    rec = Recorder(open_loop=False)
    run(router, Phase(next_ops, 5, iterations=50, recorder=rec))
    assert (rec.ops, rec.errors) == (20, 30)  # ops 0, 2, 4 of each batch of 5 fail
    assert rec.error_samples == ["ERR unknown command 'OOPS'"]


def make_cluster(fake) -> tuple[list[FakeNode], FakeServers]:
    addrs = [("a", 1), ("b", 2), ("c", 3)]
    nodes = [FakeNode(a, {s for s in range(cluster.SLOTS) if s % 3 == i}) for i, a in enumerate(addrs)]
    for n in nodes:
        for s in range(cluster.SLOTS):
            n.moved[s] = addrs[s % 3]
    return nodes, fake(nodes)


def test_cluster_routing_sends_each_key_to_its_owner(fake):
    nodes, servers = make_cluster(fake)
    router = cluster.Router([], servers.ranges())
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(keys=5000), 16, iterations=2000, recorder=rec), connections=4)
    assert rec.ops == 2000 and rec.errors == 0
    assert sum(n.calls.count(b"SET") for n in nodes) == 2000
    for i, n in enumerate(nodes):
        assert n.data and all(cluster.key_slot(k) % 3 == i for k in n.data)


def test_moved_redirects_are_followed_and_learned(fake):
    nodes, servers = make_cluster(fake)
    router = cluster.Router([], [(0, cluster.SLOTS - 1, ("a", 1))])  # stale: all on "a"
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(keys=300), 8, iterations=1000, recorder=rec), connections=2)
    assert rec.ops == 1000 and rec.errors == 0
    assert all(all(cluster.key_slot(k) % 3 == i for k in n.data) for i, n in enumerate(nodes))
    assert nodes[1].data and nodes[2].data
    assert router.nodes[router.route(b"foo")] == [("a", 1), ("b", 2), ("c", 3)][12182 % 3]


def test_ask_redirect_uses_asking(fake):
    nodes, servers = make_cluster(fake)
    router = cluster.Router([], servers.ranges())
    slot = cluster.key_slot(b"k1")
    owner = nodes[slot % 3]
    target = nodes[(slot + 1) % 3]
    owner.migrating[slot] = target.address
    target.importing.add(slot)

    def next_ops(n: int) -> list[Op]:
        return [(b"k1", resp.encode(b"SET", b"k1", b"v"), 1) for _ in range(n)]

    rec = Recorder(open_loop=False)
    run(router, Phase(next_ops, 2, iterations=6, recorder=rec), connections=1)
    assert rec.ops == 6 and rec.errors == 0
    assert b"k1" in target.data and b"k1" not in owner.data
    assert target.calls.count(b"ASKING") == 6 and router.route(b"k1") == router.node_index(owner.address)


def test_endless_redirects_become_errors(fake):
    a, b = FakeNode(("a", 1), set()), FakeNode(("b", 2), set())
    for s in range(cluster.SLOTS):
        a.moved[s], b.moved[s] = ("b", 2), ("a", 1)
    fake([a, b])
    router = cluster.Router([], [(0, cluster.SLOTS - 1, ("a", 1))])
    rec = Recorder(open_loop=False)
    run(router, Phase(set_ops(), 1, iterations=3, recorder=rec), connections=1)
    assert rec.ops == 0 and rec.errors == 3 and rec.error_samples[0].startswith("MOVED")


def test_cannot_connect_is_fatal(fake):
    fake([])
    eng = run(cluster.Router([("nowhere", 1)]), Phase(set_ops(), 1, iterations=3, recorder=Recorder(False)))
    assert eng.fatal is not None and "cannot connect to nowhere:1" in eng.fatal


def test_lost_connection_is_fatal_and_keeps_what_was_measured(fake):
    node, router = single(fake)

    def kill_later(eng: Engine) -> None:
        eng.loop.call_later(0.05, lambda: [t.close() for w in eng.workers for t in
                                           [c.transport for c in w.conns if c is not None] if t is not None])

    rec = Recorder(open_loop=False)
    eng = run(router, Phase(set_ops(), 1, duration_s=5.0, recorder=rec), connections=2, during=kill_later)
    assert eng.fatal is not None and "lost" in eng.fatal
    assert rec.ops > 0 and rec.elapsed() < 1.0


def test_stall_is_fatal(fake, monkeypatch):
    monkeypatch.setattr(engine_mod, "WATCH_S", 0.02)
    monkeypatch.setattr(engine_mod, "STALL_S", 0.1)
    node, router = single(fake)
    node.silent = True
    eng = run(router, Phase(set_ops(), 1, iterations=10, recorder=Recorder(False)))
    assert eng.fatal is not None and "no reply" in eng.fatal


def test_stop_waits_briefly_then_gives_up(fake, monkeypatch):
    monkeypatch.setattr(engine_mod, "GRACE_S", 0.05)
    node, router = single(fake)

    def stall_then_stop(eng: Engine) -> None:
        def go() -> None:
            node.silent = True
            eng.loop.call_later(0.02, eng.stop)

        eng.loop.call_later(0.05, go)

    rec = Recorder(open_loop=False)
    eng = run(router, Phase(set_ops(), 1, duration_s=5.0, recorder=rec), during=stall_then_stop)
    assert eng.interrupted and eng.fatal is None and rec.ops > 0 and rec.elapsed() < 1.0


@pytest.mark.parametrize(("failure", "said"), [(ConnectionError("timed out after 10 s"), "timed out after 10 s"),
                                               (TimeoutError(), "TimeoutError")])
def test_a_failed_connect_says_why(monkeypatch, failure, said):
    async def failing_open(loop, host, port, conn, timeout=10.0):
        raise failure

    monkeypatch.setattr(engine_mod, "open_connection", failing_open)
    eng = run(cluster.Router([("a", 1)]), Phase(set_ops(), 1, iterations=3, recorder=Recorder(False)))
    assert eng.fatal == f"cannot connect to a:1: {said}"


def test_cluster_discovery_names_a_node_that_never_answers(monkeypatch):
    async def never(*address):
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio, "open_connection", never)
    with pytest.raises(ConnectionError, match=r"a:1: timed out after 0\.01 s; b:2: timed out after 0\.01 s"):
        asyncio.run(cluster.discover([("a", 1), ("b", 2)], timeout=0.01))
