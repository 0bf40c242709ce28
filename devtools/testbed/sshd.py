"""The hosts' sshd and the controller's client files: keys, ssh_config, known_hosts, the
sshd command line and the launcher script that becomes each host's pid 1."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .layout import SSHD_LIMITS, Layout
from .plan import HOST_TMPFS, RESOLV_CONF, HostPlan
from .pythons import PythonSpec, relocated_lib_path, wrapper_names
from .system import TOOL_ENV, TestbedError, file_size, proc_alive, proc_cmdline, run_tool, tail, write_atomic
from .users import group_text, home_lines, passwd_text, read_base

PRIVSEP_DIR = "/run/sshd"
SSH_PORT = 22


def _cfg_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_config_text(hosts: Sequence[tuple[str, str]], *, key_path: str, known_hosts_path: str,
                    user: str = "root", proxy_jump: Mapping[str, str] | None = None) -> str:
    """ssh_config with a ``Host`` block per ``(alias, address)``: strict host key checking
    against the testbed's own known_hosts, only the testbed's key offered; ``proxy_jump``
    names the jump host of the aliases reached through one."""
    lines = ["# fleetbench testbed: written by devtools/testbed; `ssh -F THIS_FILE <host>`", ""]
    for alias, address in hosts:
        jump = (proxy_jump or {}).get(alias)
        lines += [
            f"Host {alias}",
            f"    HostName {address}",
            *([f"    ProxyJump {jump}"] if jump else []),
            f"    User {user}",
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


def host_marker(runtime_dir: Path, name: str) -> str:
    """A string in the command line of (only) this host's sshd and its launcher."""
    return f"{runtime_dir}/{name}/sshd/"


def sshd_argv(*, sshd: str, mount: str, address: str, ld_library_path: str | None = None,
              per_source_penalties: bool = False, limits: tuple[str, str] = ("100", "100")) -> list[str]:
    """The host's sshd: foreground (it is pid 1 of the host), config only from ``-o``;
    ``limits``: its MaxStartups and MaxSessions (layout.SSHD_LIMITS)."""
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
        f"MaxStartups={limits[0]}",
        f"MaxSessions={limits[1]}",
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
                wrappers: Sequence[str] = (), tmpfs: Sequence[tuple[str, str]] = HOST_TMPFS,
                passwd: str | None = None, group: str | None = None, home: Sequence[str] = ()) -> str:
    """The shell run as pid 1 of a new host (inside its netns, mount, UTS and PID namespaces).

    Binds in what must stay reachable, then hides /root, /tmp, ... under fresh tmpfs, then
    becomes sshd. Its pid as seen from the root pid namespace goes to ``sshd.pid``. With a
    login user, ``passwd``/``group`` are bound over the host's own and ``home`` (shell) makes
    its home once /home is a fresh tmpfs.
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
    for source, target in ((resolv_conf, "/etc/resolv.conf"), (passwd, "/etc/passwd"), (group, "/etc/group")):
        if source:
            lines += [f"mount --bind {q(source)} {target}", f"mount -o remount,bind,ro {target}"]
    for path, mode in tmpfs:
        lines.append(f"if [ -d {q(path)} ]; then mount -t tmpfs -o mode={mode} tmpfs {q(path)}; fi")
    lines += home
    lines.append("mount -t proc proc /proc")
    for w in wrappers:
        lines.append(f"cp {q(mount + '/bin/' + w)} /usr/local/bin/{q(w)}")
    lines.append(f"hostname {q(hostname)}")
    lines.append("exec " + " ".join(q(a) for a in argv))
    return "\n".join(lines) + "\n"


def ssh_banner(address: str, timeout: float = 1.0) -> bool:
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


def listening(pid: int, address: str, port: int = SSH_PORT) -> bool:
    """Whether the network namespace of ``pid`` has a socket listening on ``address:port``:
    how a host behind the bastion (which the controller cannot reach) is seen to be up."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return False
    return any(len(r) > 3 and r[1] == want and r[3] == "0A" for r in rows)  # 0A: LISTEN


