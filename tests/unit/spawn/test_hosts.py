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


# -- private_addresses: a host's address between hosts, where the one it reports is not it ---------


def _no_inventory(key: str, origin: str) -> str:
    raise AssertionError("no inventory here")


def test_private_addresses_beside_the_lists_are_normalised_addresses() -> None:
    hosts, problems = hosts_of({"hosts": {"servers": ["s1"], "agents": ["ubuntu@a1"],
                                          "private_addresses": {"s1": "10.0.0.5", "ubuntu@a1": "fd00::0:1"}}},
                               _no_inventory)
    assert problems == []
    assert hosts == Hosts(("s1",), ("ubuntu@a1",), {"s1": "10.0.0.5", "ubuntu@a1": "fd00::1"})


def test_private_addresses_in_an_inventory_and_beside_it_merge_the_spawn_files_winning() -> None:
    def fetch(key: str, origin: str) -> str:
        return ('{"servers": ["54.1.2.3"], "agents": ["54.1.2.4"],'
                ' "private_addresses": {"54.1.2.3": "172.31.0.3", "54.1.2.4": "172.31.0.4"}}')

    hosts, problems = hosts_of({"hosts": {"inventory_command": "terraform output -json fleet",
                                          "private_addresses": {"54.1.2.4": "172.31.9.9"}}}, fetch)
    assert problems == []
    assert hosts is not None and hosts.private_addresses == {"54.1.2.3": "172.31.0.3", "54.1.2.4": "172.31.9.9"}


@pytest.mark.parametrize("value, problem", [
    ({"s9": "10.0.0.1"}, "hosts.private_addresses.s9: 's9' is none of the servers or agents"),
    ({"s1": "10.0.0.256"}, "hosts.private_addresses.s1: '10.0.0.256' is not an IP address"),
    ({"s1": "host.internal"}, "hosts.private_addresses.s1: 'host.internal' is not an IP address"),
    ({"s1": 10}, "hosts.private_addresses.s1: expected an IP address, got 10"),
    (["10.0.0.1"], "hosts.private_addresses: expected a table of host = address, got an array"),
])
def test_a_bad_private_address_is_named_by_its_key(value: Any, problem: str) -> None:
    hosts, problems = hosts_of({"hosts": {"servers": ["s1"], "agents": ["a1"], "private_addresses": value}},
                               _no_inventory)
    assert hosts is None and problems == [problem]


def test_a_private_address_beside_an_inventory_names_one_of_its_hosts() -> None:
    hosts, problems = hosts_of({"hosts": {"inventory": "fleet.json", "private_addresses": {"gone": "10.0.0.1"}}},
                               lambda key, origin: '{"servers": ["s1"], "agents": ["a1"]}')
    assert hosts is None
    assert problems == ["hosts.private_addresses.gone: 'gone' is none of the inventory's servers or agents"]
