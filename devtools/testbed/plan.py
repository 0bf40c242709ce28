"""Pure planning of a testbed (no root, no side effects): names, addresses, links, shaping.

Host ``i`` of prefix ``tb`` on subnet ``s`` is ``tb{i}`` at ``10.213.{s}.{10+i}`` in network
namespace ``fb-tb{i}``, its veth end ``fbv-tb{i}`` a port of the bridge ``fbbr-tb`` (``.1``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .system import TestbedError

HOST_OFFSET = 10  # host i gets .{HOST_OFFSET + i}
MAX_HOSTS = 254 - HOST_OFFSET
MAX_PREFIX_LEN = 8  # "fbv-" + prefix + 3 digits must fit IFNAMSIZ-1 = 15
# Paths each host gets a fresh tmpfs on (mode), in this order.
HOST_TMPFS: tuple[tuple[str, str], ...] = (
    ("/root", "700"),
    ("/tmp", "1777"),
    ("/var/tmp", "1777"),
    ("/dev/shm", "1777"),
    ("/usr/local/bin", "755"),
)
HIDDEN_ON_HOSTS = tuple(p for p, _ in HOST_TMPFS)
# Hosts cannot reach the machine's resolver (nothing routes out of the testbed): a name that
# is not in /etc/hosts fails at once instead of after resolver timeouts.
RESOLV_CONF = (
    "# fleetbench testbed: no DNS inside the testbed; host names are in /etc/hosts\n"
    "nameserver 127.0.0.1\n"
    "options timeout:1 attempts:1\n"
)


@dataclass(frozen=True)
class TestbedHost:
    """One running testbed host as recorded in hosts.json."""

    __test__ = False

    name: str
    address: str
    netns: str
    sshd_pid: int
    python: str  # the interpreter on the controller that is python3 on the host
    python_version: str = ""
    image: str = ""  # the image it runs (a recipe name or a path), "" for the controller's root


@dataclass(frozen=True)
class HostPlan:
    """Names and address of host ``index`` of a testbed (pure function of prefix/subnet)."""

    index: int
    name: str  # ssh alias and hostname, e.g. tb3
    address: str  # e.g. 10.213.0.13
    netns: str  # e.g. fb-tb3
    veth: str  # root-namespace end of the veth pair, e.g. fbv-tb3 (<= 15 chars)



_PREFIX_RE = re.compile(r"^[a-z]([a-z0-9]*[a-z])?$")
HOSTNAME_RE = re.compile(r"^(?P<prefix>[a-z]([a-z0-9]*[a-z])?)(?P<index>[1-9][0-9]*)$")


def parse_host_values(values: Iterable[str] | str, what: str, form: str, missing: str) -> dict[str, str]:
    """``["tb3=X", "*=Y"]`` -> ``{"tb3": "X", "*": "Y"}``, for the per-host options of ``up``
    (``what``: the option, as its errors name it; ``form``: its HOST=VALUE form with an example;
    ``missing``: what an empty value lacks). ``*`` stands for every host without its own entry."""
    if isinstance(values, str):
        values = [values]
    out: dict[str, str] = {}
    for raw in values:
        value = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(value, str) or "=" not in value:
            raise TestbedError(f"bad {what} {raw!r}: expected {form}")
        name, _, given = (part.strip() for part in value.partition("="))
        if not name:
            raise TestbedError(f"bad {what} {raw!r}: no host name before '='")
        if not given:
            raise TestbedError(f"bad {what} {raw!r}: {missing}")
        if name != "*" and not HOSTNAME_RE.match(name):
            raise TestbedError(f"bad {what} {raw!r}: {name!r} is not a testbed host name (like tb3) or '*'")
        if name in out:
            raise TestbedError(f"{what} for {name!r} given twice ({out[name]!r} and {given!r})")
        out[name] = given
    return out


def validate_prefix(prefix: str) -> str:
    """A prefix names hosts ``{prefix}1..N`` and every kernel object of the testbed.

    Lowercase letters and digits, starting and ending with a letter (so ``tb1`` + ``1`` can
    never be confused with ``tb`` + ``11``), at most 8 characters (interface names).
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix) or len(prefix) > MAX_PREFIX_LEN:
        raise TestbedError(
            f"bad testbed prefix {prefix!r}: use 1-{MAX_PREFIX_LEN} lowercase letters/digits,"
            " starting and ending with a letter (e.g. 'tb')"
        )
    return prefix


