"""Hosts that log in as an unprivileged user who cannot sudo, with a home reached through a
symlink (``inv testbed.up --user NAME``): a whole ``inv spawn`` finishes ``ok`` and its
``down`` really stops the servers."""

from __future__ import annotations

import json

import pytest

from .conftest import topology_project

pytestmark = pytest.mark.fleet

USER = "bench"
SPAWN = """
name = "ordinary-login"
[hosts]
servers = ["$h1"]
agents = ["$h2", "$h3"]
[server]
kind = "redis"
port = 7200
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 2000
"""


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory):
    with topology_project(tmp_path_factory, "user", hosts=3, user=USER) as project:
        yield project


def test_the_login_is_unprivileged_with_a_symlinked_home(ordinary):
    out = ordinary.ssh(ordinary.hosts[0], 'id -u; id -un; echo "$HOME"; cd && pwd -P; '
                                          'sudo -n true 2>/dev/null && echo can-sudo || echo no-sudo').stdout.split()
    uid, name, home, real, sudo = out
    assert int(uid) >= 1000 and name == USER and sudo == "no-sudo"
    assert home == f"/home/{USER}" and real == f"/home/data/{USER}"


def test_spawn_as_an_ordinary_user_finishes_ok_and_stops_its_servers(ordinary):
    h = ordinary.hosts
    spawn = ordinary.write_spawn("user.toml", SPAWN)
    ordinary.inv("deploy", "--spawn", str(spawn))
    state = json.loads((ordinary.path / ".fleetbench" / "state.json").read_text())
    [node] = state["nodes"]
    cwd = ordinary.ssh(h[0], f"readlink /proc/{node['pid']}/cwd; stat -c %U /proc/{node['pid']}").stdout.split()
    assert cwd == [f"/home/data/{USER}/.fleetbench/nodes/7200", USER]  # its real path, and not root's
    out = ordinary.inv("spawn", "--spawn", str(spawn)).stdout  # the same deployment, reused
    run = json.loads((ordinary.path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "ok", out
    assert {b["name"]: b["ops"] for b in run["benchmarks"]} == {"set": 2000}
    # inv spawn's down stopped the server (it used to miss it: /proc/PID/cwd never equals a
    # $HOME that goes through a symlink) and removed every file.
    alive = ordinary.ssh(h[0], f"[ -d /proc/{node['pid']} ] && echo alive || echo gone").stdout.strip()
    assert alive == "gone"
    for host in h:
        assert ordinary.ssh(host, "ls -A ~").stdout.strip() == ""
