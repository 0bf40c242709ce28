"""Where a testbed's pieces live: its state dir (keys, client files, the record, per-host
files), its runtime dir (the hosts' mount points) and its network names."""

from __future__ import annotations

import os
from pathlib import Path

from .plan import (
    HostPlan,
    bridge_address,
    bridge_name,
    nat_table,
    network_for,
    outer_addresses,
    outer_link_name,
    public_address,
    public_network,
    validate_prefix,
)
from .system import TestbedError
from .users import LoginUser, plan_user, read_base

SSHD = "/usr/sbin/sshd"
RUNTIME_ROOT = Path("/run/fleetbench-testbed")
#: The hosts' sshd limits: "stock" is OpenSSH's own defaults (what a cloud image ships:
#: beyond 10 unauthenticated connections new ones are dropped at random, 10 sessions per
#: connection), "relaxed" (the default) lifts both to 100.
SSHD_LIMITS = {"stock": ("10:30:100", "10"), "relaxed": ("100", "100")}


class Layout:
    """The names and paths of the testbed ``prefix`` on ``10.213.{subnet}.0/24``, owned by
    ``state_dir``; every part of the testbed works from one of these. ``user``: hosts log in
    as that unprivileged user (else root); ``bastion``: the fleet is reached only through
    the bastion host ``{prefix}0``; ``nat``: the controller reaches hosts only at public
    addresses translated 1:1 to their private ones (see plan.nat_ruleset); ``sshd_limits``:
    "relaxed" or "stock" (SSHD_LIMITS)."""

    def __init__(self, state_dir: Path | str, *, prefix: str = "tb", subnet: int = 0,
                 sshd: str = SSHD, start_timeout: float = 15.0, runtime_root: Path | str = RUNTIME_ROOT,
                 user: str | None = None, bastion: bool = False, nat: bool = False, sshd_limits: str = "relaxed"):
        self.state_dir = Path(os.path.realpath(os.path.expanduser(str(state_dir))))
        self.prefix = validate_prefix(prefix)
        self.subnet = subnet
        self.network = network_for(subnet)
        self.bridge = bridge_name(prefix)
        self.bridge_address = bridge_address(subnet)
        self.sshd = sshd
        self.start_timeout = start_timeout
        self.runtime_dir = Path(runtime_root) / self.prefix
        self.user: LoginUser | None = (plan_user(user, read_base("/etc/passwd"), read_base("/etc/group"))
                                       if user else None)
        self.bastion = bool(bastion)
        self.outer_link = outer_link_name(prefix)
        self.nat = bool(nat)
        self.public_network = public_network(subnet)
        self.nat_table = nat_table(prefix)
        if sshd_limits not in SSHD_LIMITS:
            raise TestbedError(f"bad sshd limits {sshd_limits!r}: one of {', '.join(SSHD_LIMITS)}")
        self.sshd_limits = sshd_limits

    @property
    def login(self) -> str:
        """The user every host (and the bastion) is logged in as."""
        return self.user.name if self.user else "root"

    @property
    def uplink_device(self) -> str:
        """Where the controller's traffic to the fleet leaves the root namespace (for shaping)."""
        return self.outer_link if self.bastion else self.bridge

    def ssh_address(self, plan: HostPlan) -> str:
        """Where a host's sshd listens: the bastion on its outer link, a host on the fleet."""
        return outer_addresses(self.subnet)[1] if self.bastion and plan.index == 0 else plan.address

    def reached_at(self, plan: HostPlan) -> str:
        """Where the controller's ssh reaches a host: its public address behind the NAT (only
        the bastion's, with one: the hosts behind it are reached through it), else where it listens."""
        if self.nat and (not self.bastion or plan.index == 0):
            return public_address(self.subnet, plan.index)
        return self.ssh_address(plan)

    def nat_pairs(self, plans: list[HostPlan]) -> list[tuple[str, str]]:
        """(public, private) of every host the NAT translates."""
        return [(self.reached_at(p), self.ssh_address(p)) for p in plans if self.reached_at(p) != self.ssh_address(p)]

    def topology(self) -> dict[str, object]:
        """What hosts.json records of the user, bastion, NAT and sshd limits: a change rebuilds
        every host. (The sshd limits are recorded only when not the default, so a testbed
        recorded before they existed is kept.)"""
        shape = "+".join([*(["bastion"] if self.bastion else []), *(["nat"] if self.nat else [])]) or "flat"
        return {"user": self.user.name if self.user else None, "topology": shape,
                "sshd_limits": None if self.sshd_limits == "relaxed" else self.sshd_limits}

    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def hosts_json_path(self) -> Path:
        return self.state_dir / "hosts.json"

    @property
    def authorized_keys_path(self) -> Path:
        return self.state_dir / "authorized_keys"

    @property
    def etc_hosts_path(self) -> Path:
        return self.state_dir / "etc_hosts"

    @property
    def resolv_conf_path(self) -> Path:
        return self.state_dir / "resolv.conf"

    @property
    def passwd_path(self) -> Path:
        return self.state_dir / "passwd"

    @property
    def group_path(self) -> Path:
        return self.state_dir / "group"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    def sshd_mount(self, name: str) -> str:
        """Where a host sees its own ``host_dir`` (bind-mounted before /root and /tmp are hidden)."""
        return f"{self.runtime_dir}/{name}/sshd"

    def python_mount(self, name: str) -> str:
        """Where a host sees a relocated interpreter prefix (read-only)."""
        return f"{self.runtime_dir}/{name}/python"
