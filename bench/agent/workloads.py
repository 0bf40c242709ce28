"""The workloads: each turns its params into a stream of ops, as data.

An op is ``(routing_key, payload, replies)``: the key that decides which cluster node gets
it, the op's commands already RESP-encoded into one bytes object, and how many replies they
produce. Building whole ops as bytes here means the load loop only concatenates and writes,
and a workload never sees a socket, so every workload is unit-testable by drawing ops.

One op is one unit of measurement (one latency sample): a ``bitop`` query is BITOP plus
BITCOUNT, two commands but one op. Every command of an op shares one hash slot, so an op
always goes to a single node.

Bitmap layout (shared by every bitmap workload, so queries read what writers wrote): a row's
columns are split into shards of ``SHARD_COLUMNS`` bits, one key per (row, shard), named
``<prefix><row>:{<shard>}``. The hash tag puts every row of a shard in one slot, so BITOP over
rows works in a cluster, while different shards spread over the nodes (Pilosa's layout).
Rows are shared by all agents; columns are split between agents (``agent_slice``), so
agents write disjoint bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.agent import httpclient, pyload, resp
from bench.agent.client import Dial
from bench.agent.cluster import Address, parse_address
from bench.agent.keys import KeyStream, agent_slice, make_chooser, rng_for
from bench.wire.catalogue import split_url

Op = tuple[bytes, bytes, int]
NextOp = Callable[[], Op]
NextOps = Callable[[int], list[Op]]  # the next n ops: one call per batch, not per op

SHARD_COLUMNS = 1 << 16  # 8 KiB per bitmap key
IMPORT_MEAN_GAP = 16  # mean column gap of the import workload (about 6% of bits set)
MAX_QUERY_LEAVES = 64  # rows read by one random-query, at most


@dataclass(frozen=True)
class Context:
    """What a workload may know about its run besides its params."""

    params: Mapping[str, Any]  # catalogue defaults already filled in
    agent_num: int
    agents: int
    connections: int
    pipeline: int
    targets: tuple[str, ...] = ()  # "host:port" of every server node
    server_kind: str = "redis"
    auth: str | None = None  # the redis servers' password, for workloads that speak to them themselves


@dataclass
class Plan:
    """A workload ready to run: the measured op stream and an optional unrecorded prefill.

    A workload that does not speak RESP to the Redis servers gives ``dial`` (how a worker
    reaches a node) and ``nodes``; its ops' routing keys are then node indices
    (``cluster.DirectRouter``).
    """

    next_ops: NextOps
    prefill: NextOps | None = None
    prefill_ops: int = 0
    describe: str = ""
    dial: Dial | None = None
    nodes: list[Address] = field(default_factory=list)
    min_stall_s: float | None = None  # when a reply may legitimately take longer than engine.STALL_S


def one_by_one(next_op: NextOp) -> NextOps:
    """``NextOps`` for a workload whose ops are costly anyway (queries): no need to inline."""

    def next_ops(n: int) -> list[Op]:
        return [next_op() for _ in range(n)]

    return next_ops


Builder = Callable[[Context], Plan]
REGISTRY: dict[str, Builder] = {}


def workload(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        REGISTRY[name] = builder
        return builder

    return register


def build(name: str, ctx: Context) -> Plan:
    """The plan for workload ``name``; ``KeyError`` if this agent does not implement it."""
    return REGISTRY[name](ctx)


# ---------------------------------------------------------------- key/value workloads


def _key_stream(ctx: Context, stream: str = "keys") -> KeyStream:
    p = ctx.params
    return KeyStream(
        keyspace=p["keyspace"], distribution=p["distribution"], seed=p["seed"],
        agent_num=ctx.agent_num, agents=ctx.agents, shared_keys=p["shared_keys"],
        exponent=p["exponent"], hot_fraction=p["hot_fraction"], hot_ops=p["hot_ops"], stream=stream,
    )


def _value(ctx: Context) -> bytes:
    """The SET value as a RESP bulk string: seeded printable bytes, encoded once."""
    size = ctx.params["value_size"]
    rng = rng_for(ctx.params["seed"], ctx.agent_num, "value")
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    unit = bytes(alphabet[int(rng.random() * len(alphabet))] for _ in range(min(size, 4096)))
    value = (unit * (size // len(unit) + 1))[:size]
    return resp.bulk(value)


def _template(command: bytes, tail: bytes = b"") -> bytes:
    """``command key [tail]`` as a %-template taking (len(key), key): one format per op."""
    n = 2 if not tail else 3
    return (b"*%d\r\n$%d\r\n%s\r\n" % (n, len(command), command)) + b"$%d\r\n%s\r\n" + tail.replace(b"%", b"%%")


def _key_ops(keys: KeyStream, prefix: bytes, template: bytes) -> NextOps:
    """Ops of one command on one key each, drawn from ``keys``.

    The uniform case (the common one, and the one raced against redis-benchmark) inlines
    the draw; it makes exactly the same ``random()`` calls as ``keys.next_index``.
    """
    if keys.uniform is not None:
        start, width, rand = keys.uniform

        def next_ops(n: int) -> list[Op]:
            out = []
            for _ in range(n):
                key = prefix + b"%d" % (start + int(rand() * width))
                out.append((key, template % (len(key), key), 1))
            return out

        return next_ops
    next_index = keys.next_index

    def next_ops_any(n: int) -> list[Op]:
        out = []
        for _ in range(n):
            key = prefix + b"%d" % next_index()
            out.append((key, template % (len(key), key), 1))
        return out

    return next_ops_any


def _prefill(ctx: Context, prefix: bytes) -> tuple[NextOps, int]:
    """SET every key this agent will read, once. With shared keys that is the whole keyspace
    for every agent: agents are not synchronised between prefill and measuring, so filling
    only a share could let one agent read keys another has not written yet."""
    keys = _key_stream(ctx)
    start, stop = keys.start, keys.stop
    template = _template(b"SET", _value(ctx))
    cursor = [start]

    def next_ops(n: int) -> list[Op]:
        out = []
        for _ in range(n):
            i = cursor[0]
            cursor[0] = i + 1 if i + 1 < stop else start
            key = prefix + b"%d" % i
            out.append((key, template % (len(key), key), 1))
        return out

    return next_ops, stop - start


@workload("set")
def _set(ctx: Context) -> Plan:
    keys = _key_stream(ctx)
    next_ops = _key_ops(keys, ctx.params["key_prefix"].encode(), _template(b"SET", _value(ctx)))
    return Plan(next_ops, describe=f"SET keys [{keys.start}, {keys.stop})")


@workload("get")
def _get(ctx: Context) -> Plan:
    prefix = ctx.params["key_prefix"].encode()
    keys = _key_stream(ctx)
    plan = Plan(_key_ops(keys, prefix, _template(b"GET")), describe=f"GET keys [{keys.start}, {keys.stop})")
    if ctx.params["prefill"]:
        plan.prefill, plan.prefill_ops = _prefill(ctx, prefix)
    return plan


@workload("mixed")
def _mixed(ctx: Context) -> Plan:
    prefix = ctx.params["key_prefix"].encode()
    keys = _key_stream(ctx)
    next_index = keys.next_index
    get_t, set_t = _template(b"GET"), _template(b"SET", _value(ctx))
    coin = rng_for(ctx.params["seed"], ctx.agent_num, "mix").random  # apart from keys: see derive_seed
    read_ratio = ctx.params["read_ratio"]

    def next_ops(n: int) -> list[Op]:
        out = []
        for _ in range(n):
            key = prefix + b"%d" % next_index()
            out.append((key, (get_t if coin() < read_ratio else set_t) % (len(key), key), 1))
        return out

    return Plan(next_ops, describe=f"GET/SET {read_ratio:g} reads over keys [{keys.start}, {keys.stop})")


# ---------------------------------------------------------------- bitmap workloads


class Bitmaps:
    """The shared bitmap layout and this agent's column share (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        p = ctx.params
        self.prefix: bytes = p["key_prefix"].encode()
        self.rows: int = p["rows"]
        self.columns: int = p["columns"]
        self.shards = (self.columns + SHARD_COLUMNS - 1) // SHARD_COLUMNS
        self.col_start, self.col_stop = agent_slice(self.columns, ctx.agents, ctx.agent_num)
        if self.col_stop <= self.col_start:
            raise ValueError(f"columns {self.columns} is too small to give each of {ctx.agents} agents its own columns")
        self.agent_num = ctx.agent_num

    def key(self, row: int, shard: int) -> bytes:
        return self.prefix + b"%d:{%d}" % (row, shard)

    def setbit(self, row: int, column: int, bit: int) -> Op:
        shard, offset = divmod(column, SHARD_COLUMNS)
        key = self.prefix + b"%d:{%d}" % (row, shard)
        off = b"%d" % offset
        return key, b"*4\r\n$6\r\nSETBIT\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n%d\r\n" % (
            len(key), key, len(off), off, bit), 1

    def scratch(self, shard: int, name: bytes) -> bytes:
        """A per-agent temporary key in ``shard``'s slot, for BITOP results."""
        return self.prefix + b"tmp:%d:%s:{%d}" % (self.agent_num, name, shard)


