"""The pure parts of the agent's redis administration: the slot split, the roles, reply text,
and what its errors may say (never an argument: AUTH's is the password)."""

from __future__ import annotations

import itertools

import pytest

from bench.agent import redisadmin, resp
from bench.agent.redisadmin import SLOTS, cluster_roles, format_reply, slot_ranges


def test_slots_split_as_redis_cli_splits_them():
    assert slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert slot_ranges(1) == [(0, SLOTS - 1)]
    assert slot_ranges(4) == [(0, 4095), (4096, 8191), (8192, 12287), (12288, 16383)]


@pytest.mark.parametrize("masters", [1, 2, 3, 5, 7, 10, 64, 1000])
def test_every_slot_is_served_once(masters):
    ranges = slot_ranges(masters)
    assert len(ranges) == masters
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
    assert all(first <= last for first, last in ranges)
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))  # contiguous, no overlap


def test_slot_split_needs_a_master():
    with pytest.raises(ValueError):
        slot_ranges(0)


def test_roles_masters_first_then_replicas_in_turn():
    assert cluster_roles(3, 0) == (3, [])
    assert cluster_roles(6, 1) == (3, [0, 1, 2])
    assert cluster_roles(9, 2) == (3, [0, 1, 2, 0, 1, 2])
    assert cluster_roles(7, 1) == (3, [0, 1, 2, 0])  # an odd node out replicates the first master
    with pytest.raises(ValueError, match="1 node"):
        cluster_roles(1, 1)


def test_replies_print_as_redis_cli_prints_them_to_a_pipe():
    assert format_reply(b"PONG") == "PONG"
    assert format_reply(7) == "7"
    assert format_reply(None) == ""
    assert format_reply([b"a", [b"b", 1]]) == "a\nb\n1"
    assert format_reply(resp.ReplyError("NOAUTH Authentication required.")) == "(error) NOAUTH Authentication required."


def test_info_fields():
    text = "# Server\r\nredis_version:6.2.14\r\nredis_mode:cluster\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n"
    assert redisadmin.fields(text) == {"redis_version": "6.2.14", "redis_mode": "cluster", "cluster_enabled": "1"}


def test_errors_name_the_command_never_its_arguments():
    assert redisadmin._command_name(["AUTH", "secret"]) == "AUTH"
    assert redisadmin._command_name([b"cluster", b"addslots", 1, 2]) == "CLUSTER ADDSLOTS"
    assert redisadmin._command_name(["INFO", "server"]) == "INFO"


def test_password_from_its_file_or_none(tmp_path):
    path = tmp_path / "auth"
    assert redisadmin.read_password(str(path)) is None  # no file: a server without a password
    assert redisadmin.read_password(None) is None
    path.write_text("abc123\n")
    assert redisadmin.read_password(str(path)) == "abc123"


def test_a_node_that_cannot_be_reached_is_named(capsys):
    assert redisadmin.main(["call", "127.0.0.1", "1", "PING", "--timeout", "1"]) == redisadmin.EXIT_FAILED
    assert capsys.readouterr().out.startswith("(fail) 127.0.0.1:1: cannot connect")
    assert redisadmin.main(["create", "no-port"]) == redisadmin.EXIT_USAGE
    assert "(fail) target 'no-port' is not host:port" in capsys.readouterr().out