def answers(record: Mapping[str, Any], behind_bastion: bool, timeout: float = 1.0) -> bool:
    """The host's sshd is up: its banner, or (behind a bastion) its listening socket."""
    if behind_bastion:
        return bool(record.get("sshd_pid")) and listening(int(record["sshd_pid"]), record["address"])
    return ssh_banner(record["address"], timeout=timeout)


def openssh_version(sshd: str) -> tuple[int, int]:
    try:
        cp = subprocess.run([sshd, "-V"], capture_output=True, text=True, env=TOOL_ENV, timeout=5,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", cp.stderr + cp.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)



# ---- keys and client files -------------------------------------------------------------------


def ensure_client_files(lay: Layout) -> None:
    """The state dir, the controller's key (made once), authorized_keys and resolv.conf."""
    lay.state_dir.mkdir(parents=True, exist_ok=True)
    (lay.state_dir / "hosts").mkdir(exist_ok=True)
    pub_path = lay.key_path.with_suffix(".pub")
    if not (lay.key_path.exists() and pub_path.exists()):
        for p in (lay.key_path, pub_path):
            try:
                p.unlink()
            except OSError:
                pass
        run_tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleetbench-testbed-{lay.prefix}",
                  "-f", str(lay.key_path)])
    write_atomic(lay.authorized_keys_path, pub_path.read_text(), 0o600)
    if not lay.resolv_conf_path.exists():
        write_atomic(lay.resolv_conf_path, RESOLV_CONF)
    if lay.user:
        write_atomic(lay.passwd_path, passwd_text(read_base("/etc/passwd"), lay.user))
        write_atomic(lay.group_path, group_text(read_base("/etc/group"), lay.user))


def make_host_keys(lay: Layout, p: HostPlan) -> Path:
    """A fresh per-host dir: the host's own key and the controller's authorized key."""
    d = lay.host_dir(p.name)
    shutil.rmtree(d, ignore_errors=True)
    (d / "bin").mkdir(parents=True)
    run_tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{p.name}@fleetbench-testbed",
              "-f", str(d / "ssh_host_ed25519_key")])
    shutil.copyfile(lay.authorized_keys_path, d / "authorized_keys")
    (lay.runtime_dir / p.name / "sshd").mkdir(parents=True, exist_ok=True)
    if lay.user:  # sshd reads authorized_keys as the user: the file and the path to it readable
        for path in (lay.runtime_dir.parent, lay.runtime_dir, lay.runtime_dir / p.name,
                     lay.runtime_dir / p.name / "sshd", d):
            path.chmod(0o755)
        (d / "authorized_keys").chmod(0o644)
    return d


def write_client_files(lay: Layout, records: Sequence[Mapping[str, Any]]) -> None:
    """known_hosts (each host's real key under its alias and address) and ssh_config; hosts
    behind the bastion (the record with role "bastion") get a ProxyJump to it."""
    entries = []
    for r in records:
        try:
            pub = (lay.host_dir(r["name"]) / "ssh_host_ed25519_key.pub").read_text()
        except OSError:
            continue
        entries.append((r["name"], r["address"], pub))
    write_atomic(lay.known_hosts_path, known_hosts_text(entries))
    bastion = next((r["name"] for r in records if r.get("role") == "bastion"), None)
    jumps = {r["name"]: bastion for r in records if bastion and r["name"] != bastion}
    write_atomic(lay.ssh_config_path, ssh_config_text(
        [(r["name"], r["address"]) for r in records],
        key_path=str(lay.key_path), known_hosts_path=str(lay.known_hosts_path), user=lay.login,
        proxy_jump=jumps))


# ---- sshd processes --------------------------------------------------------------------------


