"""A host's two addresses: where the controller reaches it (SSH) and where the other hosts do.

A cloud host reached from outside has a public address NAT'd 1:1 (AWS, GCP): that address is
on no interface of the host, nothing there can bind it, and the hosts reach each other at
their private addresses (free and fast inside a VPC). So the controller keeps the ssh
HostName for SSH, and everything between hosts (where servers bind and what agents dial,
Redis Cluster's peers, relay hops, the barrier) uses the host's private address, learned
from the host itself in the preflight's one round trip (:data:`PROBE`, run by the host's
python3 with the standard library only):

* an override (``private_addresses`` in the spawn file's ``[hosts]`` or its inventory) is
  checked to be an address of the host: a socket must bind it there;
* else the address the SSH connection arrived at, as the host sees it (``SSH_CONNECTION``'s
  third field): behind a 1:1 NAT or a bastion that is the private address, and it is on an
  interface of the host by definition;
* else the source address of the host's route back towards whoever connected, else of its
  default route (a UDP socket "connected" there: no packet is sent).

A loopback or link-local address is never taken: SSH through a local tunnel (a ProxyCommand
such as a cloud's session manager forwarding to the host's own port 22) arrives at 127.0.0.1,
which the other hosts cannot use.

A host reached on a public interface of its own (a multi-homed machine) is then reached by
its peers there too; the override names the private one. The probe's text and the parser
of what it prints live together here; :class:`Fleet` runs them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fabfile.errors import FleetbenchError

#: Python run on the host (inside the preflight's probe, before its version check: any
#: python3). ``sys.argv[1]``, when given, is the override to check. Defines ``_addresses()``.
PROBE = '''
def _addresses():
    import os, socket
    out = {}
    def family(address):
        return socket.AF_INET6 if ":" in address else socket.AF_INET
    def source(towards):
        try:
            s = socket.socket(family(towards), socket.SOCK_DGRAM)
            try:
                s.connect((towards, 9))
                return s.getsockname()[0]
            finally:
                s.close()
        except (OSError, ValueError) as e:
            out["route_error"] = str(e)
    conn = os.environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4:
        out["ssh"] = conn[2]
        out["route"] = source(conn[0])
    out["default"] = source("203.0.113.1")
    if len(sys.argv) > 1:
        want = sys.argv[1]
        try:
            s = socket.socket(family(want), socket.SOCK_STREAM)
            try:
                s.bind((want, 0))
            finally:
                s.close()
            out["override"] = [want, ""]
        except (OSError, ValueError) as e:
            out["override"] = [want, getattr(e, "strerror", None) or str(e)]
    return out
'''


class AddressError(FleetbenchError):
    """A host's private address cannot be learned, or its override is not on the host."""


@dataclass(frozen=True)
class HostAddresses:
    """``ssh``: where the controller reaches the host (ssh_config's HostName, else the host as
    given); ``private``: where the other hosts reach it; ``learned_from``: "override", "ssh"
    (the address the SSH connection arrived at), "route" (the source towards the SSH client),
    "default" (the default route's source) or "hostname"."""

    ssh: str
    private: str
    learned_from: str

    def to_dict(self) -> dict[str, str]:
        return {"ssh": self.ssh, "private": self.private, "learned_from": self.learned_from}


def _plain(address: str) -> str:
    """An IPv4 address reported as IPv4-mapped IPv6 (a dual-stack sshd) as plain IPv4; the
    zone of a link-local address dropped (other hosts cannot use ours)."""
    address = address.split("%", 1)[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _usable(address: str) -> bool:
    """An address other hosts can dial: not unspecified, loopback or link-local."""
    if not address:
        return False
    parsed = ipaddress.ip_address(address)
    return not (parsed.is_unspecified or parsed.is_loopback or parsed.is_link_local)


def learn(host: str, ssh_address: str, report: Mapping[str, Any] | None, override: str | None = None) -> HostAddresses:
    """The host's addresses from what :data:`PROBE` reported (``report``; None when the host
    sent none). AddressError naming the host when an override is not an address of the host,
    or when nothing says where the other hosts reach it."""
    report = report or {}
    if override is not None:
        checked = report.get("override")
        if not isinstance(checked, list) or len(checked) != 2 or checked[0] != override:
            raise AddressError(f"{host}: its private address {override} (the inventory's override) could not "
                               "be checked on the host")
        if checked[1]:
            raise AddressError(f"{host}: private address {override} (the inventory's override) is not an "
                               f"address of this host: binding it there failed ({checked[1]})")
        return HostAddresses(ssh_address, override, "override")
    for key in ("ssh", "route", "default"):
        value = report.get(key)
        found = _plain(value) if isinstance(value, str) else ""
        if _usable(found):
            return HostAddresses(ssh_address, found, key)
    plain = _plain(ssh_address)
    if _usable(plain):  # nothing from the host: an address given as such is the best we know
        return HostAddresses(ssh_address, plain, "hostname")
    raise AddressError(f"{host}: cannot tell its private address (the host reported no usable address"
                       + (f"; {report['route_error']}" if report.get("route_error") else "")
                       + "): give it in the inventory, private_addresses = {" + f'"{host}" = "10.0.0.5"' + "}")