def _row_chooser(ctx: Context, bm: Bitmaps, stream: str) -> Callable[[], int]:
    p = ctx.params
    return make_chooser(p["distribution"], bm.rows, rng_for(p["seed"], ctx.agent_num, stream), p["exponent"])


@workload("setbit")
def _setbit(ctx: Context) -> Plan:
    bm = Bitmaps(ctx)
    row = _row_chooser(ctx, bm, "rows")
    rand = rng_for(ctx.params["seed"], ctx.agent_num, "columns").random
    start, width, prefix = bm.col_start, bm.col_stop - bm.col_start, bm.prefix
    template = b"*4\r\n$6\r\nSETBIT\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n1\r\n"

    def next_ops(n: int) -> list[Op]:  # Bitmaps.setbit, inlined: this one is raced
        out = []
        for _ in range(n):
            r = row()
            shard, offset = divmod(start + int(rand() * width), SHARD_COLUMNS)
            key = prefix + b"%d:{%d}" % (r, shard)
            off = b"%d" % offset
            out.append((key, template % (len(key), key, len(off), off), 1))
        return out

    return Plan(next_ops, describe=f"SETBIT {bm.rows} rows x columns [{bm.col_start}, {bm.col_stop})")


@workload("diagonal-setbit")
def _diagonal(ctx: Context) -> Plan:
    """Bit (c mod rows, c) for c walking this agent's columns in order: no randomness, and
    agents never touch the same bit because their column shares are disjoint."""
    bm = Bitmaps(ctx)
    start, stop, rows = bm.col_start, bm.col_stop, bm.rows
    cursor = [start]
    setbit = bm.setbit

    def next_op() -> Op:
        c = cursor[0]
        cursor[0] = c + 1 if c + 1 < stop else start
        return setbit(c % rows, c, 1)

    return Plan(one_by_one(next_op), describe=f"diagonal SETBIT over columns [{start}, {stop})")


