"""The testbed: a local fleet of real hosts, each a real OpenSSH sshd in its own namespaces.

Every host ``{prefix}{i}`` is

* a network namespace ``fb-{prefix}{i}`` holding ``lo`` and ``eth0``; ``eth0`` is one end of a
  veth pair whose other end (``fbv-{prefix}{i}``) is a port of a private bridge
  ``fbbr-{prefix}`` in the root namespace. The bridge has ``.1`` of ``10.213.{subnet}.0/24``
  (the controller's address on the fleet network); host ``i`` has ``.{10+i}``.
* a private mount namespace (propagation private) in which fresh tmpfs are mounted on
  ``/root`` (700), ``/tmp``, ``/var/tmp``, ``/dev/shm`` (1777) and ``/usr/local/bin`` (755),
  so every host starts with an empty home and /tmp and nothing it writes there is seen by
  another host or by the controller. ``/etc/hosts`` lists every testbed host (updated in
  place when the fleet grows); ``/etc/resolv.conf`` points nowhere, so an unknown name fails
  at once (nothing routes out of the testbed). MACs are fixed per address (``02:fb:`` + the
  IPv4 octets) so a rebuilt host is reachable at once, with no stale ARP entry anywhere.
* a private UTS namespace (``hostname`` is the host's name) and a private PID namespace
  whose pid 1 is the host's sshd (``sshd -D``): a host sees only its own processes
  (``pkill`` on one host cannot hit another), and ending that sshd ends everything that
  runs on the host, like powering it off.

What sshd needs after ``/root`` and ``/tmp`` are hidden (host key, authorized_keys, pid
file, log) lives in ``<state_dir>/hosts/<name>/`` and is bind-mounted, before hiding, at
``/run/fleetbench-testbed/<prefix>/<name>/sshd``: that works wherever the project clone
(and so ``state_dir``) sits, /tmp and /root included. A per-host Python (``pythons=``) whose
prefix is hidden on the host (pyenv under /root, anything under /tmp) is bind-mounted
read-only at ``/run/fleetbench-testbed/<prefix>/<name>/python`` and ``python3`` in the
host's own ``/usr/local/bin`` runs it (``LD_LIBRARY_PATH`` set for a shared libpython whose
RUNPATH points into the hidden prefix; ssh sessions on that host get it too).

``<state_dir>`` also holds the client key, ``ssh_config``, ``known_hosts`` (each host's
real key under its alias and address: strict checking works) and ``hosts.json``, the record
``status``/``down`` and the next ``up`` work from. Needs root.

``uplink="20mbit"`` puts a tbf qdisc on the bridge's own egress: that carries only what the
root namespace (the controller) sends to hosts; frames forwarded between bridge ports
(host to host) never pass it, and neither does what hosts send to the controller.

Library use (the invoke tasks wrap exactly this)::

    tb = Testbed(project / ".testbed", prefix="tb", subnet=0)
    hosts = tb.up(5, parse_python_overrides(["tb3=/root/.pyenv/versions/3.9.18/bin/python3.9"]),
                  uplink="20mbit")
    tb.status(); tb.down()
    # then: ssh -F .testbed/ssh_config tb1 ...   /   fabric Connection("tb1", ssh_config=...)
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PYTHON",
    "MAX_HOSTS",
    "HostPlan",
    "PythonSpec",
    "Testbed",
    "TestbedError",
    "TestbedHost",
    "known_hosts_text",
    "mac_for",
    "network_for",
    "parse_python_overrides",
    "parse_rate",
    "plan_hosts",
    "ssh_config_text",
    "tbf_args",
    "validate_prefix",
]

DEFAULT_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"
RUNTIME_ROOT = Path("/run/fleetbench-testbed")
SSH_PORT = 22
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
STATE_VERSION = 1
# Hosts cannot reach the machine's resolver (nothing routes out of the testbed): a name that
# is not in /etc/hosts fails at once instead of after resolver timeouts.
RESOLV_CONF = (
    "# fleetbench testbed: no DNS inside the testbed; host names are in /etc/hosts\n"
    "nameserver 127.0.0.1\n"
    "options timeout:1 attempts:1\n"
)
_TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_PY_PROBE = (
    "import sys, json; print(json.dumps({'version': '%d.%d.%d' % tuple(sys.version_info[:3]),"
    " 'prefix': sys.prefix, 'base_prefix': getattr(sys, 'base_prefix', sys.prefix),"
    " 'base_exec_prefix': getattr(sys, 'base_exec_prefix', sys.exec_prefix),"
    " 'executable': sys.executable}))"
)


class TestbedError(RuntimeError):
    """Anything that stops the testbed from coming up, reporting or going down."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------------------------
# Pure planning (no root, no side effects): unit-tested in tests/unit/test_testbed_pure.py
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class HostPlan:
    """Names and address of host ``index`` of a testbed (pure function of prefix/subnet)."""

    index: int
    name: str  # ssh alias and hostname, e.g. tb3
    address: str  # e.g. 10.213.0.13
    netns: str  # e.g. fb-tb3
    veth: str  # root-namespace end of the veth pair, e.g. fbv-tb3 (<= 15 chars)


@dataclass(frozen=True)
class PythonSpec:
    """An interpreter chosen for a host, probed on the controller."""

    path: str  # as given (absolute)
    executable: str  # realpath of the binary
    version: str  # e.g. "3.9.18"
    prefix: str  # realpath of sys.base_prefix
    relocate: bool  # prefix (or binary) is hidden on hosts: bind it in at a neutral path
    relative_executable: str  # executable relative to prefix, e.g. bin/python3.9

    @property
    def is_default(self) -> bool:
        return self.path == DEFAULT_PYTHON

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])


