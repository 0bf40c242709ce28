"""SSH connections that check host keys.

Fabric's Connection accepts any host key (it hard-codes AutoAddPolicy and never reads
known_hosts). fleetbench loads known_hosts (the user's, and any UserKnownHostsFile named in
ssh_config, which is how a testbed's own known_hosts is found) and refuses unknown hosts
unless the user opts in to accept-new. A changed key is always refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import paramiko
from fabric import Config, Connection

# paramiko logs its transport thread's failures (e.g. a ProxyCommand that exits) with full
# tracebacks through logging's last-resort handler; we report those failures ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

USER_SSH_CONFIG = Path("~/.ssh/config").expanduser()
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


class ConnectError(Exception):
    """A host could not be reached or refused the login; names the host."""

    def __init__(self, host: str, reason: str):
        self.host = host
        super().__init__(f"{host}: {reason}")


@dataclass(frozen=True)
class SshSettings:
    """How to reach hosts. ``config_files`` are read in order; the first match of an option wins."""

    config_files: Tuple[Path, ...] = ()
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    keepalive_s: int = 10
    extra_known_hosts: Tuple[Path, ...] = field(default=())
    host_timeout: float = 30.0  # a host that answers nothing for this long is given up as lost


def load_ssh_config(files: Sequence[Path]) -> paramiko.SSHConfig:
    config = paramiko.SSHConfig()
    for path in [*files, USER_SSH_CONFIG]:
        if path.is_file():
            with open(path) as fh:
                config.parse(fh)
    return config


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: remember a new host, never a changed one."""

    _lock = threading.Lock()

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def known_hosts_files(c: Connection, settings: SshSettings) -> List[Path]:
    named = c.ssh_config.get("userknownhostsfile", "")
    files = [Path(os.path.expanduser(p)) for p in named.split()] if named else []
    return [*files, *settings.extra_known_hosts, USER_KNOWN_HOSTS]


def secure(c: Connection, settings: SshSettings) -> None:
    """Make ``c`` check host keys before it opens. Safe to call on a fab-made Connection."""
    files = known_hosts_files(c, settings)
    for path in files:
        if path.is_file():
            c.client.load_system_host_keys(str(path))
    if settings.accept_new_host_keys:
        c.client.set_missing_host_key_policy(_AcceptNew(files[0]))
    else:
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.fleetbench_known_hosts = files


def connection(destination: str, settings: SshSettings, ssh_config: Optional[paramiko.SSHConfig] = None) -> Connection:
    """A Connection to ``destination`` (alias, host, user@host, user@host:port), not yet open."""
    config = Config(ssh_config=ssh_config or load_ssh_config(settings.config_files))
    c = Connection(destination, config=config, connect_timeout=settings.connect_timeout)
    c.fleetbench_name = destination
    secure(c, settings)
    return c


def _describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def open_checked(c: Connection, settings: SshSettings) -> Connection:
    """Open ``c``; every way of failing becomes a ConnectError naming the host."""
    name = getattr(c, "fleetbench_name", c.original_host)
    where = f"{c.user}@{c.host}:{c.port}"
    try:
        c.open()
    except paramiko.BadHostKeyException as exc:
        files = ", ".join(str(p) for p in getattr(c, "fleetbench_known_hosts", []))
        entry = c.host if c.port == 22 else f"[{c.host}]:{c.port}"  # how known_hosts names it
        raise ConnectError(name, f"host key for {c.host} has CHANGED: known_hosts has {_describe_key(exc.expected_key)}, "
                                 f"the host offered {_describe_key(exc.key)}. Refusing to connect (someone may be "
                                 f"intercepting the connection). If the host was rebuilt, remove its old key "
                                 f"(ssh-keygen -R '{entry}') from {files}.") from None
    except paramiko.AuthenticationException as exc:
        raise ConnectError(name, f"login refused for {where}: {exc}") from None
    except paramiko.SSHException as exc:
        text = str(exc)
        if "not found in known_hosts" in text:
            files = ", ".join(str(p) for p in getattr(c, "fleetbench_known_hosts", []))
            raise ConnectError(name, f"unknown host key for {c.host} (looked in {files}); "
                                     "add it (ssh-keyscan) or pass --accept-new-host-keys") from None
        raise ConnectError(name, f"SSH to {where} failed: {text}") from None
    except OSError as exc:
        raise ConnectError(name, f"cannot reach {where}: {exc.strerror or exc}") from None
    except Exception as exc:  # paramiko raises a few odd types (EOFError, socket.timeout)
        raise ConnectError(name, f"SSH to {where} failed: {type(exc).__name__}: {exc}") from None
    if c.transport is not None:
        set_host_timeout(c, settings.host_timeout, settings.keepalive_s)
    return c


def set_host_timeout(c: Connection, seconds: float, keepalive_s: float = 10) -> None:
    """Declare the connection dead once the host has acknowledged nothing for ``seconds``.

    A host whose link is cut sends no FIN and no RST: without this, a channel waits for it
    for as long as TCP retransmits (about 15 minutes). SSH keepalives make sure something is
    always in flight, and TCP_USER_TIMEOUT has the kernel drop the connection when that
    something stays unacknowledged for ``seconds``; paramiko then closes every channel.
    """
    every = max(1, int(min(keepalive_s, seconds / 3)))
    c.transport.set_keepalive(every)
    sock = c.transport.sock
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; not a ProxyCommand
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
