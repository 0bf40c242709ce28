"""fabfile.servers: choosing a kind, planning, placeholders, and the `command` kind started for real
on this machine.

Two loopback "hosts" (``local_host``-style connections with their own HOME, bound to 127.0.0.1
and 127.0.0.2) run a stand-in server pex: a shell script that execs ``python3 -m http.server``.
"""

from __future__ import annotations

import os
import socket
import stat
import tomllib
import zipfile
from pathlib import Path

import pytest

from bench.spawn import spec
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import REMOTE_DIR
from fabfile.servers import kinds as servers
from fabfile.servers.command import Command, placeholders
from fabfile.servers.nodes import Node
from fabfile.servers.redis import RedisCluster, RedisStandalone
from fabfile.ship import build
from tests.conftest import LocalHost

PEX = f"{REMOTE_DIR}/bin/fake-server.pex"


def _spawn(server: str, servers_: list[str], extra: str = "") -> spec.Spawn:
    hosts = ", ".join(f'"{h}"' for h in servers_)
    text = f"""
[hosts]
servers = [{hosts}]
agents = ["agent"]
[server]
{server}
{extra}
[[benchmark]]
name = "b"
workload = "python"
iterations = 1
params = {{ target = "m:f" }}
"""
    return spec.parse(tomllib.loads(text))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- choosing and planning --------------------------------------------------------------------


def test_kind_for_each_server_kind():
    assert isinstance(servers.kind_for(_spawn('kind = "redis-cluster"', ["a", "b", "c"]), PEX), RedisCluster)
    standalone = servers.kind_for(_spawn('kind = "redis"\nreplicas = 1', ["a", "b"]), PEX)
    assert isinstance(standalone, RedisStandalone) and standalone.replicas == 1 and standalone.note is None
    command = servers.kind_for(_spawn('kind = "command"\nscript = "gunicorn"', ["a"]), PEX)
    assert isinstance(command, Command) and command.program == "gunicorn" and command.topology == "command"


def test_every_server_kind_of_the_spawn_file_has_a_kind():
    assert set(servers.KINDS) == set(spec.SERVER_KINDS)


def test_a_cluster_on_too_few_hosts_is_standalone_and_says_so():
    kind = servers.kind_for(_spawn('kind = "redis-cluster"', ["a", "b"]), PEX)
    assert isinstance(kind, RedisStandalone) and kind.topology == "standalone"
    assert kind.note is not None and "starting standalone redis on a" in kind.note
    assert [n.host for n in kind.plan(["a", "b"], str.upper)] == ["a"]


def test_plans_roles_and_addresses():
    kind = servers.kind_for(_spawn('kind = "redis"\nreplicas = 2\nport = 6400', ["a", "b", "c"]), PEX)
    planned = kind.plan(["a", "b", "c"], lambda h: f"10.0.0.{ord(h) - 96}")
    assert [(n.host, n.address, n.port, n.index, n.role) for n in planned] == [
        ("a", "10.0.0.1", 6400, 0, "master"), ("b", "10.0.0.2", 6400, 1, "replica"),
        ("c", "10.0.0.3", 6400, 2, "replica")]
    cluster = servers.kind_for(_spawn('kind = "redis-cluster"', list("abcdef"), ""), PEX)
    assert {n.role for n in cluster.plan(list("abcdef"), str)} == {"master"}
    # With replicas the first hosts are masters; the agent's forming makes the rest replicas.
    cluster = servers.kind_for(_spawn('kind = "redis-cluster"\nreplicas = 1', list("abcdef")), PEX)
    assert [n.role for n in cluster.plan(list("abcdef"), str)] == ["master"] * 3 + ["replica"] * 3


def test_placeholders_per_node():
    planned = [Node("a", "10.0.0.1", 80, 0), Node("b", "10.0.0.2", 80, 1), Node("c", "10.0.0.3", 80, 2)]
    values = placeholders(planned[1], planned, "/home/u/.fleetbench/nodes/80", "/home/u/.fleetbench/bin/f")
    assert values == {"host": "10.0.0.2", "port": 80, "index": 1, "peers": "10.0.0.1:80,10.0.0.3:80",
                      "data_dir": "/home/u/.fleetbench/nodes/80", "bin": "/home/u/.fleetbench/bin/f"}
    assert placeholders(planned[0], planned[:1], "d")["peers"] == ""
    assert set(values) == set(spec.PLACEHOLDERS)  # what the spawn file may name, no more, no less


