"""The ``command`` server kind: the spawn file's script on every server host, its args
expanded per node, ready when its port accepts (or a path answers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.spawn import secrets, spec
from fabfile.remote.fleet import Fleet
from fabfile.remote.host import Host
from fabfile.remote.shell import RemoteError, cmd, label, run
from fabfile.servers.base import PROBE_TIMEOUT_S, Echo, Kind, Launch
from fabfile.servers.nodes import Node

#: A user's application may import a lot on first start (and the pex unpacks itself first).
COMMAND_READY_TIMEOUT_S = 120.0

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

    def __init__(self, server: spec.Server, pex_path: str, bins: Mapping[str, str] | None = None) -> None:
        super().__init__(server, pex_path, bins)
        self.program = server.script or "server"

    def executable(self, node: Node) -> str:
        """Without requirements, ``script`` is one of the pushed files; else the pex runs it."""
        if self.bins and not self.server.requirements:
            return f"{self.bins[node.host]}/{self.server.script}"
        return self.pex_path

    def launch(self, c: Host, node: Node, planned: Sequence[Node]) -> Launch:
        home = run(c, 'printf %s "$HOME"').strip()
        bin_dir = self.bins.get(node.host)
        values = placeholders(node, planned, f"{home}/{node.dir}", f"{home}/{bin_dir}" if bin_dir else "")
        # Secrets' values only now, for the node's start (stdin, never a command line).
        env = secrets.resolve(dict(self.server.env), self.environ, "server.env")
        return [arg.format(**values) for arg in self.server.args], env

    def ready(self, c: Host, node: Node) -> bool:
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


def placeholders(node: Node, planned: Sequence[Node], data_dir: str, bin_dir: str = "") -> dict[str, object]:
    """What ``{host}``, ``{port}``, ``{index}``, ``{peers}``, ``{data_dir}`` and ``{bin}`` mean for ``node``.

    ``peers`` is every other node's ``host:port``, comma-separated (empty with one node);
    ``data_dir`` is the node's own directory (its working directory, emptied on every start);
    ``bin`` the directory of the server's pushed files on its host.
    """
    return {
        "host": node.address,
        "port": node.port,
        "index": node.index,
        "peers": ",".join(n.endpoint for n in planned if n.index != node.index),
        "data_dir": data_dir,
        "bin": bin_dir,
    }