@workload("zipf")
def _zipf(ctx: Context) -> Plan:
    bm = Bitmaps(ctx)
    p = ctx.params
    row = _row_chooser(ctx, bm, "rows")
    column = make_chooser("zipf", bm.col_stop - bm.col_start, rng_for(p["seed"], ctx.agent_num, "columns"),
                          p["exponent"])
    coin = rng_for(p["seed"], ctx.agent_num, "ratio").random
    ratio, start = p["ratio"], bm.col_start
    setbit = bm.setbit

    def next_op() -> Op:
        return setbit(row(), start + column(), 1 if coin() < ratio else 0)

    return Plan(one_by_one(next_op), describe=f"zipf SETBIT/clear {ratio:g} sets")


@workload("import")
def _import(ctx: Context) -> Plan:
    """Bulk load: each row keeps a column cursor that advances by a random gap, so every row
    fills in increasing column order like a sorted import; pipelining makes it bulk."""
    bm = Bitmaps(ctx)
    p = ctx.params
    row = _row_chooser(ctx, bm, "rows")
    gap_rng = rng_for(p["seed"], ctx.agent_num, "gaps")
    start, width = bm.col_start, bm.col_stop - bm.col_start
    cursors: dict[int, int] = {}
    if p["gaps"] == "exponential":
        expo = gap_rng.expovariate
        rate = 1.0 / (IMPORT_MEAN_GAP - 1)

        def gap() -> int:
            return 1 + int(expo(rate))
    else:
        rand = gap_rng.random
        span = 2 * IMPORT_MEAN_GAP - 1

        def gap() -> int:
            return 1 + int(rand() * span)

    setbit = bm.setbit

    def next_op() -> Op:
        r = row()
        c = (cursors.get(r, -1) + gap()) % width
        cursors[r] = c
        return setbit(r, start + c, 1)

    return Plan(one_by_one(next_op), describe=f"import, {p['gaps']} gaps of mean {IMPORT_MEAN_GAP}")


