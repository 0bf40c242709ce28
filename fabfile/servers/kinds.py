"""Server kinds: how each kind of server is laid out over its hosts, started, checked and stopped.

Every kind answers the same questions behind one small interface (:class:`Kind`):

* ``plan``: which node runs on which host, in which role;
* ``launch``: the argv and environment of one node (the server pex runs them);
* ``ready``: one probe of one node, polled by :func:`fabfile.servers.nodes.wait_until`;
* ``form``: what joins the ready nodes into one service (the Redis Cluster handshake);
* ``healthy``: whether a running deployment still serves, for the no-op redeploy.

:func:`start` runs them in that order for every kind and leaves nothing running when any node
fails; :func:`healthy` and :func:`stop` serve later calls. The kinds:

    redis-cluster   one redis-server per host, joined by `redis-cli --cluster create`
                    (with fewer hosts than a cluster needs and no replicas: standalone, said so)
    redis           a standalone primary on the first host, `--replicaof` replicas on the others
    command         the spawn file's script on every server host, its args expanded per node

Every node takes load unless its role is "replica": agents get the "host:port" of every
node whose role is "master" (the only other role), which for ``command`` is every node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from fabric import Connection

from bench.spawn import spec
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import RemoteError, cmd, label, run
from fabfile.servers import nodes
from fabfile.servers import redis as redis_server
from fabfile.servers.nodes import Node

Echo = Callable[[str], None]
Launch = tuple[list[str], dict[str, str]]

READY_TIMEOUT_S = 60.0
#: A user's application may import a lot on first start (and the pex unpacks itself first).
COMMAND_READY_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 5
PID_FILE = "server.pid"  # what `fab status` reads

MASTER = "master"
REPLICA = "replica"


class Kind:
    """One kind of server; subclasses say what differs. ``pex_path`` is the server pex on hosts."""

    topology = ""  # recorded in the deployment: "cluster" | "standalone" | "command"
    program = ""  # how nodes are named in messages: "redis-server", "gunicorn"
    ready_timeout_s = READY_TIMEOUT_S

    def __init__(self, server: spec.Server, pex_path: str) -> None:
        self.server = server
        self.pex_path = pex_path
        self.note: str | None = None  # said once when starting (e.g. a fallback to standalone)

    def plan(self, hosts: Sequence[str], address: Callable[[str], str]) -> list[Node]:
        return [Node(h, address(h), self.server.port, i) for i, h in enumerate(hosts)]

    def launch(self, c: Connection, node: Node, planned: Sequence[Node]) -> Launch:
        raise NotImplementedError

    def ready(self, c: Connection, node: Node) -> bool:
        raise NotImplementedError

    def ready_what(self, node: Node) -> str:
        """The readiness condition, as errors name it."""
        raise NotImplementedError

    def form(self, fleet: Fleet, started: Sequence[Node], echo: Echo) -> None:
        """Join the ready nodes into one service, and say so; by default there is nothing to join."""

    def healthy(self, fleet: Fleet, running: Sequence[Node]) -> bool:
        """Every node is still ours and still answers its readiness probe."""
        checked = fleet.each(lambda n: nodes.alive(fleet[n.host], n) and self.ready(fleet[n.host], n), running,
                             what="check servers")
        return all(checked.values())


# -- redis ----------------------------------------------------------------------------------


class _Redis(Kind):
    """redis-server from the server pex; a node is ready when it answers PING."""

    program = "redis-server"

    def ready(self, c: Connection, node: Node) -> bool:
        return redis_server.ping(c, self.pex_path, node)

    def ready_what(self, node: Node) -> str:
        return "redis-server ping"


class RedisStandalone(_Redis):
    """A primary on the first host and ``replicas`` replicas on the next ones."""

    topology = "standalone"

    def __init__(self, server: spec.Server, pex_path: str, replicas: int) -> None:
        super().__init__(server, pex_path)
        self.replicas = replicas

    def plan(self, hosts: Sequence[str], address: Callable[[str], str]) -> list[Node]:
        return [Node(h, address(h), self.server.port, i, role=MASTER if i == 0 else REPLICA)
                for i, h in enumerate(hosts[: 1 + self.replicas])]

    def launch(self, c: Connection, node: Node, planned: Sequence[Node]) -> Launch:
        primary = planned[0] if node.role == REPLICA else None
        return redis_server.server_args(node, cluster=False, replica_of=primary), {}

    def form(self, fleet: Fleet, started: Sequence[Node], echo: Echo) -> None:
        replicas = [n for n in started if n.role == REPLICA]
        if not replicas:
            return
        # A replica answers PING before it has synced: wait for its link to the primary.
        fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: self._linked(fleet[n.host], n),
                                              "master_link_status:up", self.ready_timeout_s),
                   replicas, what="replication")
        echo(f"redis replication ok: {len(replicas)} replica(s) of {started[0].endpoint}")

    def healthy(self, fleet: Fleet, running: Sequence[Node]) -> bool:
        if not super().healthy(fleet, running):
            return False
        replicas = [n for n in running if n.role == REPLICA]
        return all(fleet.each(lambda n: self._linked(fleet[n.host], n), replicas, what="check replication").values())

    def _linked(self, c: Connection, node: Node) -> bool:
        return _info_field(c, self.pex_path, node, "replication", "master_link_status") == "up"


class RedisCluster(_Redis):
    """One master per host (``replicas`` per master among them), joined by redis-cli."""

    topology = "cluster"

    def launch(self, c: Connection, node: Node, planned: Sequence[Node]) -> Launch:
        return redis_server.server_args(node, cluster=True), {}

    def form(self, fleet: Fleet, started: Sequence[Node], echo: Echo) -> None:
        first = started[0]
        redis_server.create_cluster(fleet[first.host], self.pex_path, started, self.server.replicas)
        fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: self._slots_served(fleet[n.host], n),
                                              "cluster_state:ok", self.ready_timeout_s),
                   started, what="cluster")
        echo(f"redis cluster ok: {len(started)} nodes")

    def healthy(self, fleet: Fleet, running: Sequence[Node]) -> bool:
        return super().healthy(fleet, running) and all(
            fleet.each(lambda n: self._slots_served(fleet[n.host], n), running, what="check cluster").values())

    def _slots_served(self, c: Connection, node: Node) -> bool:
        return redis_server.cluster_state(c, self.pex_path, node) == "ok"


def _info_field(c: Connection, pex_path: str, node: Node, section: str, field: str) -> str:
    out = run(c, redis_server.cli_command(pex_path, "-h", node.address, "-p", node.port, "info", section,
                                          timeout_s=PROBE_TIMEOUT_S) + " 2>&1 || true", timeout=15)
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


# -- command ----------------------------------------------------------------------------------

# Runs on the host's own python3 (3.9+, stdlib only): one readiness probe of one node.
# Prints "ready", "wait <why>" or "fail <why>". HTTP: 2xx/3xx is ready, 5xx (an application
# still warming up) and refused connections are waited for, 4xx fails at once (a wrong path
# never becomes ready). Proxies from the login's environment are ignored: the probe is local.
_PROBE = """\
import socket, sys, urllib.error, urllib.request
how, host, port, path, timeout = sys.argv[1:6]
try:
    if how == "tcp":
        socket.create_connection((host, int(port)), float(timeout)).close()
        print("ready")
    else:
        url = "http://%s:%s%s" % ("[%s]" % host if ":" in host else host, port, path)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            status = opener.open(url, timeout=float(timeout)).status
        except urllib.error.HTTPError as e:
            status = e.code
        if status < 400:
            print("ready")
        elif status < 500:
            print("fail GET %s answered %d" % (url, status))
        else:
            print("wait GET %s answered %d" % (url, status))
