"""The interface every server kind implements (:class:`Kind`), and what the kinds share.

Every kind answers the same questions:

* ``plan``: which node runs on which host, in which role;
* ``launch``: the argv and environment of one node (the server pex runs them);
* ``ready``: one probe of one node, polled by :func:`fabfile.servers.nodes.wait_until`;
* ``form``: what joins the ready nodes into one service (the Redis Cluster handshake);
* ``healthy``: whether a running deployment still serves, for the no-op redeploy.

Every node takes load unless its role is "replica": agents get the "host:port" of every
node whose role is "master" (the only other role), which for ``command`` is every node.
The kinds are in :mod:`fabfile.servers.redis` and :mod:`fabfile.servers.command`;
:mod:`fabfile.servers.kinds` picks one for a spawn and runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from bench.spawn import spec
from fabfile.remote.fleet import Fleet
from fabfile.remote.host import Host
from fabfile.servers import nodes
from fabfile.servers.nodes import Node

Echo = Callable[[str], None]
Launch = tuple[list[str], dict[str, str]]

READY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 5

MASTER = "master"
REPLICA = "replica"


class Kind:
    """One kind of server; subclasses say what differs. ``pex_path`` is the server pex on hosts;
    ``bins`` the directory of the server's own pushed files on each host (fabfile.ship.server_build)."""

    topology = ""  # recorded in the deployment: "cluster" | "standalone" | "command"
    program = ""  # how nodes are named in messages: "redis-server", "gunicorn"
    ready_timeout_s = READY_TIMEOUT_S

    def __init__(self, server: spec.Server, pex_path: str, bins: Mapping[str, str] | None = None) -> None:
        self.server = server
        self.pex_path = pex_path
        self.bins = dict(bins or {})
        self.note: str | None = None  # said once when starting (e.g. a fallback to standalone)
        # Set by deploy before start: the deployment's redis password, the agent pex, and where the spawn
        # file's { env = ... } secrets are read from (the controller's environment).
        self.password: str | None = None
        # The agent pex on the hosts (relative to home): the redis kinds' probes run in it.
        self.agent_path = ""
        self.environ: Mapping[str, str] = {}

    def executable(self, node: Node) -> str:
        """What the node starts, relative to the login's home."""
        return self.pex_path

    def version(self, c: Host, node: Node) -> str:
        """What the node's server says it is, recorded with the node ("" when it cannot say)."""
        return ""

    def plan(self, hosts: Sequence[str], address: Callable[[str], str]) -> list[Node]:
        return [Node(h, address(h), self.server.port, i) for i, h in enumerate(hosts)]

    def launch(self, c: Host, node: Node, planned: Sequence[Node]) -> Launch:
        raise NotImplementedError

    def private_files(self, node: Node) -> dict[str, str]:
        """Files (name -> text) the node's directory gets, 0600, before it starts: secrets."""
        return {}

    def ready(self, c: Host, node: Node) -> bool:
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
