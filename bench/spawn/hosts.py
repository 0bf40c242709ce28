"""The ``[hosts]`` table: ssh destinations, listed in the spawn file or in an inventory.

An inventory (``hosts.inventory``, a JSON file, or ``hosts.inventory_command``, a command
printing the JSON) is fetched by a :data:`Fetch` the caller gives (:mod:`bench.spawn.inventory`
does the reading and running), so this module only checks text. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.spawn.checks import BAD, MISSING, Problems, Table, describe, key_text
from bench.spawn.schema import HOSTS_KEYS, INVENTORY_KEYS, Hosts

_USER = r"[A-Za-z_][A-Za-z0-9._-]*"
_HOST = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_DESTINATION = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?\Z")
_IPV6 = re.compile(r"(?:(?P<user>" + _USER + r")@)?(?P<host>[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*)\Z")

#: ``fetch(key, value)``: the JSON text of the inventory source ``hosts.<key> = value`` (key
#: "inventory" or "inventory_command"); raises :class:`InventoryError` saying why it has none.
Fetch = Callable[[str, str], str]


class InventoryError(Exception):
    """An inventory source gave no text; the message is the problem, reported at its key."""


@dataclass(frozen=True)
class Destination:
    """An ssh destination split the way Fabric splits it (user and port None when absent)."""

    user: str | None
    host: str
    port: int | None


def parse_destination(text: str) -> Destination | None:
    """Split ``alias``, ``host``, ``user@host`` or ``user@host:port``; None when invalid.

    An IPv6 literal is accepted without a port (as Fabric reads it: more than one colon means
    no port). Ports must be 1..65535.
    """
    match = _DESTINATION.match(text)
    if match:
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            return None
        return Destination(match.group("user"), match.group("host"), int(port) if port else None)
    match = _IPV6.match(text)
    if match:
        return Destination(match.group("user"), match.group("host"), None)
    return None


def parse_hosts(top: Table, problems: Problems, fetch: Fetch) -> Hosts | None:
    """The ``[hosts]`` table of ``top``: its lists, or those of the inventory it names."""
    table = top.table("hosts", HOSTS_KEYS, required=True,
                      hint="give servers and agents, inventory, or inventory_command")
    if table is None:
        return None
    sources = [k for k in ("inventory", "inventory_command") if table.has(k)]
    listed = [k for k in ("servers", "agents") if table.has(k)]
    if len(sources) > 1:
        table.problem("inventory_command", "give either inventory or inventory_command, not both")
        return None
    if sources and listed:
        table.problem(listed[0], f"give either servers/agents or {sources[0]}, not both")
        return None
    if not sources:
        return _host_lists(table)
    own = _private_addresses(table, [])  # beside an inventory: checked against its lists below

    key = sources[0]
    origin = table.text(key)
    if origin is BAD:
        return None
    try:
        text = fetch(key, origin)
    except InventoryError as e:
        table.problem(key, str(e))
        return None
    data = _inventory_json(table, key, origin, text)
    if data is None:
        return None
    hosts = _host_lists(Table(data, table.at(key), INVENTORY_KEYS, problems))
    if hosts is None or own is None:
        return None
    listed_hosts = {*hosts.servers, *hosts.agents}
    for name in own:
        if name not in listed_hosts:
            table.problems.add(f"{table.at('private_addresses')}.{key_text(name)}",
                               f"{name!r} is none of the inventory's servers or agents")
            return None
    return Hosts(hosts.servers, hosts.agents, {**hosts.private_addresses, **own})


def _inventory_json(table: Table, key: str, origin: str, text: str) -> Mapping[str, object] | None:
    where = "output" if key == "inventory_command" else repr(origin)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        table.problem(key, f"{where} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}")
        return None
    except (ValueError, RecursionError) as e:
        table.problem(key, f"{where} is not usable JSON: {e}")
        return None
    if not isinstance(data, Mapping):
        table.problem(key, f'expected a JSON object {{"servers": [...], "agents": [...]}}, got {describe(data)}')
        return None
    return data


def _host_lists(table: Table) -> Hosts | None:
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("servers", "agents"):
        value = table.raw(key)
        if value is MISSING:
            table.missing(key, "missing; list at least one ssh destination")
            continue
        if not isinstance(value, (list, tuple)):
            table.problem(key, f"expected an array of ssh destinations, got {describe(value)}")
            continue
        if not value:
            table.problem(key, "must list at least one ssh destination")
            continue
        if _destinations_ok(table, key, value):
            lists[key] = tuple(value)
    if len(lists) != 2:
        return None
    private = _private_addresses(table, [*lists["servers"], *lists["agents"]])
    if private is None:
        return None
    return Hosts(lists["servers"], lists["agents"], private)


def _private_addresses(table: Table, hosts: list[str]) -> dict[str, str] | None:
    """``private_addresses``: ``{host: IP address}`` for hosts whose private address is not the
    one they report (multi-homed hosts); each host one of ``hosts`` (when given)."""
    value = table.raw("private_addresses")
    if value is MISSING:
        return {}
    if not isinstance(value, Mapping):
        table.problem("private_addresses", f"expected a table of host = address, got {describe(value)}")
        return None
    out: dict[str, str] = {}
    for name, address in value.items():
        where = f"{table.at('private_addresses')}.{key_text(name)}"
        if hosts and name not in hosts:
            table.problems.add(where, f"{name!r} is none of the servers or agents")
        elif not isinstance(address, str):
            table.problems.add(where, f"expected an IP address, got {describe(address)}")
        else:
            try:
                out[name] = str(ipaddress.ip_address(address))
            except ValueError:
                table.problems.add(where, f"{address!r} is not an IP address")
    return out if len(out) == len(value) else None


def _destinations_ok(table: Table, key: str, value: list[object] | tuple[object, ...]) -> bool:
    """Report every entry of ``hosts.<key>`` that is not a destination, or a server listed twice."""
    ok = True
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{table.at(key)}[{i}]"
        if not isinstance(item, str):
            table.problems.add(where, f"expected a string, got {describe(item)}")
            ok = False
        elif parse_destination(item) is None:
            table.problems.add(where, _destination_problem(item))
            ok = False
        elif key == "servers" and item in seen:
            table.problems.add(where, f"{item!r} is listed twice; each server host runs one node")
            ok = False
        else:
            seen.add(item)
    return ok


def _destination_problem(text: str) -> str:
    match = _DESTINATION.match(text)
    if match and match.group("port") is not None:
        return f"port {int(match.group('port'))} in {text!r} is not in 1..65535"
    return f"{describe(text)} is not an ssh destination (alias, host, user@host or user@host:port)"