except OSError as e:
    print("wait %s" % e)
"""


class Command(Kind):
    """The spawn file's ``script`` on every server host, with ``args`` expanded per node."""

    topology = "command"
    ready_timeout_s = COMMAND_READY_TIMEOUT_S

    def __init__(self, server: spec.Server, pex_path: str) -> None:
        super().__init__(server, pex_path)
        self.program = server.script or "server"

    def launch(self, c: Connection, node: Node, planned: Sequence[Node]) -> Launch:
        home = run(c, 'printf %s "$HOME"').strip()
        values = placeholders(node, planned, f"{home}/{node.dir}")
        return [arg.format(**values) for arg in self.server.args], dict(self.server.env)

    def ready(self, c: Connection, node: Node) -> bool:
        how, _, path = self.server.ready.partition(":")
        out = run(c, cmd("python3", "-c", _PROBE, how, node.address, node.port, path or "/", PROBE_TIMEOUT_S),
                  timeout=PROBE_TIMEOUT_S + 10).strip()
        if out.startswith("fail "):
            raise RemoteError(label(c), f"ready = {self.server.ready!r}", out[len("fail "):])
        return out == "ready"

    def form(self, fleet: Fleet, started: Sequence[Node], echo: Echo) -> None:
        echo(f"{self.program} ready on {len(started)} node(s) (ready = {self.server.ready!r})")

    def ready_what(self, node: Node) -> str:
        how, _, path = self.server.ready.partition(":")
        if how == "tcp":
            return f"{self.program} accepting on {node.endpoint}"
        return f"{self.program} answering GET http://{node.endpoint}{path}"


def placeholders(node: Node, planned: Sequence[Node], data_dir: str) -> dict[str, object]:
    """What ``{host}``, ``{port}``, ``{index}``, ``{peers}`` and ``{data_dir}`` mean for ``node``.

    ``peers`` is every other node's ``host:port``, comma-separated (empty with one node);
    ``data_dir`` is the node's own directory (its working directory, emptied on every start).
    """
    return {
        "host": node.address,
        "port": node.port,
        "index": node.index,
        "peers": ",".join(n.endpoint for n in planned if n.index != node.index),
        "data_dir": data_dir,
    }


# -- choosing, starting, checking, stopping ---------------------------------------------------


def kind_for(spawn: spec.Spawn, pex_path: str) -> Kind:
    """The Kind that serves ``spawn`` with the server pex at ``pex_path`` on hosts."""
    server = spawn.server
    hosts = len(spawn.hosts.servers)
    if server.kind == "command":
        return Command(server, pex_path)
    if server.kind == "redis":
        return RedisStandalone(server, pex_path, server.replicas)
    if redis_server.use_cluster(server.kind, hosts, server.replicas):
        return RedisCluster(server, pex_path)
    kind = RedisStandalone(server, pex_path, replicas=0)
    kind.note = (f"note: {hosts} server host(s) is fewer than a Redis Cluster needs "
                 f"({redis_server.CLUSTER_MIN_MASTERS}); starting standalone redis on {spawn.hosts.servers[0]}")
    return kind


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
        pid = nodes.start(c, node, kind.pex_path, args, env)
        # `fab status` reads the node's pid here (redis-server also writes it; any server may not).
        run(c, f"echo {int(pid)} > {cmd(node.dir + '/' + PID_FILE)}")
        return dataclasses.replace(node, pid=pid)

    try:
        started = list(fleet.each(start_one, planned, what="server start").values())
    except FleetError as exc:
        stop_quietly(fleet, exc.results.values(), echo)
        raise
    echo(f"started {len(started)} {kind.program} node(s): "
         + ", ".join(f"{n.host}={n.endpoint} pid {n.pid}" for n in started))
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
