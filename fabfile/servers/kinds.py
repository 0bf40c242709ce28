"""Server kinds: which kind serves a spawn (:data:`KINDS`), and starting, checking and stopping
its nodes, the same way for every kind (the interface is :class:`fabfile.servers.base.Kind`).

:func:`start` runs a kind's steps in order (plan, launch, ready, form) and leaves nothing
running when any node fails; :func:`healthy` and :func:`stop` serve later calls. The kinds:

    redis-cluster   one redis-server per host, joined by our agent (bench.agent.redisadmin)
                    (with fewer hosts than a cluster needs and no replicas: standalone, said so)
    redis           a standalone primary on the first host, `--replicaof` replicas on the others
    command         the spawn file's script on every server host, its args expanded per node
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from bench.spawn import spec
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import RemoteError, cmd, run
from fabfile.servers import nodes, redis
from fabfile.servers.base import Echo, Kind
from fabfile.servers.command import Command
from fabfile.servers.nodes import Node

PID_FILE = "server.pid"  # what `fab status` reads
ADDRESS_FILE = "address"

#: Every ``server.kind`` a spawn file may name, and what builds its Kind from the spawn, the
#: path of the server pex on hosts and the directory of the server's own files on each host.
KINDS: dict[str, Callable[[spec.Spawn, str, Mapping[str, str] | None], Kind]] = {
    "redis-cluster": redis.for_spawn,
    "redis": redis.for_spawn,
    "command": lambda spawn, pex_path, bins: Command(spawn.server, pex_path, bins),
}


def kind_for(spawn: spec.Spawn, pex_path: str, bins: Mapping[str, str] | None = None) -> Kind:
    """The Kind that serves ``spawn`` with the server pex at ``pex_path`` on hosts (and the
    server's own files in ``bins[host]``, when it pushes some)."""
    return KINDS[spawn.server.kind](spawn, pex_path, bins)


def start(fleet: Fleet, kind: Kind, hosts: Sequence[str], echo: Echo) -> list[Node]:
    """Start every node of ``kind`` on ``hosts``, wait until each is ready, then form the service.

    Returns the started nodes (with pids). On any failure every node started is stopped
    again before the error (naming the host, what was waited for, and the node's log) rises.
    """
    if kind.note:
        echo(kind.note)
    planned = kind.plan(hosts, fleet.address)

    def start_one(node: Node) -> Node:
        c = fleet[node.host]
        args, env = kind.launch(c, node, planned)
        version = kind.version(c, node)  # also: a binary that cannot run on this host fails here
        pid = nodes.start(c, node, kind.executable(node), args, env, kind.private_files(node))
        # `fab status` reads the node's pid here (redis-server also writes it; any server may not).
        # and the address it serves on (what `fab status` tells a user to connect to).
        run(c, f"echo {int(pid)} > {cmd(node.dir + '/' + PID_FILE)} && echo {cmd(node.address)} > "
               f"{cmd(node.dir + '/' + ADDRESS_FILE)}")
        return dataclasses.replace(node, pid=pid, version=version)

    try:
        started = list(fleet.each(start_one, planned, what="server start").values())
    except FleetError as exc:
        stop_quietly(fleet, exc.results.values(), echo)
        raise
    echo(f"started {len(started)} {kind.program} node(s): "
         + ", ".join(f"{n.host}={n.endpoint} pid {n.pid}" for n in started))
    for version in dict.fromkeys(n.version for n in started if n.version):
        echo(f"  {version} ({sum(1 for n in started if n.version == version)} node(s))")
    try:
        fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: kind.ready(fleet[n.host], n),
                                              kind.ready_what(n), kind.ready_timeout_s),
                   started, what="server start")
        kind.form(fleet, started, echo)
    except BaseException:
        stop_quietly(fleet, started, echo)  # nothing is left running after a failed start
        raise
    return started


def healthy(fleet: Fleet, kind: Kind, running: Sequence[Node], topology: str) -> bool:
    """Whether the recorded nodes are the ones ``kind`` would start, all ours and serving."""
    if topology != kind.topology or not running:
        return False
    try:
        return kind.healthy(fleet, running)
    except (FleetError, RemoteError):
        return False


def stop(fleet: Fleet, running: Iterable[Node]) -> None:
    """Stop every node (TERM, then KILL); every host is tried, failures are collected."""
    fleet.each(lambda n: nodes.stop(fleet[n.host], n), list(running), what="stop servers")


def stop_quietly(fleet: Fleet, started: Iterable[Node], echo: Echo) -> None:
    """Stop what a failed start left running; say, but do not raise, what could not be stopped
    (the original failure matters more)."""
    try:
        stop(fleet, started)
    except FleetError as exc:
        for node, error in exc.failures.items():
            echo(f"warning: could not stop {node.host} pid {node.pid}: {error}")
