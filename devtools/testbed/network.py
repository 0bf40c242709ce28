"""The testbed's network: the bridge, each host's namespace and veth pair, uplink shaping (tc),
and the check that the subnet is free. Root only."""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterable, Sequence

from .layout import Layout
from .plan import PUBLIC_RANGE, HostPlan, mac_for, nat_ruleset, outer_addresses, outer_network, parse_rate
from .system import TOOL_ENV, TestbedError, ip_batch, link_exists, netns_inode, run_tool


def ensure_bridge(lay: Layout) -> None:
    """The fleet's bridge; the controller's address on it, unless only a bastion may reach the fleet."""
    br = lay.bridge
    if not link_exists(br):
        run_tool(["ip", "link", "add", "name", br, "address", mac_for(lay.bridge_address), "type", "bridge",
                  "forward_delay", "0", "stp_state", "0"])
    if lay.bastion:
        ip_batch([f"addr flush dev {br}", f"link set {br} up",
                  f"route replace unreachable {lay.network}"])  # the fleet: never via the default route
    else:
        ip_batch([f"addr replace {lay.bridge_address}/{lay.network.prefixlen} dev {br}", f"link set {br} up"])


def remove_bridge(lay: Layout) -> None:
    remove_nat(lay)
    if link_exists(lay.bridge):
        run_tool(["tc", "qdisc", "del", "dev", lay.bridge, "root"], check=False)
        run_tool(["ip", "link", "del", lay.bridge])
    if link_exists(lay.outer_link):  # goes with the bastion's namespace; a leftover only after a crash
        run_tool(["ip", "link", "del", lay.outer_link])
    if unreachable_route(lay):
        run_tool(["ip", "route", "del", "unreachable", str(lay.network)], check=False)


def unreachable_route(lay: Layout) -> bool:
    routes = json.loads(run_tool(["ip", "-j", "-4", "route", "show", "type", "unreachable"]).stdout or "[]")
    return any(r.get("dst") == str(lay.network) for r in routes)


def add_host_links(lay: Layout, plans: Sequence[HostPlan]) -> None:
    """A namespace per host and its veth pair: ``eth0`` inside, the other end on the bridge."""
    batch = []
    for p in plans:
        batch += [
            f"netns add {p.netns}",
            f"link add {p.veth} type veth peer name eth0 address {mac_for(p.address)} netns {p.netns}",
            f"link set {p.veth} master {lay.bridge} up",
        ]
    ip_batch(batch)


def configure_host_network(lay: Layout, p: HostPlan) -> None:
    """Inside the host's namespace: its address, ``lo`` and ``eth0`` up, routes via the bridge
    (with a bastion there is no controller on the bridge: hosts reach only each other)."""
    ip_batch([
        f"addr add {p.address}/{lay.network.prefixlen} dev eth0",
        "link set lo up",
        "link set eth0 up",
        *([] if lay.bastion else [f"route add default via {lay.bridge_address}"]),
        # behind the NAT, hosts reach each other only at their private addresses
        *([f"route add unreachable {PUBLIC_RANGE}"] if lay.nat else []),
    ], netns=p.netns)
    if lay.bastion and p.index == 0:
        add_outer_link(lay, p)


def add_outer_link(lay: Layout, bastion: HostPlan) -> None:
    """The controller's only way in: a veth pair from the root namespace to the bastion's eth1."""
    mine, theirs = outer_addresses(lay.subnet)
    prefixlen = outer_network(lay.subnet).prefixlen
    if link_exists(lay.outer_link):
        run_tool(["ip", "link", "del", lay.outer_link])
    ip_batch([
        f"link add {lay.outer_link} address {mac_for(mine)} type veth peer name eth1"
        f" address {mac_for(theirs)} netns {bastion.netns}",
        f"addr add {mine}/{prefixlen} dev {lay.outer_link}",
        f"link set {lay.outer_link} up",
    ])
    ip_batch([f"addr add {theirs}/{prefixlen} dev eth1", "link set eth1 up"], netns=bastion.netns)
    if lay.nat:  # the bastion's public address is reached over this link
        run_tool(["ip", "route", "replace", str(lay.public_network), "dev", lay.outer_link])


# ---- the 1:1 NAT (nat=True) ------------------------------------------------------------------


def _nft() -> str | None:
    return shutil.which("nft", path=TOOL_ENV["PATH"])