def network_for(subnet: int) -> ipaddress.IPv4Network:
    if not isinstance(subnet, int) or isinstance(subnet, bool) or not 0 <= subnet <= 255:
        raise TestbedError(f"bad testbed subnet {subnet!r}: an integer 0-255 (10.213.<subnet>.0/24)")
    return ipaddress.IPv4Network(f"10.213.{subnet}.0/24")


def bridge_name(prefix: str) -> str:
    return f"fbbr-{validate_prefix(prefix)}"


def bridge_address(subnet: int) -> str:
    return str(network_for(subnet).network_address + 1)


def mac_for(address: str) -> str:
    """A fixed, locally administered MAC per testbed address (02:fb + the IPv4 octets).

    A host rebuilt after a crash gets its old MAC back, so no neighbour (ARP) cache on the
    controller or on another host points at a vanished interface; the bridge's MAC is fixed
    too (a Linux bridge otherwise takes the lowest port MAC, which changes with its ports).
    """
    return "02:fb:" + ":".join(f"{int(o):02x}" for o in address.split("."))


def plan_hosts(prefix: str, subnet: int, count: int) -> list[HostPlan]:
    """The hosts ``{prefix}1..{prefix}count``: names, addresses, namespace and link names."""
    validate_prefix(prefix)
    net = network_for(subnet)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_HOSTS:
        raise TestbedError(f"bad host count {count!r}: 1-{MAX_HOSTS}")
    plans = []
    for i in range(1, count + 1):
        name = f"{prefix}{i}"
        veth = f"fbv-{name}"
        assert len(veth) <= 15, veth
        plans.append(
            HostPlan(index=i, name=name, address=str(net.network_address + HOST_OFFSET + i),
                     netns=f"fb-{name}", veth=veth)
        )
    return plans


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_RATE_UNITS = {  # tc's units, in bits per second
    "": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
}


def parse_rate(rate: str) -> int:
    """A tc rate (``20mbit``, ``1gbit``, ``500kbit``, ``10mbps`` = 10 MB/s) in bits/s."""
    m = _RATE_RE.match(str(rate))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _RATE_UNITS:
        raise TestbedError(f"bad uplink rate {rate!r}: use a tc rate such as 20mbit, 500kbit, 1gbit")
    bits = int(float(m.group(1)) * _RATE_UNITS[unit])
    if bits < 8000:
        raise TestbedError(f"uplink rate {rate!r} is below 8kbit: too slow to be useful")
    return bits