_PREFIX_RE = re.compile(r"^[a-z]([a-z0-9]*[a-z])?$")
_HOSTNAME_RE = re.compile(r"^(?P<prefix>[a-z]([a-z0-9]*[a-z])?)(?P<index>[1-9][0-9]*)$")


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


def parse_python_overrides(values: Iterable[str]) -> dict[str, str]:
    """``["tb3=/path/python3.9", "*=/usr/bin/python3.11"]`` -> ``{"tb3": "/path/...", ...}``.

    ``*`` sets the interpreter of every host without its own entry. Paths are returned as
    given, with ``~`` expanded; whether a host exists and the path runs is checked by ``up``.
    """
    if isinstance(values, str):
        values = [values]
    out: dict[str, str] = {}
    for raw in values:
        value = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(value, str) or "=" not in value:
            raise TestbedError(f"bad python override {raw!r}: expected HOST=PATH, e.g. tb3=/usr/bin/python3.9")
        name, _, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not name:
            raise TestbedError(f"bad python override {raw!r}: no host name before '='")
        if not path:
            raise TestbedError(f"bad python override {raw!r}: no interpreter path after '='")
        if name != "*" and not _HOSTNAME_RE.match(name):
            raise TestbedError(
                f"bad python override {raw!r}: {name!r} is not a testbed host name (like tb3) or '*'"
            )
        if name in out:
            raise TestbedError(f"python override for {name!r} given twice ({out[name]!r} and {path!r})")
        out[name] = os.path.expanduser(path)
    return out


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


def _cfg_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_config_text(hosts: Sequence[tuple[str, str]], *, key_path: str, known_hosts_path: str) -> str:
    """ssh_config with a ``Host`` block per ``(alias, address)``: strict host key checking
    against the testbed's own known_hosts, only the testbed's key offered."""
    lines = ["# fleetbench testbed: written by fabfile/testbed.py; `ssh -F THIS_FILE <host>`", ""]
    for alias, address in hosts:
        lines += [
            f"Host {alias}",
            f"    HostName {address}",
            "    User root",
            f"    Port {SSH_PORT}",
            f"    IdentityFile {_cfg_value(key_path)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {_cfg_value(known_hosts_path)}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "",
        ]
    return "\n".join(lines)


def known_hosts_text(entries: Sequence[tuple[str, str, str]]) -> str:
    """known_hosts lines ``alias,address keytype base64`` from ``(alias, address, pubkey)``."""
    out = []
    for alias, address, pubkey in entries:
        parts = pubkey.split()
        if len(parts) < 2:
            raise TestbedError(f"bad host public key for {alias}: {pubkey!r}")
        out.append(f"{alias},{address} {parts[0]} {parts[1]}")
    return "\n".join(out) + ("\n" if out else "")


def etc_hosts_text(base: str, hosts: Sequence[tuple[str, str]], prefix: str) -> str:
    """The machine's /etc/hosts plus a line per testbed host (what hosts see as /etc/hosts)."""
    text = base if base.endswith("\n") or not base else base + "\n"
    text += f"# fleetbench testbed '{prefix}'\n"
    text += "".join(f"{address}\t{alias}\n" for alias, address in hosts)
    return text


def host_marker(runtime_dir: Path, name: str) -> str:
    """A string in the command line of (only) this host's sshd and its launcher."""
    return f"{runtime_dir}/{name}/sshd/"


def sshd_argv(*, sshd: str, mount: str, address: str, ld_library_path: str | None = None,
              per_source_penalties: bool = False) -> list[str]:
    """The host's sshd: foreground (it is pid 1 of the host), config only from ``-o``."""
    o = [
        f"HostKey={mount}/ssh_host_ed25519_key",
        f"AuthorizedKeysFile={mount}/authorized_keys",
        f"PidFile={mount}/sshd.nspid",  # sshd's own view: 1 (it is the host's init)
        f"ListenAddress={address}:{SSH_PORT}",
        "StrictModes=no",
        "PermitRootLogin=prohibit-password",
        "PubkeyAuthentication=yes",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "UsePAM=no",
        "Subsystem=sftp internal-sftp",
        "MaxStartups=100",
        "MaxSessions=100",
        "UseDNS=no",
        "PrintMotd=no",
        "PrintLastLog=no",
        "X11Forwarding=no",
    ]
    if per_source_penalties:  # OpenSSH >= 9.8 would throttle a controller opening many channels
        o.append("PerSourcePenalties=no")
    if ld_library_path:
        o.append(f"SetEnv=LD_LIBRARY_PATH={ld_library_path}")
    argv = [sshd, "-D", "-f", "/dev/null"]
    for opt in o:
        argv += ["-o", opt]
    return argv + ["-E", f"{mount}/sshd.log"]