# -- the command kind, for real ---------------------------------------------------------------


class _Host(LocalHost):
    def __init__(self, home: Path, name: str, address: str) -> None:
        super().__init__(home, name)
        self.host = address  # what Fleet.address reads


def _fleet(tmp_path: Path, addresses: list[str]) -> Fleet:
    fleet = Fleet.__new__(Fleet)  # the real Fleet.each and .address over local stand-ins
    fleet.names, fleet.connections, fleet.interpreters, fleet.addresses = [], {}, {}, {}
    fleet.hosts = fleet.connections  # the stand-ins are both: Hosts, with the Connection's address
    for i, address in enumerate(addresses, 1):
        home = tmp_path / f"h{i}"
        (home / REMOTE_DIR / "bin").mkdir(parents=True)
        script = home / PEX
        # A stand-in for the server pex: execs (so its pid is the server's) a Python HTTP server
        # that also reports its argv and environment. argv: BIND PORT [extra...]
        script.write_text('#!/bin/sh\nexec python3 -c "$SERVE" "$@"\n')
        script.chmod(stat.S_IRWXU)
        fleet.names.append(f"h{i}")
        fleet.connections[f"h{i}"] = _Host(home, f"h{i}", address)
    return fleet


SERVE = """
import http.server, json, os, sys
bind, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/status/"):
            self.send_response(int(self.path.rsplit("/", 1)[1])); self.end_headers(); return
        body = json.dumps({"argv": sys.argv[1:], "mode": os.environ.get("MODE"), "cwd": os.getcwd()}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer((bind, port), H).serve_forever()
"""


def _command(port: int, ready: str) -> Command:
    server = spec.Server("command", port, (), 0, "serve", ("{host}", "{port}", "{index}", "{peers}", "{data_dir}"),
                         ready, {"MODE": "bench", "SERVE": SERVE})
    return Command(server, PEX)


def _get(url: str) -> dict:
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=5).read())


@pytest.fixture
def two_hosts(tmp_path):
    fleet = _fleet(tmp_path, ["127.0.0.1", "127.0.0.2"])
    started: list[Node] = []
    yield fleet, started
    servers.stop_quietly(fleet, started, print)


def test_command_nodes_start_expanded_ready_healthy_and_stop(two_hosts):
    fleet, started = two_hosts
    port = _free_port()
    kind = _command(port, "http:/")
    said: list[str] = []
    started += servers.start(fleet, kind, fleet.names, said.append)
    assert [n.host for n in started] == ["h1", "h2"] and all(n.pid > 0 for n in started)
    assert said[-1] == "serve ready on 2 node(s) (ready = 'http:/')"
    for node, other in zip(started, reversed(started), strict=False):
        home = fleet[node.host].home
        answer = _get(f"http://{node.address}:{port}/")
        data_dir = f"{home}/{REMOTE_DIR}/nodes/{port}"
        assert answer == {"argv": [node.address, str(port), str(node.index), f"{other.address}:{port}", data_dir],
                          "mode": "bench", "cwd": data_dir}
        assert (Path(data_dir) / "server.pid").read_text().strip() == str(node.pid)
    assert servers.healthy(fleet, kind, started, "command")
    assert not servers.healthy(fleet, kind, started, "cluster")  # recorded as something else

    servers.stop(fleet, started)
    assert not servers.healthy(fleet, kind, started, "command")
    for node in started:
        assert not os.path.exists(f"/proc/{node.pid}") or open(f"/proc/{node.pid}/stat").read().split()[2] == "Z"


def test_tcp_readiness(two_hosts):
    fleet, started = two_hosts
    kind = _command(_free_port(), "tcp")
    started += servers.start(fleet, kind, fleet.names[:1], lambda _: None)
    assert servers.healthy(fleet, kind, started, "command")


