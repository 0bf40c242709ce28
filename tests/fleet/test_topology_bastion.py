"""A fleet only a bastion reaches (``inv testbed.up --bastion``): a whole ``inv spawn`` goes
through the jump host, a host lost behind it is still given up, and a bastion with the wrong
key is refused before anything starts."""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess

import pytest

from .conftest import topology_project
from .test_faults import Running

pytestmark = pytest.mark.fleet

SPAWN = """
name = "behind-bastion"
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
STEADY = SPAWN.replace('iterations = 2000', 'duration = "8s"')


@pytest.fixture(scope="module")
def behind(tmp_path_factory):
    with topology_project(tmp_path_factory, "bastion", hosts=3, bastion=True) as project:
        yield project


def _bastion_logins(project) -> int:
    bastion = project.hosts[0][:-1] + "0"
    return (project.path / ".testbed" / "hosts" / bastion / "sshd.log").read_text().count("Accepted publickey")


def test_spawn_through_the_bastion_finishes_ok(behind):
    config = (behind.path / ".testbed" / "ssh_config").read_text()
    bastion = behind.hosts[0][:-1] + "0"
    assert config.count(f"ProxyJump {bastion}") == len(behind.hosts)
    address = next(line.split()[1] for line in config.splitlines() if "HostName 10.213." in line
                   and config.index(line) > config.index(f"Host {behind.hosts[0]}"))
    with pytest.raises(OSError) as direct:  # the controller has no way to a host but the bastion
        socket.create_connection((address, 22), timeout=5)
    assert direct.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH), direct.value
    logins = _bastion_logins(behind)
    spawn = behind.write_spawn("bastion.toml", SPAWN)
    out = behind.inv("spawn", "--spawn", str(spawn)).stdout
    run = json.loads((behind.path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "ok", out
    assert {b["name"]: b["ops"] for b in run["benchmarks"]} == {"set": 2000}
    assert _bastion_logins(behind) > logins  # every connection went through the jump host
    for host in behind.hosts:  # and inv spawn took everything down again
        assert behind.ssh(host, "ls -A ~").stdout.strip() == ""


def test_a_host_lost_behind_the_bastion_is_given_up_after_the_host_timeout(behind):
    h = behind.hosts
    spawn = str(behind.write_spawn("lost.toml", STEADY))
    behind.inv("deploy", "--spawn", spawn)
    link = f"fbv-{h[2]}"  # h3's port on the bridge: the bastion (and our TCP to it) stays up
    # --verbose: the agents' own lines ("measuring ...") say when to strike
    run = Running(behind, "bench", "--spawn", spawn, "--host-timeout", "4", "--verbose", "collect", "--spawn", spawn)
    try:
        run.wait_for(r"\] measuring", count=2)
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        code = run.finish(timeout=120)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    out = run.output
    assert code == 1, out
    assert "Traceback" not in out
    assert f"lost {h[2]}, retrying" in out, out
    assert f"gave up on {h[2]} after" in out, out  # the other host was done and the barrier had dropped it
    meta = json.loads((behind.path / "runs" / "latest" / "meta.json").read_text())
    assert meta["lost_hosts"] == [h[2]] and meta["status"] == "partial"
    behind.inv("down", "--spawn", spawn)


def test_a_wrong_bastion_key_is_refused_before_anything_starts(behind):
    known_hosts = behind.path / ".testbed" / "known_hosts"
    good = known_hosts.read_text()
    bastion = behind.hosts[0][:-1] + "0"
    lines = good.splitlines()
    other_key = next(line for line in lines if line.startswith(behind.hosts[0] + ",")).split(" ", 1)[1]
    bad = [f"{line.split(' ', 1)[0]} {other_key}" if line.startswith(bastion + ",") else line for line in lines]
    runs_before = sorted(p.name for p in (behind.path / "runs").iterdir()) if (behind.path / "runs").exists() else []
    logins = _bastion_logins(behind)
    spawn = behind.write_spawn("refused.toml", SPAWN)
    shutil.copy(known_hosts, behind.path / "known_hosts.good")
    known_hosts.write_text("\n".join(bad) + "\n")
    try:
        proc = behind.inv("spawn", "--spawn", str(spawn), check=False, timeout=120)
    finally:
        known_hosts.write_text(good)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    assert f"through jump host {bastion}: host key for" in proc.stderr and "has CHANGED" in proc.stderr, proc.stderr
    assert _bastion_logins(behind) == logins  # never logged in to the impostor bastion
    runs_after = sorted(p.name for p in (behind.path / "runs").iterdir()) if (behind.path / "runs").exists() else []
    assert runs_after == runs_before
    for host in behind.hosts:  # nothing reached any host
        assert behind.ssh(host, "ls -A ~").stdout.strip() == ""