def host_script(*, host_dir: str, mount: str, etc_hosts: str, hostname: str, argv: Sequence[str],
                resolv_conf: str | None = None,
                python_prefix: str | None = None, python_mount: str | None = None,
                wrappers: Sequence[str] = (), tmpfs: Sequence[tuple[str, str]] = HOST_TMPFS) -> str:
    """The shell run as pid 1 of a new host (inside its netns, mount, UTS and PID namespaces).

    Binds in what must stay reachable, then hides /root, /tmp, ... under fresh tmpfs, then
    becomes sshd. Its pid as seen from the root pid namespace goes to ``sshd.pid``.
    """
    q = shlex.quote
    lines = [
        "set -e",
        # Our pid in the root pid namespace: the host's /proc is not mounted yet.
        # (read by the shell itself: /proc/self of a child would be the child)
        "pid=",
        'while read -r key value _; do if [ "$key" = NSpid: ]; then pid=$value; fi; done </proc/self/status',
        '[ -n "$pid" ]',
        f"mount --bind {q(host_dir)} {q(mount)}",
        f'echo "$pid" > {q(mount + "/sshd.pid.tmp")}',
        f"mv {q(mount + '/sshd.pid.tmp')} {q(mount + '/sshd.pid')}",
    ]
    if python_prefix:
        assert python_mount
        lines += [
            f"mount --bind {q(python_prefix)} {q(python_mount)}",
            f"mount -o remount,bind,ro {q(python_mount)}",
        ]
    lines += [
        f"mount --bind {q(etc_hosts)} /etc/hosts",
        "mount -o remount,bind,ro /etc/hosts",
    ]
    if resolv_conf:
        lines += [
            f"mount --bind {q(resolv_conf)} /etc/resolv.conf",
            "mount -o remount,bind,ro /etc/resolv.conf",
        ]
    for path, mode in tmpfs:
        lines.append(f"if [ -d {q(path)} ]; then mount -t tmpfs -o mode={mode} tmpfs {q(path)}; fi")
    lines.append("mount -t proc proc /proc")
    for w in wrappers:
        lines.append(f"cp {q(mount + '/bin/' + w)} /usr/local/bin/{q(w)}")
    lines.append(f"hostname {q(hostname)}")
    lines.append("exec " + " ".join(q(a) for a in argv))
    return "\n".join(lines) + "\n"


def wrapper_text(spec: PythonSpec, run_path: str, lib_path: str | None, mount: str | None = None) -> str:
    """/usr/local/bin/python3 on a host with an overridden interpreter."""
    lines = [
        "#!/bin/sh",
        f"# fleetbench testbed: python3 here is {spec.path} ({spec.version})",
    ]
    if mount:
        lines.append(f"# its prefix {spec.prefix} is bind-mounted read-only at {mount}")
    if lib_path:
        lines += [
            f'case ":${{LD_LIBRARY_PATH:-}}:" in *":{lib_path}:"*) ;; '
            f'*) LD_LIBRARY_PATH="{lib_path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"; export LD_LIBRARY_PATH ;; esac',
        ]
    lines.append(f'exec {shlex.quote(run_path)} "$@"')
    return "\n".join(lines) + "\n"


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


# --------------------------------------------------------------------------------------------
# Small system helpers
# --------------------------------------------------------------------------------------------


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                            env=_TOOL_ENV, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from e
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        if input:
            detail += "\n-- input --\n" + input.strip()
        raise TestbedError(f"`{shlex.join(argv)}` failed (exit {cp.returncode}): {detail}")
    return cp


