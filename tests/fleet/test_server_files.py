"""Servers from their own files on a real local fleet: a Go HTTP server built with `go build`,
Debian's redis-server 7 as the cluster binary with config lines, and builds that fail.

Needs Debian's golang-go and redis-server (`make test` installs them as root). Go builds run
offline: the example uses the standard library only, and its caches live in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
GO = Path("/usr/bin/go")
DEBIAN_REDIS = Path("/usr/bin/redis-server")
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

GO_SPAWN = """
name = "hello-go"
[hosts]
servers = ["not-a-host-1", "not-a-host-2"]   # replaced by --servers/--agents
agents = ["not-a-host-3"]
[server]
kind = "command"
port = 7600
build = { command = "go build -trimpath -buildvcs=false -o {out}/hello .", dir = "hello-go" }
files = ["hello-go/conf/hello.conf"]
script = "hello"
args = ["-addr", "{host}:{port}", "-index", "{index}", "-config", "{bin}/hello.conf"]
ready = "http:/"
[[benchmark]]
name = "get"
workload = "http"
agents = 2
duration = "1s"
connections = 2
params = { paths = ["/", "/bytes/64"] }
"""

REDIS7_SPAWN = """
name = "redis7"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4"]
[server]
kind = "redis-cluster"
port = 7650
files = ["/usr/bin/redis-server"]
config = { io-threads = 2, maxmemory-policy = "allkeys-lru", appendonly = "yes" }
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 2000
pipeline = 4
params = { keyspace = 500 }
"""


@pytest.fixture
def go_env(monkeypatch, tmp_path):
    """Go's caches in the test's own directory, no toolchain or module downloads."""
    if not GO.exists():
        pytest.fail("Debian's golang-go is missing (/usr/bin/go): run `make system-deps` as root")
    monkeypatch.setenv("GOCACHE", str(tmp_path / "gocache"))
    monkeypatch.setenv("GOPATH", str(tmp_path / "gopath"))
    monkeypatch.setenv("GOTOOLCHAIN", "local")
    monkeypatch.setenv("GOFLAGS", "")
    monkeypatch.setenv("GOPROXY", "off")


def _state(project) -> dict:
    return json.loads((project.path / ".fleetbench" / "state.json").read_text())


def _run(project) -> dict:
    return json.loads((project.path / "runs" / "latest" / "run.json").read_text())


def _hello_project(project, *, broken: bool = False) -> Path:
    target = project.path / "hello-go"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(REPO / "examples" / "hello-go", target)
    if broken:
        with (target / "main.go").open("a") as f:
            f.write("\nfunc broken() { notDefinedAnywhere() }\n")
    return project.write_spawn("hello-go.toml", GO_SPAWN)


def test_go_server_is_built_pushed_benchmarked_and_an_unchanged_build_pushes_nothing(project, go_env):
    project.reset()
    h = project.hosts
    spawn = str(_hello_project(project))
    hosts = ["--servers", f"{h[0]},{h[1]}", "--agents", h[2]]
    try:
        first = project.inv("deploy", "--spawn", spawn, *hosts, "bench", "--spawn", spawn, *hosts,
                            "collect", "--spawn", spawn)
        assert "building server files for linux-" in first.stdout
        assert "started 2 hello node(s)" in first.stdout
        run = _run(project)
        assert run["status"] == "ok" and run["spawn"]["hosts"] == {"servers": h[:2], "agents": [h[2]]}
        (bench,) = run["benchmarks"]
        assert bench["ops"] > 0 and bench["errors"] == 0
        state = _state(project)
        for node in state["nodes"]:
            # the pushed Go binary itself is the pid we recorded, in {bin}, and it read the pushed config
            exe = project.ssh(node["host"], f"readlink /proc/{node['pid']}/exe").stdout.strip()
            assert exe == f"/root/{state['server_files'][node['host']]}/hello"
            page = project.ssh(h[2], f"python3 -c 'import urllib.request as u; print(u.urlopen("
                                     f"\"http://{node['address']}:{node['port']}/\").read().decode())'").stdout
            assert page.strip() == f"hello, fleet from node {node['index']}"
        assert "server" not in state["artifacts"]  # no server pex: nothing of Python runs the server

        again = project.inv("deploy", "--spawn", spawn, *hosts)
        assert "pushed 0 file(s)" in again.stdout, again.stdout
        assert "servers already running (command, 2 nodes): nothing to restart" in again.stdout
        assert _state(project)["server_files"] == state["server_files"]
    finally:
        project.inv("down", "--spawn", spawn, check=False)


def test_a_failing_build_names_its_command_and_output_and_pushes_nothing(project, go_env):
    project.reset()
    h = project.hosts
    spawn = str(_hello_project(project, broken=True))
    failed = project.inv("deploy", "--spawn", spawn, "--servers", f"{h[0]},{h[1]}", "--agents", h[2], check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode == 1, said
    assert ("deploy failed: server.build.command 'go build -trimpath -buildvcs=false -o {out}/hello .' "
            "failed for linux-x86_64 (exit ") in said
    assert "undefined: notDefinedAnywhere" in said and "nothing was pushed" in said
    assert "Traceback" not in said
    for host in h[:3]:  # a failed first deploy leaves nothing of ours, not even ~/.fleetbench
        assert project.ssh(host, "ls -A ~/.fleetbench 2>&1 || true").stdout.strip().endswith(
            "No such file or directory"), host
    assert not (project.path / ".fleetbench" / "state.json").exists()


def test_redis7_cluster_from_debians_binary_with_config_on_every_node(project):
    if not DEBIAN_REDIS.exists():
        pytest.fail("Debian's redis-server is missing (/usr/bin/redis-server): run `make system-deps` as root")
    project.reset()
    spawn = str(project.write_spawn("redis7.toml", REDIS7_SPAWN))
    try:
        out = project.inv("deploy", "--spawn", spawn, "bench", "--spawn", spawn, "collect", "--spawn", spawn)
        assert "redis cluster ok: 3 nodes" in out.stdout
        state = _state(project)
        assert len(state["nodes"]) == 3
        assert "server" not in state["artifacts"]  # no server pex: our agent probes and forms the cluster
        for node in state["nodes"]:
            assert node["version"].startswith("Redis server v=7.0."), node
            where = ["-h", node["address"], "-p", str(node["port"])]

            def cli(*args: str, where: list[str] = where) -> str:
                # The deployment's password, from the environment as redis-cli reads it (never -a).
                return subprocess.run([REDIS_CLI, *where, *args], capture_output=True, text=True, timeout=30,
                                      check=True, env={**os.environ, "REDISCLI_AUTH": state["redis_password"]}).stdout

            assert cli("config", "get", "io-threads").split() == ["io-threads", "2"]
            assert cli("config", "get", "maxmemory-policy").split() == ["maxmemory-policy", "allkeys-lru"]
            assert cli("config", "get", "appendonly").split() == ["appendonly", "yes"]
            assert "redis_version:7.0." in cli("info", "server")
            exe = project.ssh(node["host"], f"readlink /proc/{node['pid']}/exe").stdout.strip()
            assert exe == f"/root/{state['server_files'][node['host']]}/redis-server"
        run = _run(project)
        assert run["status"] == "ok" and run["benchmarks"][0]["errors"] == 0
        assert {n["version"] for n in run["deployment"]["nodes"]} == {state["nodes"][0]["version"]}
        detail = project.inv("report", "--detail").stdout
        assert "server nodes:" in detail and detail.count("Redis server v=7.0.") == 3
    finally:
        project.inv("down", "--spawn", spawn, check=False)
