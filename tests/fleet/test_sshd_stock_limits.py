"""sshd as shipped (``inv testbed.up --stock-sshd``: MaxStartups 10:30:100, MaxSessions 10) in
front of a fleet of 16 hosts reached through one bastion (itself behind the 1:1 NAT: reached at
its public address, the hosts at their private ones through it): every connect of the fleet is
a handshake with the bastion and one with its host, and the controller keeps them under 10 at
a time per sshd, so every host connects, round after round; a connection never holds more
sessions than sshd allows, while sshd really does refuse the 11th."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import paramiko
import pytest

from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import run
from fabfile.remote.ssh import SshSettings

from .conftest import topology_project

pytestmark = pytest.mark.fleet

HOSTS = 16


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    with topology_project(tmp_path_factory, "stock", hosts=HOSTS, bastion=True, nat=True,
                          sshd_limits="stock") as project:
        yield project


def _settings(project) -> SshSettings:
    return SshSettings((Path(project.path / ".testbed" / "ssh_config"),))


def test_the_bastion_and_hosts_run_sshd_with_its_stock_limits(stock):
    bastion = stock.hosts[0][:-1] + "0"
    for name in (bastion, stock.hosts[0]):
        pid = (stock.path / ".testbed" / "hosts" / name / "sshd.pid").read_text().strip()
        title = Path(f"/proc/{pid}/cmdline").read_bytes()  # sshd's own title: its argv and its startups
        assert b"-o MaxStartups=10:30:100 " in title and b"-o MaxSessions=10 " in title, title
        assert title.rstrip(b"\0").endswith(b"[listener] 0 of 10-100 startups"), title


def test_a_fleet_of_16_behind_one_bastion_connects_every_time(stock):
    config = (stock.path / ".testbed" / "ssh_config").read_text()
    bastion = stock.hosts[0][:-1] + "0"
    assert re.search(rf"Host {bastion}\n\s+HostName 198\.18\.", config), config  # public, NAT'd
    for _ in range(3):  # a burst of 16 jump connections to the bastion, then 16 logins, each round
        fleet = Fleet(stock.hosts, _settings(stock))
        try:
            fleet.open()  # FleetError naming every host that failed
            names = fleet.each(lambda h, f=fleet: run(f[h], "hostname").strip(), what="hostname")
        finally:
            fleet.close()
        assert names == {h: h for h in stock.hosts}


def test_sessions_on_one_connection_stay_within_max_sessions(stock):
    fleet = Fleet(stock.hosts[:1], _settings(stock))
    try:
        fleet.open()
        c = fleet.connections[stock.hosts[0]]  # its SSH connection, below the Host seam
        # sshd refuses an 11th session on a connection (bypassing our transport's bound)
        raw = [paramiko.Transport.open_channel(c.transport, "session") for _ in range(10)]
        with pytest.raises(paramiko.ChannelException):
            paramiko.Transport.open_channel(c.transport, "session")
        for channel in raw:
            channel.close()
        deadline = time.monotonic() + 30
        while c.transport._channels.values() and time.monotonic() < deadline:  # sshd has closed them too
            time.sleep(0.05)
        # 14 commands at once on the one connection: all run, a few waiting for a session
        outputs: dict[int, str] = {}

        def one(i: int) -> None:
            outputs[i] = run(fleet[stock.hosts[0]], f"sleep 0.5; echo {i}").strip()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outputs == {i: str(i) for i in range(14)}
    finally:
        fleet.close()