def _ip_batch(lines: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    _run(argv, input="\n".join(lines) + "\n", check=not force)


def _proc_cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _proc_alive(pid: int) -> bool:
    """Running (a zombie counts as gone: on some inits they linger until reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _pids_with(marker: bytes) -> dict[int, bytes]:
    """Every live process whose command line contains ``marker``."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if pid == os.getpid():
                continue
            cmd = _proc_cmdline(pid)
            if marker in cmd and _proc_alive(pid):
                out[pid] = cmd
    return out


def _terminate(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGTERM, wait, SIGKILL what is left. Returns pids that would not die."""
    pids = [p for p in set(pids) if _proc_alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _proc_alive(p)]
            if pids:
                time.sleep(0.01)
        if not pids:
            break
    return pids


def _ssh_banner(address: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, SSH_PORT), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else f"({path.name} is empty)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _netns_inode(netns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _sshd_version(sshd: str) -> tuple[int, int]:
    try:
        cp = subprocess.run([sshd, "-V"], capture_output=True, text=True, env=_TOOL_ENV, timeout=5,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", cp.stderr + cp.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# --------------------------------------------------------------------------------------------
# The testbed
# --------------------------------------------------------------------------------------------


class Testbed:
    """A local fleet of ``up(N)`` hosts named ``{prefix}1..N`` on ``10.213.{subnet}.0/24``,
    owned by ``state_dir`` (e.g. ``<project>/.testbed``)."""

    __test__ = False

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

    # ---- paths ---------------------------------------------------------------------------

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

    def _mount(self, name: str) -> str:
        return f"{self.runtime_dir}/{name}/sshd"

    def _python_mount(self, name: str) -> str:
        return f"{self.runtime_dir}/{name}/python"

    # ---- public API ----------------------------------------------------------------------

    def hosts(self) -> list[TestbedHost]:
        """The hosts recorded in hosts.json (whether or not they are healthy)."""
        state = self._load_state()
        if not state:
            return []
        return [_host_from_record(r) for r in state["hosts"]]

    def up(self, hosts: int = 5, pythons: Mapping[str, str] = {}, uplink: str | None = None,
           ) -> list[TestbedHost]:
        """Bring the testbed to ``hosts`` healthy hosts, python overrides and uplink shaping.

        Idempotent: healthy hosts that match are kept as they are (with the same count,
        pythons and uplink nothing changes); stale pieces (dead sshd, lost state file,
        leftover namespaces or links) are cleaned and rebuilt.
        """
        self._preflight(need_tc=True)
        plans = plan_hosts(self.prefix, self.subnet, hosts)
        rate_args = tbf_args(uplink) if uplink else None
        specs = self._resolve_pythons(plans, pythons)
        with self._lock():
            self._check_owner()
            state = self._load_state()
            if state and (state.get("prefix") != self.prefix or state.get("subnet") != self.subnet
                          or state.get("runtime_dir") != str(self.runtime_dir)):
                # This state dir held a testbed with another prefix/subnet: remove it first.
                old = Testbed(self.state_dir, prefix=state["prefix"], subnet=state["subnet"],
                              sshd=self.sshd, runtime_root=Path(state["runtime_dir"]).parent)
                old._down_locked(state)
                state = None
            if state and self._healthy(state, plans, specs, uplink):
                return [_host_from_record(r) for r in state["hosts"]]
            self._check_subnet_free()
            self._claim_owner()
            return self._reconcile(state, plans, specs, uplink, rate_args)

    def status(self) -> list[dict[str, Any]]:
        """Per recorded host: name, address, netns (+present), sshd pid (+alive), ssh
        answering, python; plus any leftover host of this prefix that is not recorded."""
        state = self._load_state()
        records = state["hosts"] if state else []
        alive = _pids_with(str(self.runtime_dir).encode() + b"/")

        def one(r: dict[str, Any]) -> dict[str, Any]:
            pid = r.get("sshd_pid") or 0
            ours = bool(pid) and pid in alive and host_marker(self.runtime_dir, r["name"]).encode() in alive[pid]
            present = _netns_inode(r["netns"]) is not None
            return {
                "name": r["name"],
                "address": r["address"],
                "netns": r["netns"],
                "netns_present": present,
                "sshd_pid": pid,
                "sshd_alive": ours,
                "ssh_answers": ours and present and _ssh_banner(r["address"], timeout=1.0),
                "python": r.get("python", DEFAULT_PYTHON),
                "python_version": r.get("python_version", ""),
                "uplink": state.get("uplink") if state else None,
                "recorded": True,
            }

        with ThreadPoolExecutor(max_workers=16) as pool:
            rows = list(pool.map(one, records))
        recorded = {r["name"] for r in records}
        for name in sorted(set(self._leftover_names()) - recorded, key=_name_key):
            rows.append({"name": name, "address": None, "netns": f"fb-{name}",
                         "netns_present": _netns_inode(f"fb-{name}") is not None, "sshd_pid": 0,
                         "sshd_alive": False, "ssh_answers": False, "python": None,
                         "python_version": "", "uplink": None, "recorded": False})
        return rows

    def down(self) -> None:
        """End this testbed's sshds (by recorded pid, checked to be ours; anything running on
        a host ends with it), delete its namespaces, links, bridge, shaping and files."""
        self._preflight(need_tc=False, need_sshd=False)
        with self._lock():
            state = self._load_state()
            if state and (state.get("prefix") != self.prefix or state.get("subnet") != self.subnet):
                old = Testbed(self.state_dir, prefix=state["prefix"], subnet=state["subnet"],
                              sshd=self.sshd, runtime_root=Path(state["runtime_dir"]).parent)
                old._check_owner()
                old._down_locked(state)
                state = None
            self._check_owner()
            self._down_locked(state)
            try:
                self.runtime_dir.parent.rmdir()  # /run/fleetbench-testbed, if no other testbed
            except OSError:
                pass

    def leftovers(self) -> dict[str, list[str]]:
        """Kernel objects, processes and files of this testbed that exist right now (all
        empty after ``down``)."""
        netns = sorted((n for n in _list_netns() if _own_name(n, f"fb-{self.prefix}")), key=_name_key)
        links = sorted((n for n in os.listdir("/sys/class/net") if n == self.bridge
                        or _own_name(n, f"fbv-{self.prefix}")), key=_name_key)
        pids = sorted(str(p) for p in _pids_with(str(self.runtime_dir).encode() + b"/"))
        files = []
        if self.state_dir.exists():
            files = sorted(str(p) for p in self.state_dir.iterdir()
                           if p.name in _STATE_FILES or p.name == "hosts" or p.name.endswith(".tmp"))
        if self.runtime_dir.exists():
            files.append(str(self.runtime_dir))
        return {"netns": netns, "links": links, "pids": pids, "files": files}

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
        for tool, package in needed.items():
            if not shutil.which(tool, path=_TOOL_ENV["PATH"]):
                raise TestbedError(f"the testbed needs `{tool}`: apt-get install {package}")

    def _resolve_pythons(self, plans: Sequence[HostPlan], pythons: Mapping[str, str]
                         ) -> dict[str, PythonSpec]:
        names = {p.name for p in plans}
        for name in pythons:
            if name != "*" and name not in names:
                have = f"{plans[0].name}..{plans[-1].name}" if len(plans) > 1 else plans[0].name
                raise TestbedError(f"python override for {name!r}: no such host (this testbed has {have})")
        default = pythons.get("*", DEFAULT_PYTHON)
        wanted = {p.name: pythons.get(p.name, default) for p in plans}
        probed: dict[str, PythonSpec] = {}
        for path in sorted(set(wanted.values())):
            named = [n for n in pythons if n != "*" and pythons[n] == path]
            if named:
                who = f"python override for {named[0]}"
            elif "*" in pythons and pythons["*"] == path:
                who = "python override for '*' (all hosts)"
            else:
                who = "default python"
            probed[path] = _probe_python(path, who)
        return {name: probed[path] for name, path in wanted.items()}

    def _healthy(self, state: dict[str, Any], plans: Sequence[HostPlan], specs: Mapping[str, PythonSpec],
                 uplink: str | None) -> bool:
        """Everything as wanted and alive: the fast no-op path of ``up``."""
        records = state.get("hosts", [])
        if [r.get("name") for r in records] != [p.name for p in plans]:
            return False
        if state.get("uplink") != uplink or not self._shaping_matches(uplink):
            return False
        if not _link_exists(self.bridge):
            return False
        for f in (self.ssh_config_path, self.known_hosts_path, self.key_path, self.etc_hosts_path,
                  self.resolv_conf_path):
            if not f.exists():
                return False
        if any(not self._record_ok(r, p, specs[p.name]) for r, p in zip(records, plans, strict=False)):
            return False
        with ThreadPoolExecutor(max_workers=16) as pool:
            return all(pool.map(lambda r: _ssh_banner(r["address"], timeout=1.0), records))

    def _record_ok(self, r: dict[str, Any], plan: HostPlan, spec: PythonSpec) -> bool:
        if (r.get("address"), r.get("netns"), r.get("python")) != (plan.address, plan.netns, spec.path):
            return False
        if r.get("python_version") != spec.version:
            return False
        ino = _netns_inode(plan.netns)
        if ino is None or ino != r.get("netns_inode"):
            return False
        pid = r.get("sshd_pid") or 0
        if not pid or not _proc_alive(pid):
            return False
        if host_marker(self.runtime_dir, plan.name).encode() not in _proc_cmdline(pid):
            return False
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != f"net:[{ino}]":
                return False
        except OSError:
            return False
        return (self.host_dir(plan.name) / "ssh_host_ed25519_key.pub").exists()

    def _shaping_matches(self, uplink: str | None) -> bool:
        if not _link_exists(self.bridge):
            return uplink is None
        cp = _run(["tc", "-j", "qdisc", "show", "dev", self.bridge], check=False)
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

    def _check_subnet_free(self) -> None:
        net = self.network
        addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
        for iface in addrs:
            if iface.get("ifname") == self.bridge:
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
        routes = json.loads(_run(["ip", "-j", "-4", "route", "show"]).stdout or "[]")
        for r in routes:
            dst, dev = r.get("dst"), r.get("dev")
            if not dst or dst == "default" or dev == self.bridge:
                continue
            try:
                other = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if other.overlaps(net) and other.prefixlen >= net.prefixlen:
                raise TestbedError(f"testbed subnet {net} overlaps route {dst} via {dev}: pick another subnet")

    # ---- ownership and locking -------------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        # The directory that holds RUNTIME_ROOT (/run): always there, so the lock leaves no
        # file behind. One lock for all testbeds: their subnet checks cannot race either.
        return self.runtime_dir.parent.parent

    class _Locked:
        def __init__(self, path: Path):
            self.path = path

        def __enter__(self):
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return self

        def __exit__(self, *exc):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)

    def _lock(self) -> Testbed._Locked:
        return Testbed._Locked(self._lock_path)

    def _claim_owner(self) -> None:
        """Check ownership of the prefix, then record this state dir as its owner."""
        self._check_owner()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.runtime_dir / "owner", str(self.state_dir) + "\n")

    def _check_owner(self) -> None:
        """One state dir per prefix: refuse to touch a live testbed another state dir owns."""
        owner_file = self.runtime_dir / "owner"
        try:
            owner = owner_file.read_text().strip()
        except OSError:
            owner = ""
        if owner and owner != str(self.state_dir):
            other = Path(owner) / "hosts.json"
            try:
                other_state = json.loads(other.read_text())
            except (OSError, ValueError):
                other_state = None
            if other_state and other_state.get("prefix") == self.prefix:
                raise TestbedError(
                    f"testbed prefix {self.prefix!r} is in use by the testbed in {owner}:"
                    f" bring that one down, or use another prefix (and subnet)"
                )

    # ---- state -----------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.hosts_json_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            return None
        if not isinstance(state.get("hosts"), list) or "prefix" not in state or "subnet" not in state:
            return None
        state.setdefault("runtime_dir", str(self.runtime_dir))
        return state

    def _leftover_names(self) -> list[str]:
        """Host names of this prefix that have a namespace, a link or a process."""
        names = set()
        for n in _list_netns():
            if _own_name(n, f"fb-{self.prefix}"):
                names.add(n[3:])
        try:
            links = os.listdir("/sys/class/net")
        except OSError:
            links = []
        for n in links:
            if _own_name(n, f"fbv-{self.prefix}"):
                names.add(n[4:])
        pat = re.compile(re.escape(str(self.runtime_dir)).encode() + rb"/(" + self.prefix.encode() + rb"[0-9]+)/sshd/")
        for cmd in _pids_with(str(self.runtime_dir).encode() + b"/").values():
            m = pat.search(cmd)
            if m:
                names.add(m.group(1).decode())
        return sorted(names, key=_name_key)

    # ---- teardown --------------------------------------------------------------------------

    def _teardown_hosts(self, names: Iterable[str], records: Mapping[str, dict[str, Any]]) -> None:
        """End, unlink and forget hosts ``names`` (recorded or only found lying around)."""
        names = sorted(set(names), key=_name_key)
        if not names:
            return
        live = _pids_with(str(self.runtime_dir).encode() + b"/")
        kill = set()
        for name in names:
            marker = host_marker(self.runtime_dir, name).encode()
            rec = records.get(name) or {}
            pid = rec.get("sshd_pid") or 0
            if pid and pid in live and marker in live[pid]:
                kill.add(pid)
            # Also a launcher or sshd of this host that the record does not know (lost state).
            kill.update(p for p, cmd in live.items() if marker in cmd)
        stuck = _terminate(kill)
        if stuck:
            raise TestbedError(f"testbed processes would not end even with SIGKILL: {stuck}")
        lines_links = [f"link del {n}" for n in (f"fbv-{name}" for name in names) if _link_exists(n)]
        _ip_batch(lines_links, force=True)
        lines_ns = [f"netns del fb-{name}" for name in names if _netns_inode(f"fb-{name}") is not None]
        _ip_batch(lines_ns, force=True)
        for name in names:
            shutil.rmtree(self.host_dir(name), ignore_errors=True)
            self._remove_runtime_host_dir(name)
        left = [n for n in names if _netns_inode(f"fb-{n}") is not None or _link_exists(f"fbv-{n}")]
        if left:
            raise TestbedError(f"could not remove the namespaces/links of testbed hosts {left}")

    def _down_locked(self, state: dict[str, Any] | None) -> None:
        records = {r["name"]: r for r in (state or {}).get("hosts", []) if isinstance(r, dict) and "name" in r}
        self._teardown_hosts(set(records) | set(self._leftover_names()), records)
        if _link_exists(self.bridge):
            _run(["tc", "qdisc", "del", "dev", self.bridge, "root"], check=False)
            _run(["ip", "link", "del", self.bridge])
        hosts_dir = self.state_dir / "hosts"
        if hosts_dir.is_dir():
            for child in hosts_dir.iterdir():  # only what has the name of one of our hosts
                if _own_name(child.name, self.prefix) and child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
            try:
                hosts_dir.rmdir()
            except OSError:
                pass
        for name in _STATE_FILES:
            for p in (self.state_dir / name, self.state_dir / (name + ".tmp")):
                try:
                    if not p.is_dir():
                        p.unlink()
                except OSError:
                    pass
        try:
            self.state_dir.rmdir()
        except OSError:
            pass
        if self.runtime_dir.is_dir():
            for child in self.runtime_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    self._remove_runtime_host_dir(child.name)
            for leftover in ("owner", "owner.tmp"):
                try:
                    (self.runtime_dir / leftover).unlink()
                except OSError:
                    pass
            try:
                self.runtime_dir.rmdir()
            except OSError:
                pass

    def _remove_runtime_host_dir(self, name: str) -> None:
        """Remove a host's mount points under the runtime dir with rmdir only: never a
        recursive delete there (were a bind mount ever visible, rmtree would go through it)."""
        rt = self.runtime_dir / name
        for sub in ("sshd", "python"):
            try:
                (rt / sub).rmdir()
            except OSError:
                pass
        try:
            rt.rmdir()
        except OSError:
            pass

    # ---- bring-up --------------------------------------------------------------------------

    def _reconcile(self, state: dict[str, Any] | None, plans: Sequence[HostPlan],
                   specs: Mapping[str, PythonSpec], uplink: str | None,
                   rate_args: list[str] | None) -> list[TestbedHost]:
        records = {r["name"]: r for r in (state or {}).get("hosts", []) if isinstance(r, dict) and "name" in r}
        keep = {p.name for p in plans if p.name in records and self._record_ok(records[p.name], p, specs[p.name])}
        # Everything of ours that is not a healthy host we keep goes: stale, extra, changed.
        self._teardown_hosts((set(records) | set(self._leftover_names())) - keep, records)
        if not keep and _link_exists(self.bridge):
            _run(["ip", "link", "del", self.bridge])  # start the network clean too
        self._ensure_files()
        self._ensure_bridge()
        new = [p for p in plans if p.name not in keep]
        # sshd's privilege separation directory (Debian's sshd service would create it).
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        base_hosts = _read_base_etc_hosts()
        self._write_etc_hosts(base_hosts, plans)
        sshd_version = _sshd_version(self.sshd)
        errors: dict[str, str] = {}
        results: dict[str, dict[str, Any]] = {n: records[n] for n in keep}
        if new:
            with ThreadPoolExecutor(max_workers=min(16, len(new))) as pool:
                list(pool.map(lambda p: self._prepare_host(p, specs[p.name]), new))
                root_batch = []
                for p in new:
                    root_batch += [
                        f"netns add {p.netns}",
                        f"link add {p.veth} type veth peer name eth0 address {mac_for(p.address)} netns {p.netns}",
                        f"link set {p.veth} master {self.bridge} up",
                    ]
                _ip_batch(root_batch)

                def start(p: HostPlan) -> tuple[HostPlan, dict[str, Any] | None, str | None]:
                    try:
                        return p, self._start_host(p, specs[p.name], sshd_version), None
                    except TestbedError as e:
                        return p, None, str(e)

                for p, rec, err in pool.map(start, new):
                    if err:
                        errors[p.name] = err
                        results[p.name] = _record(p, specs[p.name], 0, None, "")
                    else:
                        results[p.name] = rec
        if rate_args:
            _run(["tc", "qdisc", "replace", "dev", self.bridge, "root"] + rate_args)
        else:
            _run(["tc", "qdisc", "del", "dev", self.bridge, "root"], check=False)
        ordered = [results[p.name] for p in plans]
        self._write_client_files(ordered)
        self._write_state(ordered, uplink)
        if errors:
            shown = list(errors.items())[:3]
            more = f"\n(and {len(errors) - 3} more hosts failed)" if len(errors) > 3 else ""
            raise TestbedError(
                f"{len(errors)} of {len(plans)} testbed hosts did not come up:\n"
                + "\n".join(f"{n}: {e}" for n, e in shown) + more
                + f"\n(`down` cleans up; logs are in {self.state_dir / 'hosts'})"
            )
        return [_host_from_record(r) for r in ordered]

    def _ensure_files(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "hosts").mkdir(exist_ok=True)
        if not (self.key_path.exists() and self.key_path.with_suffix(".pub").exists()):
            for p in (self.key_path, self.key_path.with_suffix(".pub")):
                try:
                    p.unlink()
                except OSError:
                    pass
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleetbench-testbed-{self.prefix}",
                  "-f", str(self.key_path)])
        pub = self.key_path.with_suffix(".pub").read_text()
        _write_atomic(self.authorized_keys_path, pub, 0o600)
        if not self.resolv_conf_path.exists():
            _write_atomic(self.resolv_conf_path, RESOLV_CONF)

    def _ensure_bridge(self) -> None:
        br = self.bridge
        if not _link_exists(br):
            _run(["ip", "link", "add", "name", br, "address", mac_for(self.bridge_address), "type", "bridge",
                  "forward_delay", "0", "stp_state", "0"])
        _ip_batch([
            f"addr replace {self.bridge_address}/{self.network.prefixlen} dev {br}",
            f"link set {br} up",
        ])

    def _write_etc_hosts(self, base: str, plans: Sequence[HostPlan]) -> None:
        # In place (same inode): running hosts have this file bind-mounted as /etc/hosts.
        text = etc_hosts_text(base, [(p.name, p.address) for p in plans], self.prefix)
        if not self.etc_hosts_path.exists():
            _write_atomic(self.etc_hosts_path, text)
            return
        with open(self.etc_hosts_path, "r+") as f:
            if f.read() != text:
                f.seek(0)
                f.truncate()
                f.write(text)

    def _prepare_host(self, p: HostPlan, spec: PythonSpec) -> None:
        d = self.host_dir(p.name)
        shutil.rmtree(d, ignore_errors=True)
        (d / "bin").mkdir(parents=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{p.name}@fleetbench-testbed",
              "-f", str(d / "ssh_host_ed25519_key")])
        shutil.copyfile(self.authorized_keys_path, d / "authorized_keys")
        rt = self.runtime_dir / p.name
        (rt / "sshd").mkdir(parents=True, exist_ok=True)
        if not spec.is_default:
            if spec.relocate:
                (rt / "python").mkdir(exist_ok=True)
                run_path = f"{self._python_mount(p.name)}/{spec.relative_executable}"
                lib = f"{self._python_mount(p.name)}/lib"
                lib_path = lib if os.path.isdir(os.path.join(spec.prefix, "lib")) else None
            else:
                run_path, lib_path = spec.executable, None
            text = wrapper_text(spec, run_path, lib_path, self._python_mount(p.name) if spec.relocate else None)
            for w in _wrapper_names(spec):
                _write_atomic(d / "bin" / w, text, 0o755)

    def _start_host(self, p: HostPlan, spec: PythonSpec, sshd_version: tuple[int, int]) -> dict[str, Any]:
        d = self.host_dir(p.name)
        _ip_batch([
            f"addr add {p.address}/{self.network.prefixlen} dev eth0",
            "link set lo up",
            "link set eth0 up",
            f"route add default via {self.bridge_address}",
        ], netns=p.netns)
        mount = self._mount(p.name)
        lib_path = None
        if not spec.is_default and spec.relocate and os.path.isdir(os.path.join(spec.prefix, "lib")):
            lib_path = f"{self._python_mount(p.name)}/lib"
        argv = sshd_argv(sshd=self.sshd, mount=mount, address=p.address, ld_library_path=lib_path,
                         per_source_penalties=sshd_version >= (9, 8))
        script = host_script(
            host_dir=str(d), mount=mount, etc_hosts=str(self.etc_hosts_path), hostname=p.name, argv=argv,
            resolv_conf=str(self.resolv_conf_path),
            python_prefix=spec.prefix if (not spec.is_default and spec.relocate) else None,
            python_mount=self._python_mount(p.name),
            wrappers=_wrapper_names(spec) if not spec.is_default else (),
        )
        (d / "launch.sh").write_text(script)
        launch_log = d / "launch.log"
        with open(launch_log, "ab") as log:
            # setsid -f: the host is nobody's child here and in no terminal's process group.
            cp = subprocess.run(
                ["setsid", "-f", "ip", "netns", "exec", p.netns,
                 "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--propagation", "private",
                 "sh", "-c", script, f"fleetbench-testbed-{p.name}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_TOOL_ENV, timeout=30,
            )
        if cp.returncode != 0:
            raise TestbedError(f"could not launch sshd (exit {cp.returncode}):\n{_tail(launch_log)}")
        pid = self._wait_ready(p, d)
        try:
            mntns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            mntns = ""
        return _record(p, spec, pid, _netns_inode(p.netns), mntns)

    def _wait_ready(self, p: HostPlan, d: Path) -> int:
        """Poll until this host's sshd answers with an SSH banner on port 22."""
        deadline = time.monotonic() + self.start_timeout
        pidfile = d / "sshd.pid"
        pid = 0
        marker = host_marker(self.runtime_dir, p.name).encode()
        while True:
            if not pid:
                try:
                    pid = int(pidfile.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
            if pid and (not _proc_alive(pid)):
                raise TestbedError(
                    f"sshd on {p.name} ({p.address}) exited while starting.\n"
                    f"  sshd.log:\n{_tail(d / 'sshd.log')}\n  launch.log:\n{_tail(d / 'launch.log')}"
                )
            if pid and marker in _proc_cmdline(pid) and _ssh_banner(p.address, timeout=0.5):
                return pid
            if not pid and _size(d / "launch.log") > 0:
                time.sleep(0.1)  # let the failing launcher finish its message
                if not pidfile.exists():
                    raise TestbedError(f"the launcher for {p.name} failed:\n{_tail(d / 'launch.log')}")
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"sshd on {p.name} ({p.address}) did not answer on port {SSH_PORT} within"
                    f" {self.start_timeout:.0f}s.\n  sshd.log:\n{_tail(d / 'sshd.log')}\n"
                    f"  launch.log:\n{_tail(d / 'launch.log')}"
                )
            time.sleep(0.01)

    def _write_client_files(self, records: Sequence[dict[str, Any]]) -> None:
        entries = []
        for r in records:
            try:
                pub = (self.host_dir(r["name"]) / "ssh_host_ed25519_key.pub").read_text()
            except OSError:
                continue
            entries.append((r["name"], r["address"], pub))
        _write_atomic(self.known_hosts_path, known_hosts_text(entries))
        _write_atomic(self.ssh_config_path, ssh_config_text(
            [(r["name"], r["address"]) for r in records],
            key_path=str(self.key_path), known_hosts_path=str(self.known_hosts_path)))

    def _write_state(self, records: Sequence[dict[str, Any]], uplink: str | None) -> None:
        state = {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "subnet": self.subnet,
            "network": str(self.network),
            "bridge": self.bridge,
            "bridge_address": self.bridge_address,
            "uplink": uplink,
            "state_dir": str(self.state_dir),
            "runtime_dir": str(self.runtime_dir),
            "ssh_config": str(self.ssh_config_path),
            "known_hosts": str(self.known_hosts_path),
            "key": str(self.key_path),
            "hosts": list(records),
        }
        _write_atomic(self.hosts_json_path, json.dumps(state, indent=2) + "\n")


# Files of a testbed in its state dir (plus the "hosts" directory of per-host files).
_STATE_FILES = ("hosts.json", "ssh_config", "known_hosts", "id_ed25519", "id_ed25519.pub",
                "authorized_keys", "etc_hosts", "resolv.conf")


def _record(p: HostPlan, spec: PythonSpec, pid: int, netns_inode: int | None, mntns: str) -> dict[str, Any]:
    return {
        "name": p.name,
        "address": p.address,
        "netns": p.netns,
        "veth": p.veth,
        "sshd_pid": pid,
        "python": spec.path,
        "python_version": spec.version,
        "python_on_host": "/usr/local/bin/python3" if not spec.is_default else DEFAULT_PYTHON,
        "netns_inode": netns_inode,
        "mntns": mntns,
    }


def _host_from_record(r: Mapping[str, Any]) -> TestbedHost:
    return TestbedHost(name=r["name"], address=r["address"], netns=r["netns"], sshd_pid=int(r.get("sshd_pid") or 0),
                       python=r.get("python", DEFAULT_PYTHON), python_version=r.get("python_version", ""))


def _wrapper_names(spec: PythonSpec) -> tuple[str, ...]:
    return ("python3", f"python{spec.short_version}") if spec.short_version != "3" else ("python3",)


def _name_key(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*?)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _own_name(candidate: str, stem: str) -> bool:
    rest = candidate[len(stem):]
    return candidate.startswith(stem) and rest.isdigit() and not rest.startswith("0")


def _list_netns() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except OSError:
        return []


def _read_base_etc_hosts() -> str:
    try:
        text = Path("/etc/hosts").read_text()
    except OSError:
        return "127.0.0.1\tlocalhost\n"
    # Drop a testbed section in case /etc/hosts is itself a testbed's (run from inside a host).
    return text.split("# fleetbench testbed ")[0]


def _probe_python(path: str, who: str) -> PythonSpec:
    if not os.path.isabs(path):
        raise TestbedError(f"{who}: {path!r} is not an absolute path")
    if not os.path.exists(path):
        raise TestbedError(f"{who}: {path} does not exist")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise TestbedError(f"{who}: {path} is not an executable file")
    try:
        cp = subprocess.run([path, "-E", "-s", "-c", _PY_PROBE], capture_output=True, text=True,
                            timeout=30, env=_TOOL_ENV, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TestbedError(f"{who}: {path} does not run: {e}") from e
    try:
        info = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TestbedError(f"{who}: {path} is not a working Python: {(cp.stderr or cp.stdout).strip()[-400:]}")
    prefix = os.path.realpath(info["base_prefix"])
    if os.path.realpath(info["prefix"]) != prefix:
        raise TestbedError(
            f"{who}: {path} is a virtual environment's interpreter; give its base interpreter"
            f" (under {info['base_prefix']})"
        )
    if os.path.realpath(info["base_exec_prefix"]) != prefix:
        raise TestbedError(f"{who}: {path} has exec_prefix != prefix; not supported")
    exe = os.path.realpath(info["executable"] or path)  # a pyenv shim resolves to the real binary
    relocate = _under(prefix, HIDDEN_ON_HOSTS) or _under(exe, HIDDEN_ON_HOSTS) or _under(path, HIDDEN_ON_HOSTS)
    rel = os.path.relpath(exe, prefix)
    if relocate and (rel.startswith("..") or os.path.isabs(rel)):
        raise TestbedError(f"{who}: {path} (really {exe}) is not inside its prefix {prefix}")
    return PythonSpec(path=path, executable=exe, version=info["version"], prefix=prefix,
                      relocate=relocate, relative_executable=rel)


# --------------------------------------------------------------------------------------------
# Manual use: python -m fabfile.dev.testbed up|status|down (the invoke tasks wrap the same API)
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="testbed", description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", default=".testbed")
    ap.add_argument("--prefix", default="tb")
    ap.add_argument("--subnet", type=int, default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=5)
    up.add_argument("--python", action="append", default=[], metavar="HOST=PATH")
    up.add_argument("--uplink", default=None, metavar="RATE")
    sub.add_parser("status")
    sub.add_parser("down")
    a = ap.parse_args(argv)
    try:
        tb = Testbed(Path(a.state_dir), prefix=a.prefix, subnet=a.subnet)
        if a.cmd == "up":
            t0 = time.monotonic()
            hosts = tb.up(a.hosts, parse_python_overrides(a.python), a.uplink)
            for h in hosts:
                print(f"{h.name:8} {h.address:15} pid {h.sshd_pid:<7} python {h.python_version} ({h.python})")
            print(f"{len(hosts)} hosts up in {time.monotonic() - t0:.2f}s; ssh -F {tb.ssh_config_path} {hosts[0].name}")
        elif a.cmd == "status":
            print(json.dumps(tb.status(), indent=2))
        else:
            tb.down()
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