def test_a_path_that_answers_4xx_fails_at_once_and_nothing_is_left_running(two_hosts):
    fleet, started = two_hosts
    port = _free_port()
    kind = _command(port, "http:/status/404")
    with pytest.raises(FleetError) as err:
        servers.start(fleet, kind, fleet.names, lambda _: None)
    message = str(err.value)
    assert "h1: `ready = 'http:/status/404'` failed" in message and "h2:" in message
    assert f"GET http://127.0.0.1:{port}/status/404 answered 404" in message
    for address in ("127.0.0.1", "127.0.0.2"):
        with pytest.raises(OSError):
            socket.create_connection((address, port), 1).close()


def test_a_server_that_exits_is_named_with_its_log(two_hosts):
    fleet, started = two_hosts
    kind = _command(_free_port(), "tcp")
    kind.server = spec.Server("command", 1, (), 0, "serve", ("256.0.0.1", "1"), "tcp", {"SERVE": SERVE})
    with pytest.raises(FleetError) as err:
        servers.start(fleet, kind, fleet.names[:1], lambda _: None)
    message = str(err.value)
    assert "h1: `serve accepting on 127.0.0.1:1` failed" in message
    assert "exited; its log:" in message and "socket.gaierror" in message


def test_probe_answers(local_host):
    node = Node("local", "127.0.0.1", _free_port(), 0)
    kind = _command(node.port, "http:/")
    assert kind.ready(local_host, node) is False  # refused: not yet
    kind = _command(node.port, "tcp")
    assert kind.ready(local_host, node) is False


def test_healthy_is_false_when_nothing_ran(two_hosts):
    fleet, _ = two_hosts
    kind = _command(_free_port(), "tcp")
    assert not servers.healthy(fleet, kind, [], "command")
    gone = [Node("h1", "127.0.0.1", kind.server.port, 0, pid=2**22 + 7)]
    assert not servers.healthy(fleet, kind, gone, "command")


# -- build helpers for `command` servers -------------------------------------------------------


def test_local_requirements_are_paths(tmp_path):
    (tmp_path / "app").mkdir()
    assert build.local_requirement("gunicorn==23.0.0", tmp_path) is None
    assert build.local_requirement("httpbin", tmp_path) is None
    assert build.local_requirement("./app", tmp_path) == (tmp_path / "app").resolve()
    assert build.local_requirement(str(tmp_path / "app"), Path("/")) == (tmp_path / "app").resolve()
    with pytest.raises(build.BuildError, match=r"local project '\./nope' does not exist"):
        build.local_requirement("./nope", tmp_path)
    with pytest.raises(build.BuildError, match="dist/app-1.0-py3-none-any.whl"):
        build.local_requirement("dist/app-1.0-py3-none-any.whl", tmp_path)


def test_a_local_project_digest_follows_its_sources_only(tmp_path):
    app = tmp_path / "app"
    (app / "pkg" / "build").mkdir(parents=True)
    (app / "pkg" / "__init__.py").write_text("x = 1\n")
    (app / "pkg" / "build" / "rules.py").write_text("r = 1\n")  # a package named build: a source
    first = build._tree_digest(app)
    for junk in ("build/lib/pkg/__init__.py", "dist/app.whl", "pkg/__pycache__/x.pyc", "app.egg-info/PKG-INFO",
                 ".git/HEAD"):
        (app / junk).parent.mkdir(parents=True, exist_ok=True)
        (app / junk).write_text("junk")
    assert build._tree_digest(app) == first
    (app / "pkg" / "build" / "rules.py").write_text("r = 2\n")
    assert build._tree_digest(app) != first


def test_runs_module_looks_inside_the_wheels_and_the_stdlib(tmp_path):
    pex = tmp_path / "s.pex"
    with zipfile.ZipFile(pex, "w") as z:
        z.writestr(".deps/app-1-py3-none-any.whl/app/__main__.py", "")
        z.writestr(".deps/app-1-py3-none-any.whl/app/serve.py", "")
        z.writestr(".deps/fast-1-cp311-cp311-linux_x86_64.whl/fast.cpython-311-x86_64-linux-gnu.so", "")
        z.writestr(".deps/lib-1-py3-none-any.whl/lib/__init__.py", "")
    for module in ("app", "app.serve", "fast", "http.server", "json.tool"):
        assert build._runs_module(pex, module), module
    for module in ("lib", "nope", "app.nope"):
        assert not build._runs_module(pex, module), module
