"""The testbed's record on disk (``hosts.json``), its ownership and lock, and crash recovery:
finding what of a testbed exists (recorded or not) and taking it down."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .images import Image, image_matches, image_record_fields
from .layout import Layout
from .network import remove_bridge, remove_host_links
from .plan import HostPlan, TestbedHost, name_key, own_name
from .pythons import DEFAULT_PYTHON, PythonSpec
from .sshd import host_marker
from .system import TestbedError, list_netns, netns_inode, pids_with, proc_alive, proc_cmdline, terminate, write_atomic

STATE_VERSION = 1

# Files of a testbed in its state dir (plus the "hosts" directory of per-host files).
STATE_FILES = ("hosts.json", "ssh_config", "known_hosts", "id_ed25519", "id_ed25519.pub",
               "authorized_keys", "etc_hosts", "resolv.conf", "passwd", "group")


def host_record(lay: Layout, p: HostPlan, spec: PythonSpec, pid: int, netns_inode: int | None,
                mntns: str, image: Image | None = None) -> dict[str, Any]:
    """What hosts.json keeps of a host; "address" is where the controller's ssh reaches it
    (behind the NAT its public address; "private_address" is then where it listens)."""
    bastion = {"role": "bastion", "fleet_address": p.address} if lay.bastion and p.index == 0 else {}
    private = {"private_address": lay.ssh_address(p)} if lay.reached_at(p) != lay.ssh_address(p) else {}
    record = {
        "name": p.name,
        "address": lay.reached_at(p),
        **private,
        **bastion,
        "user": lay.login,
        "netns": p.netns,
        "veth": p.veth,
        "sshd_pid": pid,
        "python": spec.path,
        "python_version": spec.version,
        "python_on_host": "/usr/local/bin/python3" if not spec.is_default else DEFAULT_PYTHON,
        "netns_inode": netns_inode,
        "mntns": mntns,
    }
    return {**record, **image_record_fields(image)} if image else record


def host_from_record(r: Mapping[str, Any]) -> TestbedHost:
    return TestbedHost(name=r["name"], address=r["address"], netns=r["netns"], sshd_pid=int(r.get("sshd_pid") or 0),
                       python=r.get("python", DEFAULT_PYTHON), python_version=r.get("python_version", ""),
                       image=str((r.get("image") or {}).get("name", "")))



def record_ok(lay: Layout, r: Mapping[str, Any], plan: HostPlan, spec: PythonSpec,
              image: Image | None = None) -> bool:
    """The recorded host is the one planned (with the image planned), and its sshd is alive in
    its own namespace."""
    if not image_matches(r, image):
        return False
    if (r.get("address"), r.get("netns")) != (lay.reached_at(plan), plan.netns):
        return False
    if not image and (r.get("python"), r.get("python_version")) != (spec.path, spec.version):
        return False
    ino = netns_inode(plan.netns)
    if ino is None or ino != r.get("netns_inode"):
        return False
    pid = r.get("sshd_pid") or 0
    if not pid or not proc_alive(pid):
        return False
    if host_marker(lay.runtime_dir, plan.name).encode() not in proc_cmdline(pid):
        return False
    try:
        if os.readlink(f"/proc/{pid}/ns/net") != f"net:[{ino}]":
            return False
    except OSError:
        return False
    return (lay.host_dir(plan.name) / "ssh_host_ed25519_key.pub").exists()


def all_records(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every host of a recorded testbed: its bastion (if any) first, then the fleet."""
    bastion = (state or {}).get("bastion")
    hosts = [r for r in (state or {}).get("hosts", []) if isinstance(r, dict) and "name" in r]
    return ([bastion] if isinstance(bastion, dict) and "name" in bastion else []) + hosts


def records_by_name(state: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in all_records(state)}


# ---- the record ------------------------------------------------------------------------------