def _query_op(bm: Bitmaps, shard: int, commands: list[bytes], count_key: bytes) -> Op:
    commands.append(resp.encode(b"BITCOUNT", count_key))
    return bm.key(0, shard), b"".join(commands), len(commands)


def _difference(dest: bytes, tmp: bytes, rows: list[bytes]) -> list[bytes]:
    """pi's Difference, ``a AND NOT (b OR c ...)``, with the BITOPs Redis 6.2 has (no DIFF).

    It is computed as ``a XOR (a AND (b OR c ...))``: the same bits, but unlike
    ``a AND (NOT b)`` it stays right when ``b`` is a shorter string than ``a`` (BITOP NOT only
    inverts ``b``'s own bytes, and AND pads the rest with zeros, which would clear ``a``'s tail).
    """
    first, rest = rows[0], rows[1:]
    if not rest:
        return [resp.encode(b"BITOP", b"AND", dest, first)]  # a copy of ``a``
    commands = []
    if len(rest) > 1:
        commands.append(resp.encode(b"BITOP", b"OR", tmp, *rest))
        rest = [tmp]
    commands.append(resp.encode(b"BITOP", b"AND", tmp, first, rest[0]))
    commands.append(resp.encode(b"BITOP", b"XOR", dest, first, tmp))
    return commands


@workload("bitop")
def _bitop(ctx: Context) -> Plan:
    """BITOP over ``rows_per_query`` rows of one shard into a scratch key, then BITCOUNT.
    ``DIFF`` is emulated with two or three BITOPs (:func:`_difference`), scratch keys in the
    same slot."""
    bm = Bitmaps(ctx)
    p = ctx.params
    row = _row_chooser(ctx, bm, "rows")
    shard_rand = rng_for(p["seed"], ctx.agent_num, "shards").random
    op, n = p["op"].encode(), p["rows_per_query"]
    slots = max(1, ctx.connections * ctx.pipeline)  # scratch keys in flight at once, at most
    seq = [0]

    def next_op() -> Op:
        shard = int(shard_rand() * bm.shards)
        seq[0] = q = (seq[0] + 1) % slots
        dest = bm.scratch(shard, b"q%d" % q)
        rows = [bm.key(row(), shard) for _ in range(n)]
        if op == b"DIFF":
            return _query_op(bm, shard, _difference(dest, bm.scratch(shard, b"q%dd" % q), rows), dest)
        return _query_op(bm, shard, [resp.encode(b"BITOP", op, dest, *rows)], dest)

    return Plan(one_by_one(next_op), describe=f"BITOP {p['op']} of {n} rows + BITCOUNT")


@workload("random-query")
def _random_query(ctx: Context) -> Plan:
    """A seeded random tree of AND/OR/XOR (NOT for one child) over rows of one shard,
    evaluated bottom-up into scratch keys, then BITCOUNT of the root."""
    bm = Bitmaps(ctx)
    p = ctx.params
    row = _row_chooser(ctx, bm, "rows")
    rng = rng_for(p["seed"], ctx.agent_num, "trees")
    depth, fanout = p["depth"], p["fanout"]
    slots = max(1, ctx.connections * ctx.pipeline)
    seq = [0]
    ops = (b"AND", b"OR", b"XOR")

    def next_op() -> Op:
        shard = int(rng.random() * bm.shards)
        seq[0] = q = (seq[0] + 1) % slots
        commands: list[bytes] = []
        # Leaves per query are capped (8 levels of fanout 8 would be 16M rows): expanding a
        # leaf into ``fanout`` children adds ``fanout - 1`` leaves, reserved before recursing.
        spare = [MAX_QUERY_LEAVES - 1]

        def node(level: int) -> bytes:
            if level == depth or spare[0] < fanout - 1 or (level > 0 and rng.random() < 0.3):
                return bm.key(row(), shard)
            spare[0] -= fanout - 1
            children = [node(level + 1) for _ in range(fanout)]
            dest = bm.scratch(shard, b"q%dn%d" % (q, len(commands)))
            verb = b"NOT" if fanout == 1 else ops[int(rng.random() * len(ops))]
            commands.append(resp.encode(b"BITOP", verb, dest, *children))
            return dest

        root = node(0)
        return _query_op(bm, shard, commands, root)

    return Plan(one_by_one(next_op), describe=f"random query trees, depth {depth}, fanout {fanout}")


