"""Teardown is never blocked by one bad host (issue 20): `inv down` cleans every host it can
reach, names the one it could not and why, and nothing of a server outlives it outside
~/.fleetbench (a server's HOME is inside its node directory).

Each test names the README failure row it proves. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fleet.test_faults import NO_PYTHON, deployed, in_host_mounts, our_processes, spawn_file
from tests.fleet.test_server_kinds import WEB_SPAWN

pytestmark = pytest.mark.fleet


def has_fleetbench_dir(project, host: str) -> bool:
    return project.ssh(host, "[ -e ~/.fleetbench ] && echo yes || echo no").stdout.strip() == "yes"


# -- README: "`inv down` with a host that has no python3 or cannot be reached" ----------------------

def test_down_cleans_every_host_it_can_reach_and_names_the_one_it_could_not(project):
    h = project.hosts
    spawn = spawn_file(project, "down.toml", "60s")  # redis on h1, agents on h4 and h5
    deployed(project, spawn)
    project.inv("bench", "--spawn", spawn, "--detach")  # a run living on every host, to be stopped too
    state = project.path / ".fleetbench" / "state.json"
    link = f"fbv-{h[4]}"  # h5's veth in the root namespace: its only way to anywhere
    in_host_mounts(project, h[3], NO_PYTHON)  # h4: no python3 at all (a shell is all down needs)
    subprocess.run(["ip", "link", "set", link, "down"], check=True)  # h5: unreachable
    try:
        proc = project.inv("down", "--spawn", spawn, check=False, timeout=180)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        in_host_mounts(project, h[3], "umount -l /usr/bin && umount -l /mnt")
    assert proc.returncode == 1, proc.stdout
    err = proc.stderr
    assert "Traceback" not in err
    assert "down could not clean every host" in err and f"cleaned: {h[0]}, {h[3]}" in err, err
    assert f"{h[4]}: cannot reach" in err, err  # the host it could not clean, and why
    assert "1 host(s) failed" in err, err
    assert "stopped " in proc.stdout and " process(es) on 2 host(s)" in proc.stdout, proc.stdout
    for host in (h[0], h[3]):  # the good host and the one without python were cleaned
        assert our_processes(project, host) == [], host
        assert not has_fleetbench_dir(project, host), host
    assert state.exists()  # kept: the next `inv down` retries the host it could not clean
    assert our_processes(project, h[4])  # untouched: its run still goes on

    # h5 is back: down again, its hosts named on the command line like any other task's.
    again = project.inv("down", "--spawn", spawn, "--servers", h[0], "--agents", f"{h[3]},{h[4]}")
    assert "on 3 host(s)" in again.stdout, again.stdout
    assert our_processes(project, h[4]) == [] and not has_fleetbench_dir(project, h[4])
    assert not state.exists()


# -- README: "A server writes to its HOME (gunicorn's ~/.gunicorn)" --------------------------------

def test_a_gunicorn_server_leaves_nothing_outside_fleetbench(project):
    h = project.hosts
    text = WEB_SPAWN.replace('"gunicorn==23.0.0"', '"gunicorn"').replace("$ready", "/get")  # unpinned
    spawn = project.write_spawn("web-home.toml", text)
    servers = (h[0], h[2])
    before = {host: project.ssh(host, "ls -A ~").stdout.split() for host in servers}
    project.inv("deploy", "--spawn", str(spawn))
    nodes = {n["host"]: n for n in json.loads((project.path / ".fleetbench" / "state.json").read_text())["nodes"]}
    for host in servers:
        environ = project.ssh(host, f"tr '\\0' '\\n' < /proc/{nodes[host]['pid']}/environ").stdout.splitlines()
        home = project.ssh(host, 'printf %s "$HOME"').stdout
        assert f"HOME={home}/.fleetbench/nodes/7300/home" in environ, environ  # the server's HOME is its node's
    project.inv("down", "--spawn", str(spawn))
    for host in servers:
        assert project.ssh(host, "ls -A ~").stdout.split() == [x for x in before[host] if x != ".fleetbench"], host
    assert not (project.path / ".fleetbench" / "state.json").exists()
