"""Where a testbed's pieces live: its state dir (keys, client files, the record, per-host
files), its runtime dir (the hosts' mount points) and its network names."""

from __future__ import annotations

import os
from pathlib import Path

from .plan import HostPlan, bridge_address, bridge_name, network_for, outer_addresses, outer_link_name, validate_prefix
from .users import LoginUser, plan_user, read_base

SSHD = "/usr/sbin/sshd"
RUNTIME_ROOT = Path("/run/fleetbench-testbed")


class Layout:
    """The names and paths of the testbed ``prefix`` on ``10.213.{subnet}.0/24``, owned by
    ``state_dir``; every part of the testbed works from one of these. ``user``: hosts log in
    as that unprivileged user (else root); ``bastion``: the fleet is reached only through
    the bastion host ``{prefix}0``."""

    def __init__(self, state_dir: Path | str, *, prefix: str = "tb", subnet: int = 0,
                 sshd: str = SSHD, start_timeout: float = 15.0, runtime_root: Path | str = RUNTIME_ROOT,
                 user: str | None = None, bastion: bool = False):
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

    def topology(self) -> dict[str, object]:
        """What hosts.json records of the user and bastion: a change rebuilds every host."""
        return {"user": self.user.name if self.user else None, "topology": "bastion" if self.bastion else "flat"}

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