# ---------------------------------------------------------------- beyond Redis


@workload("http")
def _http(ctx: Context) -> Plan:
    """One pre-encoded request per (node, path), or per URL, taken round-robin: consecutive
    ops go to different nodes. Agent N starts N places into the cycle."""
    p = ctx.params
    if ctx.pipeline > 1:
        raise ValueError("workload 'http' sends one request at a time per connection (HTTP/1.1, no "
                         "pipelining): pipeline must be 1; raise connections instead")
    method = p["method"]
    nodes: list[Address] = []
    requests: list[tuple[int, bytes]] = []

    def node_of(address: Address) -> int:
        if address not in nodes:
            nodes.append(address)
        return nodes.index(address)

    if p["urls"]:
        for url in p["urls"]:
            host, port, target = split_url(url)
            payload = httpclient.encode_request(method, target, httpclient.host_header(host, port), p["headers"],
                                                p["body"])
            requests.append((node_of((host, port)), payload))
        where = f"{len(p['urls'])} URLs"
    else:
        if ctx.server_kind != "command":
            raise ValueError(f"workload 'http' against a {ctx.server_kind!r} server needs params.urls "
                             f"(it requests the server nodes themselves only for kind 'command')")
        addresses = [parse_address(t) for t in ctx.targets]
        paths = p["paths"]
        for i in range(len(addresses) * len(paths)):
            host, port = addresses[i % len(addresses)]
            payload = httpclient.encode_request(method, paths[(i // len(addresses)) % len(paths)],
                                                httpclient.host_header(host, port), p["headers"], p["body"])
            requests.append((node_of((host, port)), payload))
        where = f"{len(paths)} path(s) on {len(addresses)} node(s)"
    ops: list[Op] = [(b"%d" % node, payload, 1) for node, payload in requests]
    cursor = [ctx.agent_num % len(ops)]
    count = len(ops)

    def next_ops(n: int) -> list[Op]:
        i = cursor[0]
        out = [ops[(i + k) % count] for k in range(n)]
        cursor[0] = (i + n) % count
        return out

    timeout = p["timeout"]
    return Plan(next_ops, describe=f"HTTP {method} round-robin over {where}", nodes=nodes,
                dial=httpclient.dialer(head=method == "HEAD", timeout=timeout),
                min_stall_s=timeout + 5.0 if timeout > 0 else None)


@workload("python")
def _python(ctx: Context) -> Plan:
    """The user's function makes each connection's op (``pyload``); ops are plain calls."""
    p = ctx.params
    function = pyload.load_target(p["target"])  # ValueError (exit 2) before any connection
    base = {"agent_num": ctx.agent_num, "agents": ctx.agents, "connections": ctx.connections,
            "pipeline": ctx.pipeline, "seed": p["seed"], "server_kind": ctx.server_kind,
            "targets": tuple(parse_address(t) for t in ctx.targets), "options": p["options"],
            "password": ctx.auth}
    op: Op = (b"0", b"", 1)

    def next_ops(n: int) -> list[Op]:
        return [op] * n

    return Plan(next_ops, describe=f"python {p['target']}", nodes=[("python", 0)],
                dial=pyload.dialer(p["target"], function, base))


def draw(plan: Plan, count: int, batch: int = 7) -> list[Op]:
    """The next ``count`` measured ops of ``plan``, drawn in batches (for tests)."""
    out: list[Op] = []
    while len(out) < count:
        out.extend(plan.next_ops(min(batch, count - len(out))))
    return out

