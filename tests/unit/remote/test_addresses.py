"""A host's private address: the probe run for real (sh and python3 against a private HOME, as
the preflight runs it on a host), and the parser of what it reports."""

from __future__ import annotations

import pytest

from fabfile.remote.addresses import AddressError, HostAddresses, learn
from fabfile.remote.fleet import Fleet, FleetError
from tests.conftest import LocalHost


class NatHost(LocalHost):
    """A local stand-in reached at a public address, whose sshd saw the connection arrive at
    ``arrived`` (what sshd puts into SSH_CONNECTION behind a 1:1 NAT)."""

    def __init__(self, home, name: str, public: str, arrived: str | None):
        super().__init__(home, name)
        self.host = public  # what Fabric's Connection.host is: ssh_config's HostName
        self.arrived = arrived

    def run(self, command: str, **kwargs):
        if self.arrived is not None:
            command = f"SSH_CONNECTION='127.0.0.1 50000 {self.arrived} 22'; export SSH_CONNECTION\n{command}"
        return super().run(command, **kwargs)


def _fleet(host: NatHost, overrides: dict[str, str] | None = None) -> Fleet:
    fleet = Fleet.__new__(Fleet)  # no SSH: the preflight runs on the local stand-in
    fleet.names, fleet.connections = [host.original_host], {host.original_host: host}
    fleet.hosts = fleet.connections  # the stand-in is both: a Host, with the Connection's address
    fleet.interpreters, fleet.addresses, fleet.private_overrides = {}, {}, dict(overrides or {})
    fleet.bundled, fleet.choices, fleet.needs_bundled = None, {}, {}
    return fleet


def test_the_preflight_learns_the_address_the_ssh_connection_arrived_at(tmp_path) -> None:
    fleet = _fleet(NatHost(tmp_path, "tb1", "198.18.7.11", "10.213.7.11"))
    fleet._preflight("tb1")
    assert fleet.addresses["tb1"] == HostAddresses("198.18.7.11", "10.213.7.11", "ssh")
    assert fleet.address("tb1") == "10.213.7.11"  # what servers bind and other hosts dial
    assert fleet["tb1"].host == "198.18.7.11"  # what SSH keeps using


def test_an_override_that_is_an_address_of_the_host_is_used(tmp_path) -> None:
    fleet = _fleet(NatHost(tmp_path, "tb1", "198.18.7.11", "127.0.0.1"), {"tb1": "127.0.0.2"})
    fleet._preflight("tb1")
    assert fleet.address("tb1") == "127.0.0.2" and fleet.addresses["tb1"].learned_from == "override"


def test_an_override_that_is_not_on_the_host_fails_the_preflight_naming_host_and_address(tmp_path) -> None:
    fleet = _fleet(NatHost(tmp_path, "tb1", "198.18.7.11", "127.0.0.1"), {"tb1": "192.0.2.77"})
    with pytest.raises(FleetError) as caught:
        fleet.each(fleet._preflight, what="preflight")
    text = str(caught.value)
    assert text.startswith("preflight: 1 host(s) failed")
    assert "tb1: private address 192.0.2.77 (the inventory's override) is not an address of this host" in text
    assert "Cannot assign requested address" in text
    assert "tb1" not in fleet.addresses
    assert not (tmp_path / ".fleetbench").exists()  # refused before the private directory was made


def test_through_a_local_tunnel_the_default_routes_source_is_taken(tmp_path) -> None:
    fleet = _fleet(NatHost(tmp_path, "tb1", "i-0abc", "127.0.0.1"))  # e.g. a session manager's tunnel
    fleet._preflight("tb1")
    learned = fleet.addresses["tb1"]
    assert learned.learned_from == "default" and learned.private != "127.0.0.1", learned


@pytest.mark.parametrize("report, expected", [
    ({"ssh": "10.0.1.5", "route": "10.0.1.5"}, HostAddresses("54.1.2.3", "10.0.1.5", "ssh")),
    ({"ssh": "::ffff:10.0.1.5"}, HostAddresses("54.1.2.3", "10.0.1.5", "ssh")),  # a dual-stack sshd
    ({"ssh": "fd00:4::1%eth0"}, HostAddresses("54.1.2.3", "fd00:4::1", "ssh")),
    ({"ssh": "garbage", "route": "172.31.4.4"}, HostAddresses("54.1.2.3", "172.31.4.4", "route")),
    ({"ssh": "0.0.0.0", "route": "172.31.4.4"}, HostAddresses("54.1.2.3", "172.31.4.4", "route")),
    ({"ssh": "127.0.0.1", "route": "127.0.0.1", "default": "10.9.0.4"}, HostAddresses("54.1.2.3", "10.9.0.4",
                                                                                       "default")),
    ({"ssh": "fe80::1%eth0", "default": "10.9.0.4"}, HostAddresses("54.1.2.3", "10.9.0.4", "default")),
    ({}, HostAddresses("54.1.2.3", "54.1.2.3", "hostname")),
    (None, HostAddresses("54.1.2.3", "54.1.2.3", "hostname")),
])
def test_learn_picks_what_the_host_reported(report, expected) -> None:
    assert learn("h1", "54.1.2.3", report) == expected


def test_learn_refuses_what_it_cannot_tell_naming_the_host() -> None:
    with pytest.raises(AddressError, match=r"^web1: cannot tell its private address \(the host reported no "
                                           r"usable address; Network is unreachable\): give it in the inventory"):
        learn("web1", "web1.example.com", {"ssh": "127.0.0.1", "route_error": "Network is unreachable"})
    with pytest.raises(AddressError, match=r"^h1: its private address 10.0.0.9 .* could not be checked"):
        learn("h1", "54.1.2.3", {"ssh": "10.0.0.5"}, override="10.0.0.9")
    with pytest.raises(AddressError, match=r"^h1: private address 10.0.0.9 .* is not an address of this host: "
                                           r"binding it there failed \(Cannot assign requested address\)$"):
        learn("h1", "54.1.2.3", {"override": ["10.0.0.9", "Cannot assign requested address"]}, override="10.0.0.9")
    assert learn("h1", "54.1.2.3", {"ssh": "10.0.0.5", "override": ["10.0.0.9", ""]}, override="10.0.0.9") \
        == HostAddresses("54.1.2.3", "10.0.0.9", "override")
