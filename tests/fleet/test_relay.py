"""Relay fan-out on real hosts: hops linked host to host over the testbed's bridge, every copy
verified, a corrupted link caught and redone, and hosts that cannot reach each other served
by direct pushes instead."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_proxy import Proxy

from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import REMOTE_DIR
from fabfile.remote.ssh import SshSettings
from fabfile.ship.push import push
from fabfile.ship.relay import File, HostHop, Relay, deliver

pytestmark = pytest.mark.fleet


@pytest.fixture
def blob(tmp_path: Path, request) -> File:
    path = tmp_path / "blob.pex"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    name = f"relay-{request.node.name[5:25]}"
    return File(name, path, hashlib.sha256(path.read_bytes()).hexdigest(), f"{REMOTE_DIR}/bin/{name}.pex")


@pytest.fixture
def fleet(project) -> Iterator[Fleet]:
    f = Fleet(project.hosts, SshSettings((project.path / ".testbed" / "ssh_config",)))
    f.open()
    yield f
    f.close()


def _testbed_state(project) -> dict:
    return json.loads((project.path / ".testbed" / "hosts.json").read_text())


def _copies(project, blob: File) -> list[tuple[str, str, list[str]]]:
    """(sha256, mode, files in bin/) on every host."""
    out = []
    for host in project.hosts:
        text = project.ssh(host, f"sha256sum {blob.remote_path} | cut -d' ' -f1; stat -c %a {blob.remote_path}; "
                                 f"ls {REMOTE_DIR}/bin").stdout.split()
        out.append((text[0], text[1], [f for f in text[2:] if f.startswith(blob.name)]))
    return out


def _direct(fleet: Fleet, blob: File, pushed: list[str]):
    def direct(names: list[str]) -> None:
        pushed.extend(names)
        fleet.each(lambda h: push(fleet[h], blob.path, blob.remote_path, blob.sha256), names)
    return direct


def test_every_host_gets_a_verified_copy_host_to_host(project, fleet: Fleet, blob: File) -> None:
    messages: list[str] = []
    sent, kept = deliver(fleet, {h: [blob] for h in project.hosts}, echo=messages.append)
    assert (sent, kept) == (len(project.hosts), 0)
    assert any(f"{len(project.hosts)} of {len(project.hosts)} host(s) by relay" in m for m in messages), messages
    assert _copies(project, blob) == [(blob.sha256, "700", [f"{blob.name}.pex"])] * len(project.hosts)
    # Nothing of the transfer is left listening or running on any host.
    for host in project.hosts:
        assert "One hop of a relay" not in project.ssh(host, "ps -eo args").stdout
    # A second delivery finds every copy in place and moves nothing.
    assert deliver(fleet, {h: [blob] for h in project.hosts}, echo=messages.append) == (0, len(project.hosts))


def test_a_corrupted_link_is_caught_and_redone_from_a_verified_host(project, fleet: Fleet, blob: File) -> None:
    bridge = _testbed_state(project)["bridge_address"]
    proxies: list[Proxy] = []

    def dial(address: str, port: int) -> tuple[str, int]:
        if not proxies:  # the first link (h1 -> h2) runs through us and flips one byte
            proxies.append(Proxy((address, port), corrupt_at=32 + 123_456, bind=bridge))
            return bridge, proxies[0].port
        return address, port

    messages: list[str] = []
    pushed: list[str] = []
    hosts = project.hosts
    try:
        how = Relay(lambda h: HostHop(fleet[h]), fleet.address, echo=messages.append, dial=dial).send(
            blob, hosts, _direct(fleet, blob, pushed))
    finally:
        proxies[0].close()
    # h2 got a flipped byte and passed it on: h2..h6 refused their copies, and were redone
    # from h1 (the only verified copy) without crossing the controller's uplink again.
    assert how == {hosts[0]: "relay", **{h: f"relay from {hosts[0]}" for h in hosts[1:]}}
    assert pushed == []
    assert any("sha256 mismatch" in m and f"redoing from {hosts[0]}" in m for m in messages), messages
    assert _copies(project, blob) == [(blob.sha256, "700", [f"{blob.name}.pex"])] * len(hosts)


def test_hosts_that_cannot_reach_each_other_get_direct_pushes(project, fleet: Fleet, blob: File) -> None:
    veths = [h["veth"] for h in _testbed_state(project)["hosts"]]

    def isolate(on: bool) -> None:  # isolated bridge ports reach the controller, not each other
        for veth in veths:
            subprocess.run(["bridge", "link", "set", "dev", veth, "isolated", "on" if on else "off"], check=True)

    messages: list[str] = []
    pushed: list[str] = []
    isolate(True)
    try:
        how = Relay(lambda h: HostHop(fleet[h]), fleet.address, echo=messages.append, link_timeout=3).send(
            blob, project.hosts, _direct(fleet, blob, pushed))
    finally:
        isolate(False)
    assert how == {h: "direct" for h in project.hosts} and pushed == project.hosts
    [message] = messages
    h1, h2 = project.hosts[:2]
    assert message.startswith(f"relay: hosts cannot reach each other ({h1} -> {h2}: cannot reach "), message
    assert f"directly to {len(project.hosts)} host(s)" in message
    assert _copies(project, blob) == [(blob.sha256, "700", [f"{blob.name}.pex"])] * len(project.hosts)
