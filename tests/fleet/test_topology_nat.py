"""A fleet behind a 1:1 NAT, as a cloud's (``inv testbed.up --nat``): the controller reaches
every host only at a public address that is on no interface of the host; the hosts hold only
their private addresses and reach each other only at those. The default spawn runs through
it, every server binds its private address, run.json keeps both addresses of every host, and
an override of a private address that is not on its host is refused naming both."""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import socket

import pytest

from .conftest import REPO, topology_project

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def nat(tmp_path_factory):
    # sshd with OpenSSH's stock limits, as a cloud image ships it
    with topology_project(tmp_path_factory, "nat", hosts=5, nat=True, sshd_limits="stock") as project:
        yield project


def _testbed(project) -> dict:
    return json.loads((project.path / ".testbed" / "hosts.json").read_text())


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the network namespace of ``pid``."""
    found = set()
    with open(f"/proc/{pid}/net/tcp") as fh:
        for row in (line.split() for line in fh.readlines()[1:]):
            if row[3] == "0A":
                address, port = row[1].split(":")
                found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    return found


def test_only_public_addresses_from_here_only_private_ones_between_hosts(nat):
    hosts = {r["name"]: r for r in _testbed(nat)["hosts"]}
    public = ipaddress.ip_network("198.18.0.0/15")
    config = (nat.path / ".testbed" / "ssh_config").read_text()
    named = dict(re.findall(r"Host (\S+)\n\s+HostName (\S+)", config))
    assert {h: named[h] for h in nat.hosts} == {h: hosts[h]["address"] for h in nat.hosts}
    assert all(ipaddress.ip_address(named[h]) in public for h in nat.hosts)
    first, second = hosts[nat.hosts[0]], hosts[nat.hosts[1]]
    # the host holds only its private address; SSH arrived there, translated
    shown = nat.ssh(nat.hosts[0], "ip -4 -o addr show; echo $SSH_CONNECTION").stdout
    assert first["private_address"] in shown and first["address"] not in shown, shown
    assert shown.split()[-2] == first["private_address"]
    # the controller cannot reach a private address itself, as a laptop cannot reach a VPC's
    with pytest.raises(OSError) as direct:
        socket.create_connection((first["private_address"], 22), timeout=5)
    assert direct.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED), direct.value
    # and a host cannot use another's public address, only its private one
    probe = ("import socket, sys\nfor a in sys.argv[1:]:\n    try:\n        socket.create_connection((a, 22), 5)"
             ".close(); print(a, 'ok')\n    except OSError as e:\n        print(a, e.errno)")
    out = nat.ssh(nat.hosts[0], f"python3 -c \"{probe}\" {second['address']} {second['private_address']}").stdout
    assert out.splitlines() == [f"{second['address']} {errno.EHOSTUNREACH}", f"{second['private_address']} ok"], out


def test_the_default_spawn_runs_through_the_nat_at_private_addresses(nat):
    text = (REPO / "spawn.toml").read_text()
    for i, host in enumerate(nat.hosts, 1):
        text = text.replace(f'"tb{i}"', f'"{host}"')
    spawn = nat.path / "spawn.toml"
    spawn.write_text(text)
    hosts = {r["name"]: r for r in _testbed(nat)["hosts"]}
    s = str(spawn)
    out = nat.inv("deploy", "--spawn", s, "bench", "--spawn", s, "collect", "--spawn", s).stdout
    try:
        run = json.loads((nat.path / "runs" / "latest" / "run.json").read_text())
        assert run["status"] == "ok", out
        assert [b["name"] for b in run["benchmarks"]] == ["set", "get-zipf", "setbit"]
        assert all(b["agents_ok"] == b["agents"] and b["errors"] == 0 for b in run["benchmarks"]), out
        for host in nat.hosts:  # both addresses of every host
            assert run["hosts"][host]["addresses"] == {"ssh": hosts[host]["address"], "learned_from": "ssh",
                                                       "private": hosts[host]["private_address"]}
        servers = nat.hosts[:3]
        nodes = run["deployment"]["nodes"]
        assert [(n["host"], n["address"]) for n in nodes] == [(h, hosts[h]["private_address"]) for h in servers]
        assert "by relay" in out, out  # the relay's hops listened on, and dialled, private addresses
        for host in servers:  # each server bound its private address (and nothing else) on its host
            bound = {a for a, port in _listening(hosts[host]["sshd_pid"]) if port == 7000}
            assert bound == {hosts[host]["private_address"]}, (host, bound)
        cluster = nat.ssh(servers[0], 'cd ~/.fleetbench/nodes/7000 && cat nodes.conf').stdout
        for host in servers:  # the cluster's peers know each other at their private addresses
            assert f" {hosts[host]['private_address']}:7000@17000" in cluster, cluster
        meta = json.loads((nat.path / "runs" / "latest" / "meta.json").read_text())
        assert meta["host_run"]["coordinator"] == nat.hosts[3]  # the barrier, on a private address:
        assert run["clock"][nat.hosts[4]]  # the other host measured its clock against it
    finally:
        nat.inv("down", "--spawn", s)


def test_an_override_that_is_not_on_its_host_is_refused_naming_both(nat):
    hosts = {r["name"]: r for r in _testbed(nat)["hosts"]}
    elsewhere = hosts[nat.hosts[1]]["private_address"]  # another host's: not on this one
    spawn = nat.write_spawn("override.toml", f"""
[hosts]
servers = ["$h1"]
agents = ["$h2"]
private_addresses = {{ $h1 = "{elsewhere}" }}
[server]
kind = "redis"
[[benchmark]]
name = "set"
workload = "set"
iterations = 100
""")
    proc = nat.inv("deploy", "--spawn", str(spawn), check=False, timeout=120)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    assert (f"{nat.hosts[0]}: private address {elsewhere} (the inventory's override) is not an address of this "
            "host") in proc.stderr, proc.stderr
    assert nat.ssh(nat.hosts[0], "ls -A ~").stdout.strip() == ""  # nothing was started or left
