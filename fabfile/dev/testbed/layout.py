"""Where a testbed's pieces live: its state dir (keys, client files, the record, per-host
files), its runtime dir (the hosts' mount points) and its network names."""

from __future__ import annotations

import os
from pathlib import Path

from .plan import bridge_address, bridge_name, network_for, validate_prefix

SSHD = "/usr/sbin/sshd"
RUNTIME_ROOT = Path("/run/fleetbench-testbed")


class Layout:
    """The names and paths of the testbed ``prefix`` on ``10.213.{subnet}.0/24``, owned by
    ``state_dir``; every part of the testbed works from one of these."""

    def __init__(self, state_dir: Path | str, *, prefix: str = "tb", subnet: int = 0,
                 sshd: str = SSHD, start_timeout: float = 15.0, runtime_root: Path | str = RUNTIME_ROOT):
        self.state_dir = Path(os.path.realpath(os.path.expanduser(str(state_dir))))
        self.prefix = validate_prefix(prefix)
        self.subnet = subnet
        self.network = network_for(subnet)
        self.bridge = bridge_name(prefix)
        self.bridge_address = bridge_address(subnet)
        self.sshd = sshd
        self.start_timeout = start_timeout
        self.runtime_dir = Path(runtime_root) / self.prefix

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

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    def sshd_mount(self, name: str) -> str:
        """Where a host sees its own ``host_dir`` (bind-mounted before /root and /tmp are hidden)."""
        return f"{self.runtime_dir}/{name}/sshd"

    def python_mount(self, name: str) -> str:
        """Where a host sees a relocated interpreter prefix (read-only)."""
        return f"{self.runtime_dir}/{name}/python"
