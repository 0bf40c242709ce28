"""bench.spawn.hosts: ssh destinations, and the [hosts] table given a fake inventory source."""

from __future__ import annotations

from typing import Any

import pytest

from bench.spawn.checks import Problems, Table
from bench.spawn.hosts import Destination, InventoryError, parse_destination, parse_hosts
from bench.spawn.schema import TOP_KEYS, Hosts


@pytest.mark.parametrize("text, parsed", [
    ("tb1", Destination(None, "tb1", None)),
    ("deploy@tb5:2222", Destination("deploy", "tb5", 2222)),
    ("10.0.0.1:22", Destination(None, "10.0.0.1", 22)),
    ("host.example.com", Destination(None, "host.example.com", None)),
    ("root@fe80::1", Destination("root", "fe80::1", None)),
    ("a b", None), ("a;b", None), ("a:0", None), ("a:65536", None), ("@a", None), ("a@", None),
    ("", None), ("a:", None), ("-oProxyCommand=x", None), ("a@b@c", None), ("a/b", None),
])
def test_parse_destination(text: str, parsed: Destination | None) -> None:
    assert parse_destination(text) == parsed


def hosts_of(data: dict[str, Any], fetch: Any) -> tuple[Hosts | None, list[str]]:
    problems = Problems()
    return parse_hosts(Table(data, "", TOP_KEYS, problems), problems, fetch), problems.items


def test_an_inventory_is_fetched_by_its_key_and_value() -> None:
    asked: list[tuple[str, str]] = []

    def fetch(key: str, origin: str) -> str:
        asked.append((key, origin))
        return '{"servers": ["s1"], "agents": ["a1", "a1"]}'

    hosts, problems = hosts_of({"hosts": {"inventory": "fleet.json"}}, fetch)
    assert (hosts, problems) == (Hosts(("s1",), ("a1", "a1")), [])
    assert asked == [("inventory", "fleet.json")]


def test_an_inventory_error_is_the_problem_at_its_key() -> None:
    def fetch(key: str, origin: str) -> str:
        raise InventoryError(f"{origin!r} is not a file")

    hosts, problems = hosts_of({"hosts": {"inventory": "gone.json"}}, fetch)
    assert (hosts, problems) == (None, ["hosts.inventory: 'gone.json' is not a file"])


def test_listed_hosts_fetch_nothing() -> None:
    def fetch(key: str, origin: str) -> str:
        raise AssertionError("fetched")

    hosts, problems = hosts_of({"hosts": {"servers": ["s", "s"], "agents": ["a:0"]}}, fetch)
    assert hosts is None
    assert problems == ["hosts.servers[1]: 's' is listed twice; each server host runs one node",
                        "hosts.agents[0]: port 0 in 'a:0' is not in 1..65535"]