def ensure_nat(lay: Layout, plans: list[HostPlan]) -> None:
    """The NAT of a ``nat`` testbed (its nftables table, replaced as a whole, and the route
    of its public /24 into the fleet: never the default route, and not a blackhole either,
    with which connect() fails before the NAT applies); none for another testbed."""
    if not lay.nat:
        remove_nat(lay)
        return
    table = f"table ip {lay.nat_table} {{}}\ndelete table ip {lay.nat_table}\n"  # replaced in one transaction
    run_tool(["nft", "-f", "-"], input=table + nat_ruleset(lay.prefix, lay.nat_pairs(plans), lay.uplink_device,
                                                         lay.network))
    if not lay.bastion:  # with a bastion, its outer link carries the route (add_outer_link)
        run_tool(["ip", "route", "replace", str(lay.public_network), "dev", lay.bridge])


def remove_nat(lay: Layout) -> None:
    """The NAT table and public route of testbed ``lay``, if any (crash recovery too)."""
    if public_route(lay):
        run_tool(["ip", "route", "del", str(lay.public_network)], check=False)
    if nat_present(lay):
        run_tool(["nft", "delete", "table", "ip", lay.nat_table], check=False)


def nat_present(lay: Layout) -> bool:
    return _nft() is not None and run_tool(["nft", "list", "table", "ip", lay.nat_table], check=False).returncode == 0


def public_route(lay: Layout) -> bool:
    routes = json.loads(run_tool(["ip", "-j", "-4", "route", "show", str(lay.public_network)]).stdout or "[]")
    return any(r.get("dst") == str(lay.public_network) for r in routes)


def remove_host_links(names: Iterable[str]) -> list[str]:
    """Delete the veth pairs and namespaces of hosts ``names``; the names some of which are left."""
    names = list(names)
    ip_batch([f"link del {n}" for n in (f"fbv-{name}" for name in names) if link_exists(n)], force=True)
    ip_batch([f"netns del fb-{name}" for name in names if netns_inode(f"fb-{name}") is not None], force=True)
    return [n for n in names if netns_inode(f"fb-{n}") is not None or link_exists(f"fbv-{n}")]


def apply_shaping(lay: Layout, rate_args: list[str] | None) -> None:
    if rate_args:
        run_tool(["tc", "qdisc", "replace", "dev", lay.uplink_device, "root"] + rate_args)
    else:
        run_tool(["tc", "qdisc", "del", "dev", lay.uplink_device, "root"], check=False)


def shaping_matches(lay: Layout, uplink: str | None) -> bool:
    if not link_exists(lay.uplink_device):
        return uplink is None
    cp = run_tool(["tc", "-j", "qdisc", "show", "dev", lay.uplink_device], check=False)
    try:
        qdiscs = json.loads(cp.stdout or "[]")
    except ValueError:
        return False
    root = next((q for q in qdiscs if q.get("root")), None)
    if uplink is None:
        return root is None or root.get("kind") in ("noqueue", None)
    if not root or root.get("kind") != "tbf":
        return False
    want = parse_rate(uplink) // 8
    have = (root.get("options") or {}).get("rate")
    return isinstance(have, int) and abs(have - want) <= max(1, want // 100)


def check_subnet_free(lay: Layout) -> None:
    """Refuse a subnet that an address or route of this machine (another testbed?) overlaps."""
    net = lay.network
    addrs = json.loads(run_tool(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for iface in addrs:
        if iface.get("ifname") in (lay.bridge, lay.outer_link):
            continue
        for a in iface.get("addr_info", []):
            try:
                other = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            except (KeyError, ValueError):
                continue
            if ipaddress.IPv4Address(a["local"]) in net or (
                    other.overlaps(net) and other.prefixlen >= net.prefixlen):
                raise TestbedError(
                    f"testbed subnet {net} overlaps {a['local']}/{a['prefixlen']} on {iface.get('ifname')}"
                    " (another testbed or network?): pick another subnet"
                )
    routes = json.loads(run_tool(["ip", "-j", "-4", "route", "show"]).stdout or "[]")
    for r in routes:
        dst, dev = r.get("dst"), r.get("dev")
        if not dst or dst == "default" or dev in (lay.bridge, lay.outer_link):
            continue
        if r.get("type") == "unreachable" and dst == str(net):  # ours (bastion topology)
            continue
        try:
            other = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if other.overlaps(net) and other.prefixlen >= net.prefixlen:
            raise TestbedError(f"testbed subnet {net} overlaps route {dst} via {dev}: pick another subnet")