def load_state(lay: Layout) -> dict[str, Any] | None:
    try:
        state = json.loads(lay.hosts_json_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None
    if not isinstance(state.get("hosts"), list) or "prefix" not in state or "subnet" not in state:
        return None
    state.setdefault("runtime_dir", str(lay.runtime_dir))
    return state


def write_state(lay: Layout, records: Sequence[dict[str, Any]], uplink: str | None) -> None:
    """hosts.json: the testbed, its fleet under "hosts" and its bastion (the record with role
    "bastion") under "bastion"."""
    bastion = next((r for r in records if r.get("role") == "bastion"), None)
    state = {
        "version": STATE_VERSION,
        "prefix": lay.prefix,
        "subnet": lay.subnet,
        "network": str(lay.network),
        "bridge": lay.bridge,
        "bridge_address": lay.bridge_address,
        "uplink": uplink,
        "state_dir": str(lay.state_dir),
        "runtime_dir": str(lay.runtime_dir),
        "ssh_config": str(lay.ssh_config_path),
        "known_hosts": str(lay.known_hosts_path),
        "key": str(lay.key_path),
        **lay.topology(),
        "bastion": bastion,
        "hosts": [r for r in records if r is not bastion],
    }
    write_atomic(lay.hosts_json_path, json.dumps(state, indent=2) + "\n")


# ---- ownership and locking -------------------------------------------------------------------


class Locked:
    """An exclusive flock on a directory, held while a testbed is changed."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Locked:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def lock(lay: Layout) -> Locked:
    # The directory that holds RUNTIME_ROOT (/run): always there, so the lock leaves no
    # file behind. One lock for all testbeds: their subnet checks cannot race either.
    return Locked(lay.runtime_dir.parent.parent)


def claim_owner(lay: Layout) -> None:
    """Check ownership of the prefix, then record this state dir as its owner."""
    check_owner(lay)
    lay.runtime_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(lay.runtime_dir / "owner", str(lay.state_dir) + "\n")


def check_owner(lay: Layout) -> None:
    """One state dir per prefix: refuse to touch a live testbed another state dir owns."""
    owner_file = lay.runtime_dir / "owner"
    try:
        owner = owner_file.read_text().strip()
    except OSError:
        owner = ""
    if owner and owner != str(lay.state_dir):
        other = Path(owner) / "hosts.json"
        try:
            other_state = json.loads(other.read_text())
        except (OSError, ValueError):
            other_state = None
        if other_state and other_state.get("prefix") == lay.prefix:
            raise TestbedError(
                f"testbed prefix {lay.prefix!r} is in use by the testbed in {owner}:"
                f" bring that one down, or use another prefix (and subnet)"
            )


# ---- what exists, and taking it down ---------------------------------------------------------


def leftover_names(lay: Layout) -> list[str]:
    """Host names of this prefix that have a namespace, a link or a process."""
    names = set()
    for n in list_netns():
        if own_name(n, f"fb-{lay.prefix}"):
            names.add(n[3:])
    try:
        links = os.listdir("/sys/class/net")
    except OSError:
        links = []
    for n in links:
        if own_name(n, f"fbv-{lay.prefix}"):
            names.add(n[4:])
    pat = re.compile(re.escape(str(lay.runtime_dir)).encode() + rb"/(" + lay.prefix.encode() + rb"[0-9]+)/sshd/")
    for cmd in pids_with(str(lay.runtime_dir).encode() + b"/").values():
        m = pat.search(cmd)
        if m:
            names.add(m.group(1).decode())
    return sorted(names, key=name_key)


def teardown_hosts(lay: Layout, names: Iterable[str], records: Mapping[str, dict[str, Any]]) -> None:
    """End, unlink and forget hosts ``names`` (recorded or only found lying around)."""
    names = sorted(set(names), key=name_key)
    if not names:
        return
    live = pids_with(str(lay.runtime_dir).encode() + b"/")
    kill = set()
    for name in names:
        marker = host_marker(lay.runtime_dir, name).encode()
        rec = records.get(name) or {}
        pid = rec.get("sshd_pid") or 0
        if pid and pid in live and marker in live[pid]:
            kill.add(pid)
        # Also a launcher or sshd of this host that the record does not know (lost state).
        kill.update(p for p, cmd in live.items() if marker in cmd)
    stuck = terminate(kill)
    if stuck:
        raise TestbedError(f"testbed processes would not end even with SIGKILL: {stuck}")
    left = remove_host_links(names)
    for name in names:
        shutil.rmtree(lay.host_dir(name), ignore_errors=True)
        remove_runtime_host_dir(lay, name)
    if left:
        raise TestbedError(f"could not remove the namespaces/links of testbed hosts {left}")


def down_locked(lay: Layout, state: Mapping[str, Any] | None) -> None:
    """Everything of this testbed goes: hosts, bridge, state files, runtime dir."""
    records = records_by_name(state)
    teardown_hosts(lay, set(records) | set(leftover_names(lay)), records)
    remove_bridge(lay)
    hosts_dir = lay.state_dir / "hosts"
    if hosts_dir.is_dir():
        for child in hosts_dir.iterdir():  # only what has the name of one of our hosts
            if own_name(child.name, lay.prefix) and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
        _rmdir(hosts_dir)
    for name in STATE_FILES:
        for p in (lay.state_dir / name, lay.state_dir / (name + ".tmp")):
            try:
                if not p.is_dir():
                    p.unlink()
            except OSError:
                pass
    _rmdir(lay.state_dir)
    if lay.runtime_dir.is_dir():
        for child in lay.runtime_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                remove_runtime_host_dir(lay, child.name)
        for leftover in ("owner", "owner.tmp"):
            try:
                (lay.runtime_dir / leftover).unlink()
            except OSError:
                pass
        _rmdir(lay.runtime_dir)


def remove_runtime_host_dir(lay: Layout, name: str) -> None:
    """Remove a host's mount points under the runtime dir with rmdir only: never a
    recursive delete there (were a bind mount ever visible, rmtree would go through it)."""
    rt = lay.runtime_dir / name
    for sub in ("sshd", "python", "image"):
        _rmdir(rt / sub)
    _rmdir(rt)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
