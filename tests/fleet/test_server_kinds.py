"""Server kinds on a real local fleet: a standalone redis with a replica, and `command` servers
(a real web application from PyPI under a real WSGI server; a local project under an ASGI one)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]

REPLICA_SPAWN = """
name = "replica"
[hosts]
servers = ["$h1", "$h2"]
agents = ["$h4"]
[server]
kind = "redis"
port = 7250
replicas = 1
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 2000
pipeline = 4
params = { keyspace = 500 }
"""

WEB_SPAWN = """
name = "web"
[hosts]
servers = ["$h1", "$h3"]
agents = ["$h4", "$h5"]
[server]
kind = "command"
port = 7300
requirements = ["httpbin==0.10.4", "gunicorn==23.0.0"]
script = "gunicorn"
args = ["--bind", "{host}:{port}", "--workers", "2", "--worker-class", "gthread", "--threads", "4",
        "--pid", "{data_dir}/gunicorn.pid",
        "--env", "FB_PEERS={peers}", "httpbin:app"]
ready = "http:$ready"
env = { FB_MODE = "bench" }
[[benchmark]]
name = "get"
workload = "http"
agents = 2
duration = "1s"
connections = 2
params = { paths = ["/get", "/bytes/64"] }
"""

ASGI_SPAWN = """
name = "asgi"
[hosts]
servers = ["$h2", "$h5"]
agents = ["$h6"]
[server]
kind = "command"
port = 7400
requirements = ["./hello-asgi", "uvicorn==0.32.1"]
script = "hello_asgi"
args = ["--host", "{host}", "--port", "{port}", "--index", "{index}", "--peers", "{peers}"]
ready = "tcp"
[[benchmark]]
name = "root"
workload = "http"
iterations = 10
"""


def _state(project) -> dict:
    return json.loads((project.path / ".fleetbench" / "state.json").read_text())


def _pids_of(project, host: str, pattern: str) -> list[str]:
    """Pids whose command line matches the regex ``pattern`` (write "[x]yz": the remote shell
    running pgrep has the pattern itself in its command line, and must not match it)."""
    return project.ssh(host, f"pgrep -f {shlex.quote(pattern)} || true").stdout.split()


def _http_get(project, host: str, url: str) -> dict:
    """GET ``url`` from ``host`` (the way an agent reaches a server) and decode its JSON."""
    script = (f"import json, urllib.request; r = urllib.request.urlopen({url!r}, timeout=10); "
              "print(json.dumps({'status': r.status, 'body': r.read().decode()}))")
    return json.loads(project.ssh(host, f"python3 -c {shlex.quote(script)}").stdout)


def test_redis_primary_with_one_replica(project):
    spawn = project.write_spawn("replica.toml", REPLICA_SPAWN)
    out = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                      "collect", "--spawn", str(spawn)).stdout
    h = project.hosts
    assert "started 2 redis-server node(s)" in out and "redis replication ok: 1 replica(s)" in out
    state = _state(project)
    assert state["topology"] == "standalone"
    assert [(n["host"], n["role"]) for n in state["nodes"]] == [(h[0], "master"), (h[1], "replica")]
    run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "ok"
    assert {b["name"]: b["ops"] for b in run["benchmarks"]} == {"set": 2000}

    # Agents wrote to the primary only; the replica holds the same keys once it has caught up.
    pex = state["artifacts"]["server"]["remote_path"]
    primary, replica = state["nodes"]

    def dbsize(node: dict) -> int:
        # Authenticated as `fab status` says: the password is read from the node's 0600 file.
        cli = (f'REDISCLI_AUTH="$(cat ~/.fleetbench/nodes/{node["port"]}/auth)" '
               f'PEX_ROOT="$HOME/.fleetbench/pex" PEX_SCRIPT=redis-cli "$HOME"/{shlex.quote(pex)} '
               f'-h {node["address"]} -p {node["port"]} dbsize')
        return int(project.ssh(node["host"], cli).stdout.strip())

    written = dbsize(primary)
    assert written > 0
    for _ in range(100):  # replication is asynchronous: poll, bounded, never sleep-and-hope
        if dbsize(replica) == written:
            break
        time.sleep(0.1)
    assert dbsize(replica) == written

    again = project.inv("deploy", "--spawn", str(spawn)).stdout
    assert "nothing to restart" in again and "(standalone, 2 nodes)" in again
    project.inv("down", "--spawn", str(spawn))
    assert not _pids_of(project, h[1], "[-]-port 7250")


def test_command_server_httpbin_under_gunicorn(project):
    spawn = project.write_spawn("web.toml", WEB_SPAWN.replace("$ready", "/get"))
    h = project.hosts
    out = project.inv("deploy", "--spawn", str(spawn)).stdout
    assert "started 2 gunicorn node(s)" in out
    state = _state(project)
    assert state["topology"] == "command"
    nodes = {n["host"]: n for n in state["nodes"]}
    assert list(nodes) == [h[0], h[2]] and all(n["role"] == "master" for n in nodes.values())

    for host, node in nodes.items():
        other = next(n for n in nodes.values() if n is not node)
        data_dir = f".fleetbench/nodes/{node['port']}"
        # {data_dir} is the node's own directory; the pid we recorded is gunicorn's master itself.
        assert project.ssh(host, f"cat {data_dir}/gunicorn.pid").stdout.strip() == str(node["pid"])
        argv = project.ssh(host, f"tr '\\0' ' ' < /proc/{node['pid']}/cmdline").stdout
        assert f"--bind {node['address']}:7300" in argv
        assert f"FB_PEERS={other['address']}:7300" in argv  # {peers}: every other node
        environ = project.ssh(host, f"tr '\\0' '\\n' < /proc/{node['pid']}/environ").stdout.splitlines()
        assert "FB_MODE=bench" in environ
        # `fab status` finds the node's pid.
        assert f"node 7300: pid {node['pid']} running" in project.fab("-H", host, "status").stdout

    # An agent host reaches every node: the real application answers.
    for node in nodes.values():
        got = _http_get(project, h[3], f"http://{node['address']}:7300/get?x=1")
        assert got["status"] == 200 and json.loads(got["body"])["args"] == {"x": "1"}

    again = project.inv("deploy", "--spawn", str(spawn)).stdout
    assert "nothing to restart" in again and "(command, 2 nodes)" in again and "building server" not in again

    # The hosts table sees the whole server: gunicorn's master idles while its workers serve.
    measured = project.inv("bench", "--spawn", str(spawn), "collect", "--spawn", str(spawn)).stdout
    run_id = re.search(r"run (\S+): ok", measured).group(1)
    run = json.loads((project.path / "runs" / run_id / "run.json").read_text())
    for host in (h[0], h[2]):
        (master,) = run["hosts"][host]["metrics"]["procs"]
        assert master["pid"] == nodes[host]["pid"] and master["tree_max"] >= 3, master  # master and 2 workers
        assert master["cpu_pct_max"] > 0, master

    # A readiness path that can never answer fails at once, names the host and the answer, and
    # leaves nothing running.
    broken = project.write_spawn("web-404.toml", WEB_SPAWN.replace("$ready", "/status/404"))
    failed = project.inv("deploy", "--spawn", str(broken), check=False)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "answered 404" in failed.stderr and "/status/404" in failed.stderr
    assert h[0] in failed.stderr or h[2] in failed.stderr
    for host in (h[0], h[2]):
        assert not _pids_of(project, host, "[g]unicorn"), "a failed start left gunicorn running"
    project.inv("down", "--spawn", str(spawn))


def test_http_workload_against_the_command_server(project):
    spawn = project.write_spawn("web.toml", WEB_SPAWN.replace("$ready", "/get"))
    out = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                      "collect", "--spawn", str(spawn)).stdout
    assert "benchmark get" in out
    run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "ok"
    (bench,) = run["benchmarks"]
    assert bench["name"] == "get" and bench["ops"] > 0 and bench["errors"] == 0
    project.inv("down", "--spawn", str(spawn))


def test_command_server_from_a_local_project_as_a_module(project):
    shutil.copytree(REPO / "examples" / "hello-asgi", project.path / "hello-asgi", dirs_exist_ok=True)
    spawn = project.write_spawn("asgi.toml", ASGI_SPAWN)
    h = project.hosts
    out = project.inv("deploy", "--spawn", str(spawn)).stdout
    assert "started 2 hello_asgi node(s)" in out
    assert not (project.path / "hello-asgi" / "build").exists(), "the wheel build wrote into the project"
    nodes = _state(project)["nodes"]
    for node in nodes:
        other = next(n for n in nodes if n is not node)
        got = _http_get(project, h[5], f"http://{node['address']}:7400/")
        assert got["status"] == 200
        assert json.loads(got["body"]) == {"node": str(node["index"]), "peers": f"{other['address']}:7400"}
    project.inv("down", "--spawn", str(spawn))
    assert not _pids_of(project, h[1], "[-]-port 7400")
