"""SSH connections that check host keys.

Fabric's Connection accepts any host key (it hard-codes AutoAddPolicy and never reads
known_hosts). fleetbench loads known_hosts (the user's, and any UserKnownHostsFile named in
ssh_config, which is how a testbed's own known_hosts is found) and refuses unknown hosts
unless the user opts in to accept-new. A changed key is always refused. The same holds for
every jump host a ProxyJump names (Fabric opens those with AutoAddPolicy too), and the agent
is never forwarded, whatever ssh_config says: hosts get no SSH credentials.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote

from fabfile.errors import FleetbenchError
from fabfile.remote.transport import FleetSocket, FleetTransport, dial

# paramiko logs its transport thread's failures (e.g. a ProxyCommand that exits) with full
# tracebacks through logging's last-resort handler; we report those failures ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

USER_SSH_CONFIG = Path("~/.ssh/config").expanduser()
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


class ConnectError(FleetbenchError):
    """A host could not be reached or refused the login; names the host."""

    def __init__(self, host: str, reason: str):
        self.host = host
        super().__init__(f"{host}: {reason}")


@dataclass(frozen=True)
class SshSettings:
    """How to reach hosts. ``config_files`` are read in order; the first match of an option wins."""

    config_files: tuple[Path, ...] = ()
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    keepalive_s: int = 10
    extra_known_hosts: tuple[Path, ...] = field(default=())
    host_timeout: float = 30.0  # a host that answers nothing for this long is given up as lost


# paramiko's parts extended below are private: its type stubs describe only the public API.
_SSHConfig: Any = paramiko.SSHConfig
_SSHClient: Any = paramiko.SSHClient
_HostKeys: Any = paramiko.HostKeys


class IndexedSSHConfig(_SSHConfig):
    """paramiko's SSHConfig, with each lookup walking only the blocks that can match.

    paramiko tests every ``Host`` block against every host looked up (twice: a first and a
    final pass), so connecting to N hosts of an ssh_config with a block per host (a
    testbed's, or any generated inventory) costs N x N pattern matches. A block whose
    patterns are all literal names can only match those names: they are indexed by name.
    Blocks with a wildcard or a negation, and ``Match`` blocks, are always tried. Order
    (first value wins) is the file's, as in paramiko.
    """

    def __init__(self) -> None:
        super().__init__()
        self._index: tuple[int, dict[str, list[int]], list[int]] = (0, {}, [])

    def _candidates(self, hostname: str) -> list[dict]:
        built, literal, always = self._index
        if built != len(self._config):  # parse() appended blocks since the index was built
            literal, always = {}, []
            for i, context in enumerate(self._config):
                patterns = context.get("host")
                if patterns and all(_literal(p) for p in patterns):
                    for p in patterns:
                        literal.setdefault(p, []).append(i)
                else:
                    always.append(i)
            self._index = (len(self._config), literal, always)
        return [self._config[i] for i in sorted([*always, *literal.get(hostname, [])])]

    def _lookup(self, hostname, options=None, canonical=False, final=False):
        view = IndexedSSHConfig()  # what paramiko's own lookup walks: only the candidates
        view._config = self._candidates(hostname)
        return _SSHConfig._lookup(view, hostname, options, canonical, final)

    def _tokenize(self, config, target_hostname, key, value):
        # paramiko replaces only "%x" tokens and "~"; for each value it first asks for the
        # user's name, this host's name and FQDN (a DNS lookup) and a SHA-1 of them. A value
        # with neither comes out as it went in: most values, in most files.
        if isinstance(value, str) and "%" not in value and "~" not in value:
            return value
        return super()._tokenize(config, target_hostname, key, value)


def _literal(pattern: str) -> bool:
    return not pattern.startswith("!") and not any(ch in pattern for ch in "*?[")


def load_ssh_config(files: Sequence[Path]) -> paramiko.SSHConfig:
    config = IndexedSSHConfig()
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


def known_hosts_files(c: Connection, settings: SshSettings) -> list[Path]:
    named = c.ssh_config.get("userknownhostsfile", "")
    files = [Path(os.path.expanduser(p)) for p in named.split()] if named else []
    return [*files, *settings.extra_known_hosts, USER_KNOWN_HOSTS]


def known_hosts_name(c: Connection) -> str:
    """How known_hosts (and paramiko's lookup) names the host ``c`` connects to."""
    return c.host if c.port == 22 else f"[{c.host}]:{c.port}"


def _file_version(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class IndexedHostKeys(_HostKeys):
    """paramiko's HostKeys, with a lookup that tests only the entries that can match.

    paramiko's lookup tests every line of known_hosts, so checking N hosts against a file
    of N lines is N x N matches. Plain host names are indexed; hashed names (``|1|...``)
    can only be found by hashing the name looked up, so those entries are always tested.
    """

    def __init__(self) -> None:
        super().__init__()
        self._index: tuple[int, dict[str, list[int]], list[int]] = (0, {}, [])

    def lookup(self, hostname):
        built, plain, hashed = self._index
        if built != len(self._entries):
            plain, hashed = {}, []
            for i, entry in enumerate(self._entries):
                if any(h.startswith("|1|") for h in entry.hostnames):
                    hashed.append(i)
                else:
                    for h in entry.hostnames:
                        plain.setdefault(h, []).append(i)
            self._index = (len(self._entries), plain, hashed)
        view = _HostKeys()  # what paramiko's own lookup walks: only the candidates, in file order
        view._entries = [self._entries[i] for i in sorted({*hashed, *plain.get(hostname, [])})]
        return _HostKeys.lookup(view, hostname)


@functools.lru_cache(maxsize=8)
def _parsed_known_hosts(files: tuple[tuple[Path, tuple[int, int] | None], ...]) -> paramiko.HostKeys:
    keys = IndexedHostKeys()
    for path, version in files:
        if version is not None:
            keys.load(str(path))
    return keys


def known_host_keys(files: Sequence[Path]) -> paramiko.HostKeys:
    """The keys ``files`` hold, parsed once per version of the files.

    paramiko's loader checks each new line against every line before it, and a fleet used to
    load the whole file once per host: 32 hosts cost 32 x 32 x 32 host-name matches. Keyed on
    each file's mtime and size, so a key added by accept-new is seen by the next connection.
    """
    return _parsed_known_hosts(tuple((path, _file_version(path)) for path in files))


def secure(c: Connection, settings: SshSettings) -> None:
    """Make ``c`` check host keys before it opens, and each jump host of its ProxyJump too;
    never forward the agent. Safe to call on a fab-made Connection."""
    files = known_hosts_files(c, settings)
    entry = known_hosts_name(c)
    for keytype, key in (known_host_keys(files).lookup(entry) or {}).items():
        c.client.get_host_keys().add(entry, keytype, key)  # only this host's keys, not the file
    if settings.accept_new_host_keys:
        c.client.set_missing_host_key_policy(_AcceptNew(files[0]))
    else:
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.fleetbench_known_hosts = files
    c.forward_agent = False  # ForwardAgent in ssh_config would hand every host the user's agent
    if isinstance(c.gateway, Connection):  # ProxyJump: Fabric made it with AutoAddPolicy
        c.gateway.fleetbench_name = c.gateway.original_host
        c.gateway.connect_timeout = settings.connect_timeout
        secure(c.gateway, settings)


class PromptRemote(Remote):
    """Fabric's command runner, told of a command's exit as soon as it happens.

    Invoke's ``wait`` sleeps 10 ms between looks at the command, so every command took up to
    10 ms more than its round trip; paramiko's channel sets ``status_event`` on exit."""

    def wait(self) -> None:
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(self.input_sleep)


class FleetClient(_SSHClient):
    """paramiko's SSHClient, reading each identity file once per fleet, not once per host.

    paramiko parses an IdentityFile as every key type in turn until one fits (about 0.5 ms
    of CPU for an ed25519 key). A key without a passphrase is kept, per file version (mtime
    and size), with the outcome of each type's attempt; one with a passphrase is not."""

    _keys: dict[tuple, paramiko.PKey | paramiko.SSHException] = {}
    _keys_lock = threading.Lock()

    def _key_from_filepath(self, filename, klass, password):
        if password is not None:
            return super()._key_from_filepath(filename, klass, password)
        entry = (filename, klass, _file_version(Path(filename)))
        with self._keys_lock:
            known = self._keys.get(entry)
        if known is None:
            try:
                known = super()._key_from_filepath(filename, klass, password)
            except paramiko.SSHException as exc:
                known = exc
            with self._keys_lock:
                self._keys[entry] = known
        if isinstance(known, paramiko.SSHException):
            raise type(known)(*known.args)
        return known


class FleetConnection(Connection):
    """A Fabric Connection that is cheap to make by the hundred and can share its Config.

    Fabric's Connection is an Invoke DataProxy: every attribute it sets calls ``dir(self)``
    (hundreds of names) to decide whether the attribute is real or belongs in the config,
    and a name it does not know (ours) is written into the Config, which a fleet's
    connections share. Here every attribute set is a plain one. ``resolve_connect_kwargs``
    merges like Fabric's (config, constructor, then ssh_config's IdentityFile) but into a
    dict of this connection's own: Fabric's writes ``key_filename`` into the Config's
    ``connect_kwargs``, which would hand one host's keys to the next. It also closes its jump
    hosts (Fabric leaves them open).
    """

    __setattr__ = object.__setattr__
    fleetbench_name: str = ""
    fleetbench_known_hosts: Sequence[Path] = ()
    #: The bundled python's bin directory on this host ("" when it runs its own python3):
    #: every command sees it first on its PATH, so ``python3`` and the pexes' shebangs find it.
    fleetbench_path: str = ""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.client = FleetClient()

    def resolve_connect_kwargs(self, connect_kwargs):
        shared = self.config.connect_kwargs
        own = dict(connect_kwargs or shared)
        keys: list[str] = []
        for value in (shared.get("key_filename", []), (connect_kwargs or {}).get("key_filename", []),
                      self.ssh_config.get("identityfile", [])):
            keys.extend([value] if isinstance(value, str) else value)
        if keys:
            own["key_filename"] = keys
        own.setdefault("transport_factory", FleetTransport)
        return own

    def close(self) -> None:
        super().close()
        if isinstance(self.gateway, Connection):
            self.gateway.close()


class FleetConfig(Config):
    """Fabric's Config, whose section lookups (``config.connect_kwargs``) do not fail twice first.

    Invoke's ``_get`` asks the config for its ``_keypath`` and ``_root``, which a root config
    lacks; each miss builds an AttributeError message listing ``dir()`` of the class. A root's
    keypath is the empty one (what invoke assumes without it), and its root is itself."""

    _keypath: tuple[str, ...] = ()

    def __getattr__(self, key: str) -> Any:
        if key == "_root":  # invoke tells a root (none) from a section (one) by this attribute
            raise AttributeError(key)
        return super().__getattr__(key)


def fleet_config(ssh_config: paramiko.SSHConfig) -> Config:
    """One Config for every connection of a fleet: building and merging one (Fabric reads
    its config files, the environment and the user's name) cost more than a connection's
    own setup. Nothing writes to it (see FleetConnection)."""
    return FleetConfig(ssh_config=ssh_config, overrides={"runners": {"remote": PromptRemote}})


def connection(destination: str, settings: SshSettings, ssh_config: paramiko.SSHConfig | None = None,
               config: Config | None = None) -> FleetConnection:
    """A Connection to ``destination`` (alias, host, user@host, user@host:port), not yet open.
    A fleet passes its one ``config`` (from :func:`fleet_config`); else one is made here."""
    if config is None:
        config = fleet_config(ssh_config or load_ssh_config(settings.config_files))
    c = FleetConnection(destination, config=config, connect_timeout=settings.connect_timeout)
    c.fleetbench_name = destination
    secure(c, settings)
    return c


#: SSH handshakes (from connect to logged in) under way at once to one sshd. OpenSSH's stock
#: MaxStartups 10:30:100 drops, at random, connections beyond 10 unauthenticated ones: a
#: fleet's burst of connects to one bastion (each host behind it is a connection to it) or to
#: one host meets it. We stay at 8, leaving room for the user's own ssh.
MAX_HANDSHAKES = 8
#: A handshake sshd dropped before its banner (MaxStartups, with someone else's connections
#: counted too) is tried again this many times, after these pauses.
HANDSHAKE_RETRIES_S = (0.5, 1.0, 2.0)
_handshakes: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_handshakes_lock = threading.Lock()


def handshake_slot(host: str, port: int) -> threading.BoundedSemaphore:
    """The slots of handshakes to the sshd at ``host:port`` (the address the connection is
    dialled at: a bastion for its jump connections, the host itself behind it), one set per
    process: every fleet, follower and fab task of this controller shares it."""
    with _handshakes_lock:
        return _handshakes.setdefault((host, int(port)), threading.BoundedSemaphore(MAX_HANDSHAKES))


def _dropped_before_banner(exc: paramiko.SSHException) -> bool:
    """sshd closed (or reset) the connection before its banner: what MaxStartups does."""
    return str(exc).startswith("Error reading SSH protocol banner") and isinstance(
        exc.__context__, (EOFError, ConnectionResetError))


def _open(c: Connection, settings: SshSettings) -> None:
    """``c.open()`` within its sshd's handshake slots, tried again when dropped before the banner."""
    for pause in (*HANDSHAKE_RETRIES_S, None):
        try:
            with handshake_slot(c.host, c.port):
                if c.gateway is None and not c.is_connected:  # a ProxyJump/ProxyCommand brings its own socket
                    c.connect_kwargs["sock"] = dial(c.host, c.port, settings.connect_timeout)
                c.open()
            return
        except paramiko.SSHException as exc:
            if pause is None or not _dropped_before_banner(exc):
                raise
        finally:
            c.connect_kwargs.pop("sock", None)  # a reconnect dials afresh
        time.sleep(pause)


def _describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def open_checked(c: Connection, settings: SshSettings) -> Connection:
    """Open ``c``; every way of failing becomes a ConnectError naming the host."""
    name = getattr(c, "fleetbench_name", c.original_host)
    where = f"{c.user}@{c.host}:{c.port}"
    if isinstance(c.gateway, Connection) and not c.is_connected:
        try:  # the jump host first, on its own: its key checked, its failures named as its own
            open_checked(c.gateway, settings)
        except ConnectError as exc:
            raise ConnectError(name, f"through jump host {exc}") from None
    try:
        _open(c, settings)
    except paramiko.BadHostKeyException as exc:
        files = ", ".join(str(p) for p in getattr(c, "fleetbench_known_hosts", []))
        entry = known_hosts_name(c)
        raise ConnectError(name, f"host key for {c.host} has CHANGED: known_hosts has "
                                 f"{_describe_key(exc.expected_key)}, the host offered {_describe_key(exc.key)}. "
                                 "Refusing to connect (someone may be intercepting the connection). If the host was "
                                 f"rebuilt, remove its old key (ssh-keygen -R '{entry}') from {files}.") from None
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
    Through a jump host (or a ProxyCommand) our TCP ends at the jump host, which acknowledges
    everything: there keepalives ask for a reply, and no reply in ``seconds`` closes it.
    """
    every = max(1, int(min(keepalive_s, seconds / 3)))
    sock = c.transport.sock
    if isinstance(sock, (socket.socket, FleetSocket)):
        c.transport.set_keepalive(every)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))
    else:
        watch_replies(c.transport, every, seconds)


def watch_replies(transport: paramiko.Transport, every: float, seconds: float) -> None:
    """Every ``every`` seconds ask the host for a reply (OpenSSH answers any global request);
    close the transport, and so every channel on it, when one takes over ``seconds``. Called
    again (``bench --host-timeout``), it changes the figures of the one watcher."""
    first = not hasattr(transport, "fleetbench_watch")
    transport.fleetbench_watch = (every, seconds)  # type: ignore[attr-defined]
    if not first:
        return

    def loop() -> None:
        while transport.is_active():
            every, seconds = transport.fleetbench_watch  # type: ignore[attr-defined]
            overdue = threading.Timer(seconds, transport.close)
            overdue.daemon = True
            overdue.start()
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            finally:
                overdue.cancel()
            time.sleep(every)

    threading.Thread(target=loop, name="fleetbench-keepalive", daemon=True).start()
