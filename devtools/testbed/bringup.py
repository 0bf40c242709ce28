"""The Testbed: ``up`` (idempotent reconcile of what exists with what is asked for), ``status``,
``down`` and ``leftovers``, over the network, sshd, python and state parts."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import faults, imagehost, network, sshd
from .images import Image, ensure_images, resolve_images
from .layout import Layout
from .plan import HostPlan, TestbedHost, bastion_plan, etc_hosts_text, name_key, own_name, plan_hosts, tbf_args
from .pythons import DEFAULT_PYTHON, PythonSpec, resolve_pythons, write_wrappers
from .state import (
    STATE_FILES,
    Locked,
    all_records,
    check_owner,
    claim_owner,
    down_locked,
    host_from_record,
    host_record,
    leftover_names,
    load_state,
    lock,
    record_ok,
    records_by_name,
    teardown_hosts,
    write_state,
)
from .system import TOOL_ENV, TestbedError, link_exists, list_netns, netns_inode, pids_with, run_tool, write_atomic


class Testbed(Layout):
    """A local fleet of ``up(N)`` hosts named ``{prefix}1..N`` on ``10.213.{subnet}.0/24``,
    owned by ``state_dir`` (e.g. ``<project>/.testbed``); ``user=``/``bastion=``/``nat=`` (see
    Layout) choose the topology, ``sshd_limits=`` the hosts' sshd limits."""

    __test__ = False
    # The image of each image host of the ``up`` under way (hosts without one are absent).
    images: Mapping[str, Image] = MappingProxyType({})

    # ---- public API ----------------------------------------------------------------------

    def hosts(self) -> list[TestbedHost]:
        """The hosts recorded in hosts.json (whether or not they are healthy)."""
        state = load_state(self)
        if not state:
            return []
        return [host_from_record(r) for r in state["hosts"]]

    def up(self, hosts: int = 5, pythons: Mapping[str, str] | None = None, uplink: str | None = None,
           images: Mapping[str, str] | None = None) -> list[TestbedHost]:
        """Bring the testbed to ``hosts`` healthy hosts, python overrides and uplink shaping.

        Idempotent: healthy hosts that match are kept as they are (with the same count,
        pythons and uplink nothing changes); stale pieces (dead sshd, lost state file,
        leftover namespaces or links) are cleaned and rebuilt. ``images`` gives hosts a root
        filesystem of their own (see images, imagehost), built or taken from the cache first.
        """
        self._preflight(need_tc=True)
        plans = plan_hosts(self.prefix, self.subnet, hosts)
        rate_args = tbf_args(uplink) if uplink else None
        specs = resolve_pythons(plans, pythons or {})
        self.images = self._ready_images(plans, pythons or {}, images or {})
        if self.bastion:  # the bastion comes first: it is up before the hosts behind it
            front = bastion_plan(self.prefix, self.subnet)
            specs[front.name] = resolve_pythons([front], {})[front.name]
            plans = [front, *plans]
        with self._lock():
            check_owner(self)
            state = load_state(self)
            if state and (state.get("prefix") != self.prefix or state.get("subnet") != self.subnet
                          or state.get("runtime_dir") != str(self.runtime_dir)):
                # This state dir held a testbed with another prefix/subnet: remove it first.
                down_locked(self._former(state), state)
                state = None
            if state and {k: state.get(k) for k in self.topology()} != self.topology():
                down_locked(self, state)  # another login user or topology: every host is rebuilt
                state = None
            if state and self._healthy(state, plans, specs, uplink):
                return [host_from_record(r) for r in state["hosts"]]
            network.check_subnet_free(self)
            claim_owner(self)
            return self._reconcile(state, plans, specs, uplink, rate_args)

    def status(self) -> list[dict[str, Any]]:
        """Per recorded host: name, address, netns (+present), sshd pid (+alive), ssh
        answering, python; plus any leftover host of this prefix that is not recorded."""
        state = load_state(self)
        records = all_records(state)
        alive = pids_with(str(self.runtime_dir).encode() + b"/")

        def one(r: dict[str, Any]) -> dict[str, Any]:
            pid = r.get("sshd_pid") or 0
            ours = bool(pid) and pid in alive and sshd.host_marker(self.runtime_dir, r["name"]).encode() in alive[pid]
            present = netns_inode(r["netns"]) is not None
            return {
                "name": r["name"],
                "role": r.get("role", "host"),
                "address": r["address"],
                "netns": r["netns"],
                "netns_present": present,
                "sshd_pid": pid,
                "sshd_alive": ours,
                "ssh_answers": ours and present and sshd.answers(r, behind_bastion(state, r)),
                "python": r.get("python", DEFAULT_PYTHON),
                "python_version": r.get("python_version", ""),
                "image": (r.get("image") or {}).get("name"),
                "uplink": state.get("uplink") if state else None,
                "recorded": True,
            }

        with ThreadPoolExecutor(max_workers=16) as pool:
            rows = list(pool.map(one, records))
        recorded = {r["name"] for r in records}
        for name in sorted(set(leftover_names(self)) - recorded, key=name_key):
            rows.append({"name": name, "role": None, "address": None, "netns": f"fb-{name}",
                         "netns_present": netns_inode(f"fb-{name}") is not None, "sshd_pid": 0,
                         "sshd_alive": False, "ssh_answers": False, "python": None,
                         "python_version": "", "image": None, "uplink": None, "recorded": False})
        return rows

    def down(self) -> None:
        """End this testbed's sshds (by recorded pid, checked to be ours; anything running on
        a host ends with it), delete its namespaces, links, bridge, shaping and files."""
        self._preflight(need_tc=False, need_sshd=False)
        with self._lock():
            state = load_state(self)
            if state and (state.get("prefix") != self.prefix or state.get("subnet") != self.subnet):
                old = self._former(state)
                check_owner(old)
                down_locked(old, state)
                state = None
            check_owner(self)
            down_locked(self, state)
            try:
                self.runtime_dir.parent.rmdir()  # /run/fleetbench-testbed, if no other testbed
            except OSError:
                pass

    def leftovers(self) -> dict[str, list[str]]:
        """Kernel objects, processes and files of this testbed that exist right now (all
        empty after ``down``)."""
        netns = sorted((n for n in list_netns() if own_name(n, f"fb-{self.prefix}")), key=name_key)
        links = sorted((n for n in os.listdir("/sys/class/net") if n in (self.bridge, self.outer_link)
                        or own_name(n, f"fbv-{self.prefix}")), key=name_key)
        routes = [f"unreachable {self.network}"] if network.unreachable_route(self) else []
        routes += [str(self.public_network)] if network.public_route(self) else []
        routes += [f"nft table ip {self.nat_table}"] if network.nat_present(self) else []
        pids = sorted(str(p) for p in pids_with(str(self.runtime_dir).encode() + b"/"))
        files = []
        if self.state_dir.exists():
            files = sorted(str(p) for p in self.state_dir.iterdir()
                           if p.name in STATE_FILES or p.name == "hosts" or p.name.endswith(".tmp"))
        if self.runtime_dir.exists():
            files.append(str(self.runtime_dir))
        return {"netns": netns, "links": links, "routes": routes, "pids": pids, "files": files}

    # ---- faults (for the fleet tests; see faults.py) ---------------------------------------

    def cut_controller(self) -> None:
        faults.cut_controller(self)

    def restore_controller(self) -> None:
        faults.restore_controller(self)

    def freeze(self, name: str) -> list[int]:
        return faults.freeze(self, name)

    def thaw(self, name: str) -> list[int]:
        return faults.thaw(self, name)

    # ---- checks ----------------------------------------------------------------------------

    def _preflight(self, need_tc: bool, need_sshd: bool = True) -> None:
        if sys.platform != "linux":
            raise TestbedError("the testbed needs Linux (network, mount and PID namespaces)")
        if os.geteuid() != 0:
            raise TestbedError(
                "the testbed needs root: it creates network namespaces, veth links and a bridge,"
                " mounts tmpfs in private mount namespaces and runs an sshd on port 22 of every"
                " host. Run it as root (e.g. `sudo -E inv testbed.up`)."
            )
        if need_sshd and not (os.path.isfile(self.sshd) and os.access(self.sshd, os.X_OK)):
            raise TestbedError(f"no OpenSSH server at {self.sshd}: apt-get install openssh-server")
        needed = {"ip": "iproute2", "unshare": "util-linux", "setsid": "util-linux",
                  "ssh-keygen": "openssh-client", "mount": "mount"}
        if need_tc:
            needed["tc"] = "iproute2"
        if self.nat:
            needed["nft"] = "nftables"
        for tool, package in needed.items():
            if not shutil.which(tool, path=TOOL_ENV["PATH"]):
                raise TestbedError(f"the testbed needs `{tool}`: apt-get install {package}")
        if self.user and not os.path.isdir("/home"):
            raise TestbedError("a testbed login user needs a /home directory on this machine (hosts mount a"
                               " fresh tmpfs there for its home)")

    def _ready_images(self, plans: Sequence[HostPlan], pythons: Mapping[str, str],
                      images: Mapping[str, str]) -> dict[str, Image]:
        """Each image host's image, built or unpacked where the cache does not have it yet (before
        the testbeds' lock is taken: a first build takes minutes)."""
        wanted = resolve_images(plans, images)
        if wanted and self.user:
            raise TestbedError("--image is not supported with a login user (user=): image hosts log in as root")
        both = sorted(set(wanted) & set(pythons), key=name_key)
        if both:
            raise TestbedError(f"{both[0]} has both a python override and an image: an image host runs the"
                               " image's own python3")
        return ensure_images(wanted, log=lambda line: print(f"testbed: {line}", file=sys.stderr, flush=True))

    def _lock(self) -> Locked:
        return lock(self)

    def _former(self, state: Mapping[str, Any]) -> Testbed:
        """The testbed a state dir recorded under another prefix/subnet (to take it down)."""
        return Testbed(self.state_dir, prefix=state["prefix"], subnet=state["subnet"],
                       sshd=self.sshd, runtime_root=Path(state["runtime_dir"]).parent)

    def _healthy(self, state: dict[str, Any], plans: Sequence[HostPlan], specs: Mapping[str, PythonSpec],
                 uplink: str | None) -> bool:
        """Everything as wanted and alive: the fast no-op path of ``up``."""
        records = all_records(state)
        if [r.get("name") for r in records] != [p.name for p in plans]:
            return False
        if self.bastion and not link_exists(self.outer_link):
            return False
        if self.nat and not (network.nat_present(self) and network.public_route(self)):
            return False
        if state.get("uplink") != uplink or not network.shaping_matches(self, uplink):
            return False
        if not link_exists(self.bridge):
            return False
        for f in (self.ssh_config_path, self.known_hosts_path, self.key_path, self.etc_hosts_path,
                  self.resolv_conf_path):
            if not f.exists():
                return False
        if any(not record_ok(self, r, p, specs[p.name], self.images.get(p.name))
               for r, p in zip(records, plans, strict=False)):
            return False
        with ThreadPoolExecutor(max_workers=16) as pool:
            return all(pool.map(lambda r: sshd.answers(r, behind_bastion(state, r)), records))

    # ---- bring-up --------------------------------------------------------------------------

    def _reconcile(self, state: dict[str, Any] | None, plans: Sequence[HostPlan],
                   specs: Mapping[str, PythonSpec], uplink: str | None,
                   rate_args: list[str] | None) -> list[TestbedHost]:
        records = records_by_name(state)
        keep = {p.name for p in plans
                if p.name in records and record_ok(self, records[p.name], p, specs[p.name], self.images.get(p.name))}
        # Everything of ours that is not a healthy host we keep goes: stale, extra, changed.
        teardown_hosts(self, (set(records) | set(leftover_names(self))) - keep, records)
        if not keep and link_exists(self.bridge):
            run_tool(["ip", "link", "del", self.bridge])  # start the network clean too
        sshd.ensure_client_files(self)
        network.ensure_bridge(self)
        network.ensure_nat(self, list(plans))  # before the hosts start: their banners come through it
        # sshd's privilege separation directory (Debian's sshd service would create it).
        os.makedirs(sshd.PRIVSEP_DIR, mode=0o755, exist_ok=True)
        self._write_etc_hosts(read_base_etc_hosts(), plans)
        results: dict[str, dict[str, Any]] = {n: records[n] for n in keep}
        errors = self._start_hosts([p for p in plans if p.name not in keep], specs, results)
        network.apply_shaping(self, rate_args)
        ordered = [results[p.name] for p in plans]
        sshd.write_client_files(self, ordered)
        write_state(self, ordered, uplink)
        if errors:
            shown = list(errors.items())[:3]
            more = f"\n(and {len(errors) - 3} more hosts failed)" if len(errors) > 3 else ""
            raise TestbedError(
                f"{len(errors)} of {len(plans)} testbed hosts did not come up:\n"
                + "\n".join(f"{n}: {e}" for n, e in shown) + more
                + f"\n(`down` cleans up; logs are in {self.state_dir / 'hosts'})"
            )
        return [host_from_record(r) for r in ordered if r.get("role") != "bastion"]

    def _start_hosts(self, new: Sequence[HostPlan], specs: Mapping[str, PythonSpec],
                     results: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Prepare, link and start hosts ``new`` in parallel; their records go to ``results``,
        the error of each host that did not come up is returned."""
        errors: dict[str, str] = {}
        if not new:
            return errors
        version = sshd.openssh_version(self.sshd)

        def prepare(p: HostPlan) -> None:
            write_wrappers(self, p.name, specs[p.name], sshd.make_host_keys(self, p) / "bin")

        def start(p: HostPlan) -> tuple[HostPlan, dict[str, Any] | None, str | None]:
            try:
                network.configure_host_network(self, p)
                image = self.images.get(p.name)
                script = imagehost.launch_script(self, p, image) if image else None
                pid = sshd.launch_sshd(self, p, specs[p.name], version, script)
                record = host_record(self, p, specs[p.name], pid, netns_inode(p.netns), sshd.mount_namespace(pid),
                                     image)
                return p, record, None
            except TestbedError as e:
                return p, None, str(e)

        with ThreadPoolExecutor(max_workers=min(16, len(new))) as pool:
            list(pool.map(prepare, new))
            network.add_host_links(self, new)
            for p, rec, err in pool.map(start, new):
                if err or rec is None:
                    errors[p.name] = err or "no record"
                    results[p.name] = host_record(self, p, specs[p.name], 0, None, "", self.images.get(p.name))
                else:
                    results[p.name] = rec
        return errors

    def _write_etc_hosts(self, base: str, plans: Sequence[HostPlan]) -> None:
        # In place (same inode): running hosts have this file bind-mounted as /etc/hosts.
        text = etc_hosts_text(base, [(p.name, p.address) for p in plans], self.prefix)
        if not self.etc_hosts_path.exists():
            write_atomic(self.etc_hosts_path, text)
            return
        with open(self.etc_hosts_path, "r+") as f:
            if f.read() != text:
                f.seek(0)
                f.truncate()
                f.write(text)


def behind_bastion(state: Mapping[str, Any] | None, record: Mapping[str, Any]) -> bool:
    """A recorded host the controller cannot reach itself (it is behind the bastion)."""
    return bool((state or {}).get("bastion")) and record.get("role") != "bastion"


def read_base_etc_hosts() -> str:
    try:
        text = Path("/etc/hosts").read_text()
    except OSError:
        return "127.0.0.1\tlocalhost\n"
    # Drop a testbed section in case /etc/hosts is itself a testbed's (run from inside a host).
    return text.split("# fleetbench testbed ")[0]
