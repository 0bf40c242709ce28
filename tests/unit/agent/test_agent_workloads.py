"""Workloads as data: every op is valid RESP, cluster-safe, seeded, and agent-disjoint."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.agent import cluster, resp
from bench.agent import workloads as W
from bench.wire.catalogue import CATALOGUE
from bench.wire.job import effective_params

REDIS_WORKLOADS = sorted(n for n, w in CATALOGUE.items() if "redis" in w.servers and n != "python")


def make(name: str, params: dict | None = None, agent: int = 0, agents: int = 1, connections: int = 2,
         pipeline: int = 4) -> W.Plan:
    ctx = W.Context(effective_params(name, dict(params or {})), agent, agents, connections, pipeline)
    return W.build(name, ctx)


def commands(op: W.Op) -> list[list[bytes]]:
    out, pos = [], 0
    while pos < len(op[1]):
        cmd, pos = resp.parse(op[1], pos)
        out.append(cmd)
    return out


def keys_of(cmd: list[bytes]) -> list[bytes]:
    verb = cmd[0]
    if verb == b"BITOP":
        return cmd[2:]
    return [cmd[1]]


def column_of(key: bytes, offset: bytes) -> int:
    shard = int(key[key.index(b"{") + 1:key.index(b"}")])
    return shard * W.SHARD_COLUMNS + int(offset)


def test_every_redis_workload_in_the_catalogue_is_implemented():
    assert set(REDIS_WORKLOADS) <= set(W.REGISTRY)


@pytest.mark.parametrize("name", REDIS_WORKLOADS)
def test_ops_are_valid_resp_in_one_slot(name):
    for op in W.draw(make(name), 300):
        cmds = commands(op)
        assert len(cmds) == op[2] >= 1
        slot = cluster.key_slot(op[0])
        for cmd in cmds:
            assert all(isinstance(a, bytes) for a in cmd)
            for key in keys_of(cmd):
                assert cluster.key_slot(key) == slot, (name, cmd)


@pytest.mark.parametrize("name", REDIS_WORKLOADS)
def test_same_job_same_ops_other_agent_other_ops(name):
    a = W.draw(make(name, agents=2), 200)
    assert W.draw(make(name, agents=2), 200) == a
    assert W.draw(make(name, agent=1, agents=2), 200) != a


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_batch_size_does_not_change_the_sequence(batch):
    for name in ("set", "get", "setbit", "bitop"):
        assert W.draw(make(name), 50, batch) == W.draw(make(name), 50, 5)


def test_set_and_get_use_the_agent_key_slice():
    for agent in range(3):
        lo, hi = agent * 10, agent * 10 + 10
        for name in ("set", "get"):
            for op in W.draw(make(name, {"keyspace": 30, "key_prefix": "k:"}, agent, 3), 200):
                assert op[0].startswith(b"k:") and lo <= int(op[0][2:]) < hi


def test_set_value_size_and_seeded_value():
    op = W.draw(make("set", {"value_size": 1000}), 1)[0]
    cmd = commands(op)[0]
    assert cmd[0] == b"SET" and len(cmd[2]) == 1000
    assert cmd[2] == commands(W.draw(make("set", {"value_size": 1000}), 1)[0])[0][2]


def test_get_prefills_each_key_of_its_slice_once():
    plan = make("get", {"keyspace": 100}, agent=1, agents=4)
    assert plan.prefill is not None and plan.prefill_ops == 25
    keys = [commands(op)[0][1] for op in plan.prefill(25)]
    assert sorted(int(k[3:]) for k in keys) == list(range(25, 50))
    assert all(commands(op)[0][0] == b"SET" for op in plan.prefill(3))
    shared = make("get", {"keyspace": 100, "shared_keys": True}, agent=1, agents=4)
    assert shared.prefill_ops == 100
    assert make("get", {"prefill": False}).prefill is None


def test_mixed_read_ratio():
    verbs = Counter(commands(op)[0][0] for op in W.draw(make("mixed", {"read_ratio": 0.7}), 5000))
    assert 0.67 < verbs[b"GET"] / 5000 < 0.73 and verbs[b"SET"] > 0


def test_mixed_keys_do_not_depend_on_the_ratio():
    a = [o[0] for o in W.draw(make("mixed", {"read_ratio": 0.1}), 100)]
    assert a == [o[0] for o in W.draw(make("mixed", {"read_ratio": 0.9}), 100)]


@pytest.mark.parametrize("name", ["setbit", "zipf", "import", "diagonal-setbit"])
def test_bitmap_writers_stay_in_their_column_share(name):
    params = {"rows": 10, "columns": 300_000}
    seen = []
    for agent in range(3):
        lo, hi = agent * 100_000, agent * 100_000 + 100_000
        cols = set()
        for op in W.draw(make(name, params, agent, 3), 2000):
            cmd = commands(op)[0]
            assert cmd[0] == b"SETBIT"
            c = column_of(cmd[1], cmd[2])
            assert lo <= c < hi
            cols.add((cmd[1], c))
        seen.append(cols)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_diagonal_sets_row_c_mod_rows_at_column_c():
    ops = W.draw(make("diagonal-setbit", {"rows": 7, "columns": 100}, 1, 2), 60)
    cols = []
    for op in ops:
        cmd = commands(op)[0]
        c = column_of(cmd[1], cmd[2])
        assert int(cmd[1].split(b":")[2]) == c % 7 and cmd[3] == b"1"
        cols.append(c)
    assert cols[:50] == list(range(50, 100)) and cols[50:] == list(range(50, 60))


def test_zipf_sets_and_clears_by_ratio_with_skewed_rows():
    ops = W.draw(make("zipf", {"ratio": 0.8, "rows": 1000}), 5000)
    bits = Counter(commands(op)[0][3] for op in ops)
    assert 0.77 < bits[b"1"] / 5000 < 0.83
    rows = Counter(int(commands(op)[0][1].split(b":")[2]) for op in ops)
    assert rows.most_common(1)[0][0] == 0


@pytest.mark.parametrize("gaps", ["uniform", "exponential"])
def test_import_walks_each_row_forward_by_gaps(gaps):
    ops = W.draw(make("import", {"rows": 5, "gaps": gaps, "distribution": "sequential"}), 500)
    per_row: dict[bytes, list[int]] = {}
    for op in ops:
        cmd = commands(op)[0]
        per_row.setdefault(cmd[1].split(b":{")[0], []).append(column_of(cmd[1], cmd[2]))
    assert len(per_row) == 5
    gaps_seen = [b - a for cols in per_row.values() for a, b in zip(cols, cols[1:], strict=False)]
    assert all(g >= 1 for g in gaps_seen)
    assert 10 < sum(gaps_seen) / len(gaps_seen) < 22  # mean gap IMPORT_MEAN_GAP


def test_bitop_combines_rows_of_one_shard_then_counts():
    for op in W.draw(make("bitop", {"op": "XOR", "rows_per_query": 3}), 50):
        bitop, count = commands(op)
        assert bitop[:2] == [b"BITOP", b"XOR"] and len(bitop) == 6
        assert count == [b"BITCOUNT", bitop[2]] and b"tmp" in bitop[2]


def test_bitop_scratch_keys_are_bounded():
    dests = {commands(op)[0][2] for op in W.draw(make("bitop", {"columns": 65536}, connections=2, pipeline=3), 500)}
    assert len(dests) <= 6


@pytest.mark.parametrize("depth,fanout", [(1, 1), (2, 2), (3, 3), (8, 8)])
def test_random_query_trees_are_well_formed(depth, fanout):
    for op in W.draw(make("random-query", {"depth": depth, "fanout": fanout}), 40):
        cmds = commands(op)
        assert cmds[-1][0] == b"BITCOUNT" and len(cmds) == op[2]
        written = set()
        for cmd in cmds[:-1]:
            assert cmd[0] == b"BITOP"
            assert (cmd[1] == b"NOT") == (fanout == 1)
            for src in cmd[3:]:
                assert b"tmp" not in src or src in written  # children computed first
            written.add(cmd[2])
        leaves = sum(1 for cmd in cmds[:-1] for src in cmd[3:] if b"tmp" not in src)
        assert leaves <= 64


def _bitop(verb: bytes, sources: list[bytes]) -> bytes:
    """Redis's BITOP on strings: shorter sources are zero-padded; NOT inverts its one source."""
    if verb == b"NOT":
        return bytes(255 - b for b in sources[0])
    width = max(len(s) for s in sources)
    padded = [s.ljust(width, b"\0") for s in sources]
    out = bytearray(padded[0])
    for s in padded[1:]:
        for i, b in enumerate(s):
            out[i] = out[i] & b if verb == b"AND" else out[i] | b if verb == b"OR" else out[i] ^ b
    return bytes(out)


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_bitop_diff_is_a_and_not_the_others_with_redis_62_commands(rows):
    rng = __import__("random").Random(rows)
    for op in W.draw(make("bitop", {"op": "DIFF", "rows_per_query": rows}), 30):
        cmds = commands(op)
        assert cmds[-1][0] == b"BITCOUNT" and len(cmds) == op[2] == (2 if rows == 1 else 3 if rows == 2 else 4)
        assert all(c[0] == b"BITOP" and c[1] in (b"AND", b"OR", b"XOR") for c in cmds[:-1])  # no DIFF in 6.2
        # Rows of random lengths, as real bitmaps are (a string ends at its highest set bit).
        store = {}
        for cmd in cmds[:-1]:
            for key in cmd[3:]:
                if b"tmp" not in key and key not in store:
                    store[key] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        for cmd in cmds[:-1]:
            store[cmd[2]] = _bitop(cmd[1], [store[k] for k in cmd[3:]])
        if rows <= 2:
            a, others = cmds[0][3], cmds[0][4:]
        else:
            a, others = cmds[1][3], cmds[0][3:]
        union = _bitop(b"OR", [store[k] for k in others]) if others else b""
        width = 16  # longer than any row: compare as Redis would read them, zero-padded
        padded = zip(store[a].ljust(width, b"\0"), union.ljust(width, b"\0"), strict=False)
        expected = bytes(x & ~y & 255 for x, y in padded)
        assert store[cmds[-1][1]].ljust(width, b"\0") == expected
        assert len({cluster.key_slot(k) for c in cmds for k in keys_of(c)}) == 1


def test_unimplemented_workload_is_a_key_error():
    with pytest.raises(KeyError):
        W.build("no-such-workload", W.Context({}, 0, 1, 1, 1))


def test_too_few_columns_for_agents():
    with pytest.raises(ValueError):
        make("setbit", {"columns": 2}, agent=2, agents=3)
