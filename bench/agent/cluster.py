"""Which server node gets each key: Redis Cluster slots, or one plain node.

A Redis Cluster splits keys into 16384 slots by CRC16 (XMODEM) of the key, or of its first
non-empty ``{hash tag}`` so related keys can share a slot. ``binascii.crc_hqx(key, 0)`` is
exactly that CRC in C, which matters because the router runs once per op.
"""

from __future__ import annotations

import asyncio
from binascii import crc_hqx
from collections.abc import Sequence
from typing import Any

from bench.agent import resp
from bench.agent.client import connect_within, describe
from bench.wire.job import Address, split_target

SLOTS = 16384
#: A target's ``host:port`` is part of the job's format, so it is parsed where the job is.
parse_address = split_target


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def key_slot(key: bytes) -> int:
    """The cluster slot of ``key``, honouring the first non-empty ``{...}`` hash tag."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc_hqx(key, 0) & (SLOTS - 1)


def slots_from_reply(reply: Any, fallback_host: str) -> list[tuple[int, int, Address]]:
    """``CLUSTER SLOTS`` as ``[(first, last, primary address)]``.

    A node that does not know its own IP reports an empty host; it is the node we asked.
    """
    if isinstance(reply, resp.ReplyError):
        raise ConnectionError(f"CLUSTER SLOTS failed: {reply}")
    ranges = []
    for entry in reply:
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0].decode() if primary[0] else fallback_host
        ranges.append((first, last, (host, int(primary[1]))))
    return ranges


class Router:
    """Maps keys to node indices; node indices are stable for the life of the run.

    ``single`` (a plain redis server) skips hashing entirely. For a cluster, ``learn`` applies
    a MOVED redirect at once (no I/O on the hot path) and ``replace`` installs a full slot map
    fetched in the background.
    """

    def __init__(self, nodes: Sequence[Address], slot_ranges: list[tuple[int, int, Address]] | None = None):
        self.nodes: list[Address] = list(nodes)
        self._index: dict[Address, int] = {a: i for i, a in enumerate(self.nodes)}
        self.single = slot_ranges is None
        self.slots: list[int] = [0] * SLOTS
        self.covered = SLOTS
        if slot_ranges is not None:
            self.replace(slot_ranges)

    def node_index(self, address: Address) -> int:
        i = self._index.get(address)
        if i is None:
            i = self._index[address] = len(self.nodes)
            self.nodes.append(address)
        return i

    def replace(self, slot_ranges: list[tuple[int, int, Address]]) -> None:
        slots = [-1] * SLOTS
        for first, last, address in slot_ranges:
            i = self.node_index(address)
            for s in range(first, last + 1):
                slots[s] = i
        self.covered = sum(1 for s in slots if s >= 0)
        # An uncovered slot goes to node 0, whose error reply (CLUSTERDOWN/MOVED) is counted.
        self.slots = [s if s >= 0 else 0 for s in slots]

    def learn(self, slot: int, address: Address) -> int:
        i = self.node_index(address)
        self.slots[slot] = i
        return i

    def route(self, key: bytes) -> int:
        if self.single:
            return 0
        return self.slots[key_slot(key)]

    def active_nodes(self) -> list[int]:
        """Indices of the nodes that own at least one slot (all nodes for a single server)."""
        if self.single:
            return list(range(len(self.nodes)))
        return sorted(set(self.slots))


class DirectRouter(Router):
    """For ops that name their node instead of hashing a key (HTTP, in-process calls): the
    routing key is the node's index in ASCII digits, ``b"0"``, ``b"1"``, ..."""

    def __init__(self, nodes: Sequence[Address]) -> None:
        super().__init__(nodes)
        self.single = len(self.nodes) == 1
        self._by_key = {b"%d" % i: i for i in range(len(self.nodes))}

    def route(self, key: bytes) -> int:
        return self._by_key[key]

    def active_nodes(self) -> list[int]:
        return list(range(len(self.nodes)))


async def request(address: Address, *args: resp.Arg, timeout: float = 5.0, auth: str | None = None) -> Any:
    """One control command on a fresh connection (not the hot path), after AUTH with ``auth``."""
    reader, writer = await connect_within(asyncio.open_connection(*address), timeout)
    try:
        writer.write((resp.encode("AUTH", auth) if auth is not None else b"") + resp.encode(*args))
        buf = b""
        replies: list[Any] = []
        while True:
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
            except asyncio.TimeoutError:
                raise ConnectionError(f"no reply within {timeout:g} s") from None
            if not data:
                raise ConnectionError(f"{format_address(address)} closed the connection")
            buf += data
            pos = 0
            try:
                while len(replies) < (2 if auth is not None else 1):
                    value, pos = resp.parse(buf, pos)
                    replies.append(value)
            except resp.Incomplete:
                replies.clear()
                continue
            if auth is not None and isinstance(replies[0], resp.ReplyError):
                raise ConnectionError(f"{format_address(address)} refused AUTH: {replies[0]}")
            return replies[-1]
    finally:
        writer.close()


async def discover(targets: Sequence[Address], timeout: float = 5.0,
                   auth: str | None = None) -> list[tuple[int, int, Address]]:
    """The slot map from the first target that answers CLUSTER SLOTS."""
    problems = []
    for address in targets:
        try:
            reply = await request(address, "CLUSTER", "SLOTS", timeout=timeout, auth=auth)
            return slots_from_reply(reply, address[0])
        except (OSError, asyncio.TimeoutError, resp.ProtocolError) as exc:
            problems.append(f"{format_address(address)}: {describe(exc)}")
    raise ConnectionError("no cluster node answered CLUSTER SLOTS (" + "; ".join(problems) + ")")