def launch_sshd(lay: Layout, p: HostPlan, spec: PythonSpec, version: tuple[int, int],
                script: str | None = None) -> int:
    """Start the host's pid 1 (which becomes its sshd) in its namespaces; its pid once it answers.
    ``script``: another pid 1 than the shared-root host's (an image host's, see imagehost)."""
    d = lay.host_dir(p.name)
    if script is None:
        script = shared_root_script(lay, p, spec, version)
    (d / "launch.sh").write_text(script)
    launch_log = d / "launch.log"
    with open(launch_log, "ab") as log:
        # setsid -f: the host is nobody's child here and in no terminal's process group.
        cp = subprocess.run(
            ["setsid", "-f", "ip", "netns", "exec", p.netns,
             "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--propagation", "private",
             "sh", "-c", script, f"fleetbench-testbed-{p.name}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=TOOL_ENV, timeout=30,
        )
    if cp.returncode != 0:
        raise TestbedError(f"could not launch sshd (exit {cp.returncode}):\n{tail(launch_log)}")
    return wait_ready(lay, p, d)


def shared_root_script(lay: Layout, p: HostPlan, spec: PythonSpec, version: tuple[int, int]) -> str:
    """The pid 1 of a host that shares the controller's root filesystem."""
    d = lay.host_dir(p.name)
    mount = lay.sshd_mount(p.name)
    argv = sshd_argv(sshd=lay.sshd, mount=mount, address=lay.ssh_address(p),
                     ld_library_path=relocated_lib_path(lay, p.name, spec),
                     per_source_penalties=version >= (9, 8), limits=SSHD_LIMITS[lay.sshd_limits])
    return host_script(
        host_dir=str(d), mount=mount, etc_hosts=str(lay.etc_hosts_path), hostname=p.name, argv=argv,
        resolv_conf=str(lay.resolv_conf_path),
        python_prefix=spec.prefix if (not spec.is_default and spec.relocate) else None,
        python_mount=lay.python_mount(p.name),
        wrappers=wrapper_names(spec) if not spec.is_default else (),
        tmpfs=(*HOST_TMPFS, ("/home", "755")) if lay.user else HOST_TMPFS,
        passwd=str(lay.passwd_path) if lay.user else None, group=str(lay.group_path) if lay.user else None,
        home=home_lines(lay.user) if lay.user else (),
    )


def wait_ready(lay: Layout, p: HostPlan, d: Path) -> int:
    """Poll until this host's sshd answers with an SSH banner on port 22."""
    deadline = time.monotonic() + lay.start_timeout
    pidfile = d / "sshd.pid"
    pid = 0
    marker = host_marker(lay.runtime_dir, p.name).encode()
    address = lay.ssh_address(p)
    while True:
        if not pid:
            try:
                pid = int(pidfile.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
        if pid and (not proc_alive(pid)):
            raise TestbedError(
                f"sshd on {p.name} ({address}) exited while starting.\n"
                f"  sshd.log:\n{tail(d / 'sshd.log')}\n  launch.log:\n{tail(d / 'launch.log')}"
            )
        behind = lay.bastion and p.index > 0  # the controller cannot reach it: is it listening?
        reached = lay.reached_at(p)  # behind the NAT: its banner through the NAT
        if pid and marker in proc_cmdline(pid) and (listening(pid, address) if behind else ssh_banner(reached, 0.5)):
            return pid
        if not pid and file_size(d / "launch.log") > 0:
            time.sleep(0.1)  # let the failing launcher finish its message
            if not pidfile.exists():
                raise TestbedError(f"the launcher for {p.name} failed:\n{tail(d / 'launch.log')}")
        if time.monotonic() > deadline:
            raise TestbedError(
                f"sshd on {p.name} ({address}) did not answer on port {SSH_PORT} within"
                f" {lay.start_timeout:.0f}s.\n  sshd.log:\n{tail(d / 'sshd.log')}\n"
                f"  launch.log:\n{tail(d / 'launch.log')}"
            )
        time.sleep(0.01)


def mount_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""