def tbf_args(rate: str) -> list[str]:
    """``tc qdisc replace dev BR root`` + these: a token bucket at ``rate``.

    Burst is 10 ms worth of rate, at least 32 KiB (>= rate/HZ, and enough for a few
    MTU frames; larger GSO frames are segmented by tbf); queueing latency at most 50 ms.
    """
    bits = parse_rate(rate)
    burst = max(32 * 1024, bits // 8 // 100)
    return ["tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "50ms"]


def etc_hosts_text(base: str, hosts: Sequence[tuple[str, str]], prefix: str) -> str:
    """The machine's /etc/hosts plus a line per testbed host (what hosts see as /etc/hosts)."""
    text = base if base.endswith("\n") or not base else base + "\n"
    text += f"# fleetbench testbed '{prefix}'\n"
    text += "".join(f"{address}\t{alias}\n" for alias, address in hosts)
    return text


def name_key(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*?)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def own_name(candidate: str, stem: str) -> bool:
    """``candidate`` is ``stem`` + a host index (``0``: the bastion, else no leading zero)."""
    rest = candidate[len(stem):]
    return candidate.startswith(stem) and rest.isdigit() and (rest == "0" or not rest.startswith("0"))


# ---- the bastion topology --------------------------------------------------------------------
# With a bastion, the bridge has no address in the root namespace: the controller reaches
# only the bastion ``{prefix}0``, over a veth pair of its own (``fbo-{prefix}`` <-> the
# bastion's ``eth1``) holding the first /30 of the subnet; the bastion is on the bridge at
# ``.{HOST_OFFSET}`` like any host. The rest of the subnet is unreachable from the root
# namespace (a route says so), so nothing meant for the fleet leaks to the default route.


def bastion_plan(prefix: str, subnet: int) -> HostPlan:
    name = f"{validate_prefix(prefix)}0"
    return HostPlan(index=0, name=name, address=str(network_for(subnet).network_address + HOST_OFFSET),
                    netns=f"fb-{name}", veth=f"fbv-{name}")


def outer_link_name(prefix: str) -> str:
    return f"fbo-{validate_prefix(prefix)}"


def outer_network(subnet: int) -> ipaddress.IPv4Network:
    """The controller <-> bastion link: ``.1`` the controller, ``.2`` the bastion."""
    return ipaddress.IPv4Network(f"{network_for(subnet).network_address}/30")


def outer_addresses(subnet: int) -> tuple[str, str]:
    net = outer_network(subnet)
    return str(net.network_address + 1), str(net.network_address + 2)



# ---- the 1:1 NAT topology (``nat=True``) -----------------------------------------------------
# As a cloud does: the controller reaches each host only at a public address in 198.18.0.0/15
# (the benchmarking range), translated to the host's private address; the hosts hold only
# their private addresses and reach each other only at those. Host ``i`` of subnet ``s`` is
# public at ``198.18.{s}.{10+i}``; with a bastion only the bastion has a public address (the
# hosts behind it are reached at their private ones, through it).

NAT_TABLE_PREFIX = "fleetbench_nat_"
PUBLIC_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


def public_network(subnet: int) -> ipaddress.IPv4Network:
    network_for(subnet)  # the same bounds
    return ipaddress.IPv4Network(f"198.18.{subnet}.0/24")


def public_address(subnet: int, index: int) -> str:
    return str(public_network(subnet).network_address + HOST_OFFSET + index)


def nat_table(prefix: str) -> str:
    """The nftables table of testbed ``prefix`` (one per testbed: they never collide)."""
    return NAT_TABLE_PREFIX + validate_prefix(prefix)


def nat_ruleset(prefix: str, pairs: Sequence[tuple[str, str]], uplink: str, private: ipaddress.IPv4Network) -> str:
    """``nft -f`` input: the table of testbed ``prefix``, ``pairs`` of (public, private).

    Only what the controller sends is translated (the ``output`` hook of the root namespace):
    no ``prerouting`` chain, so nothing a host sends is ever translated (where br_netfilter is
    loaded, frames bridged between hosts pass the root namespace's prerouting hook too). The
    ``controller`` chain refuses what the controller would send to a private address itself,
    as a laptop cannot reach a cloud's private network: only translated connections (and
    replies) go out of ``uplink`` to ``private``.
    """
    table = nat_table(prefix)
    dnat = "".join(f"    ip daddr {public} dnat to {inner}\n" for public, inner in pairs)
    to_fleet = f'oifname "{uplink}" ip daddr {private}'
    return (
        f"table ip {table} {{\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        f"{dnat}"
        "  }\n"
        "  chain controller {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    {to_fleet} ct status dnat accept\n"
        f"    {to_fleet} ct direction reply accept\n"
        f"    {to_fleet} reject with icmp type admin-prohibited\n"
        "  }\n"
        "}\n"
    )
