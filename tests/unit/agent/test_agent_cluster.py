"""Cluster slot routing: CRC16 + hash tags, CLUSTER SLOTS parsing, MOVED learning."""

from __future__ import annotations

import pytest

from bench.agent import cluster, resp


def test_key_slot_matches_redis():
    # Values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
    assert cluster.key_slot(b"123456789") == 0x31C3 % 16384
    assert cluster.key_slot(b"foo") == 12182
    assert cluster.key_slot(b"bar") == 5061
    assert cluster.key_slot(b"{user1000}.following") == cluster.key_slot(b"{user1000}.followers")
    assert cluster.key_slot(b"{user1000}.following") == cluster.key_slot(b"user1000")


def test_hash_tag_edge_cases():
    # Empty first tag: the whole key is hashed; only the first {...} counts.
    assert cluster.key_slot(b"foo{}{bar}") == cluster.key_slot(b"foo{}{bar}") != cluster.key_slot(b"bar")
    assert cluster.key_slot(b"foo{{bar}}zap") == cluster.key_slot(b"{bar")
    assert cluster.key_slot(b"foo{bar}{zap}") == cluster.key_slot(b"bar")
    assert cluster.key_slot(b"foo{bar") == cluster.key_slot(b"foo{bar")


def test_parse_address():
    assert cluster.parse_address("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert cluster.parse_address("[::1]:7000") == ("::1", 7000)
    assert cluster.format_address(("::1", 7000)) == "[::1]:7000"
    for bad in ("nohost", ":1", "h:", "h:x"):
        with pytest.raises(ValueError):
            cluster.parse_address(bad)


def test_slots_from_reply_and_router():
    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1"], [b"10.0.0.4", 7000, b"id4"]],
        [5461, 10922, [b"", 7001, b"id2"]],  # a node that does not know its own address
        [10923, 16383, [b"10.0.0.3", 7002, b"id3"]],
    ]
    ranges = cluster.slots_from_reply(reply, "seed-host")
    assert ranges[1] == (5461, 10922, ("seed-host", 7001))
    router = cluster.Router([], ranges)
    assert router.covered == 16384 and not router.single
    assert router.nodes == [("10.0.0.1", 7000), ("seed-host", 7001), ("10.0.0.3", 7002)]
    assert router.route(b"foo") == 2 and router.route(b"bar") == 0  # slots 12182, 5061
    assert router.active_nodes() == [0, 1, 2]


def test_slots_reply_error_is_a_connection_error():
    with pytest.raises(ConnectionError, match="cluster support disabled"):
        cluster.slots_from_reply(resp.ReplyError("ERR This instance has cluster support disabled"), "h")


def test_router_learns_moved_and_keeps_indices():
    router = cluster.Router([], [(0, 16383, ("a", 1))])
    i = router.learn(12182, ("b", 2))
    assert i == 1 and router.route(b"foo") == 1 and router.route(b"bar") == 0
    router.replace([(0, 99, ("b", 2)), (100, 16383, ("c", 3))])
    assert router.nodes == [("a", 1), ("b", 2), ("c", 3)]  # indices survive a refresh
    assert router.route(b"foo") == 2 and router.active_nodes() == [1, 2]


def test_uncovered_slots_are_counted_and_go_to_node_zero():
    router = cluster.Router([], [(0, 99, ("a", 1))])
    assert router.covered == 100 and router.route(b"foo") == 0


def test_single_node_router_never_hashes():
    router = cluster.Router([("h", 1)])
    assert router.single and router.route(b"anything") == 0 and router.active_nodes() == [0]
