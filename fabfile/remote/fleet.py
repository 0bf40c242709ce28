"""A fleet: one long-lived, host-key-checked connection per host, opened in parallel.

Opening a connection costs a few round trips and a login's CPU on the host, and Fabric opens
one per (task, host); a Fleet opens each host once and every task of one ``inv`` call reuses
it. A preflight finds every bad host (unreachable, refused, no python3) before anything is
started anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from fabric import Connection

from fabfile.errors import FleetbenchError
from fabfile.remote import addresses, pool
from fabfile.remote.host import Host, SshHost
from fabfile.remote.shell import REMOTE_DIR, RemoteError, cmd, private_dir_command, run
from fabfile.remote.ssh import SshSettings, connection, fleet_config, load_ssh_config, open_checked, set_host_timeout

T = TypeVar("T")
K = TypeVar("K")

MIN_PYTHON = (3, 9)
#: Free space a host needs under ~/.fleetbench: two pexes (~16 MB each) and their extracted
#: venvs (~35 MB each), with room for logs and results.
MIN_FREE_MB = 150
#: And on a host that gets the bundled python: its archive (~15 MB) and its unpacked tree (~45 MB).
BUNDLED_FREE_MB = 64

# Runs on the host's python3: what pex needs to know to pick wheels, and what we report; and
# the host's private address (fabfile.remote.addresses; argv[1]: an override to check there).
_PROBE = (
    "import json, platform, sys, sysconfig\n"
    + addresses.PROBE
    + "_a = _addresses()\n"
    "print(json.dumps({'executable': sys.executable, 'version': platform.python_version(),"
    " 'implementation': sys.implementation.name, 'machine': platform.machine(),"
    " 'libc': list(platform.libc_ver()), 'soabi': sysconfig.get_config_var('SOABI') or '',"
    " 'hostname': platform.node(), 'system': platform.system(), 'addresses': _a}))\n"
    f"sys.exit(3 if sys.version_info[:2] < {MIN_PYTHON!r} else 3 if _a.get('override', ['', ''])[1] else 0)"
)
#: The preflight's first line when the host will run the bundled python: then its machine and why.
BUNDLED = "fleetbench: bundled"
_VERSION = ("import sys; print(sys.version.split()[0]); "
            f"sys.exit(0 if sys.version_info[:2] >= {MIN_PYTHON!r} else 3)")
_FREE_SPACE = f"cd {cmd(REMOTE_DIR)} && pwd -P && df -Pk ."


def preflight_command(private_address: str | None = None, python: str = "python3", force_bundled: bool = False) -> str:
    """The whole preflight in one round trip, in the order that creates nothing on a host that
    fails an earlier check: which python (the host's own python3 when it is new enough, else the
    bundled one: the first line says so, with the host's machine and the reason), the probe
    (exit 3: the private address given is not the host's), the private directory, then where it
    lives and how much room it has. ``python``: the interpreter to probe (the bundled one, once
    installed)."""
    probe = cmd(python, "-c", _PROBE, *([private_address] if private_address else []))
    bundled = f'echo {cmd(BUNDLED)} "$(uname -m)"'
    choose = (
        f"if {'true' if force_bundled else 'false'}; then {bundled} --bundled-python\n"
        f"elif ! command -v python3 >/dev/null 2>&1; then {bundled} no python3 on the PATH\n"
        f"elif ! v=$({cmd('python3', '-c', _VERSION)} 2>&1); then {bundled} python3 is \"$v\"\n"
        f"else {probe}; rc=$?; [ $rc -eq 3 ] && exit 0; [ $rc -eq 0 ] || exit $rc; fi\n"
    ) if python == "python3" else f"{probe}; rc=$?; [ $rc -eq 3 ] && exit 0; [ $rc -eq 0 ] || exit $rc\n"
    return (
        choose
        + f"{private_dir_command('bin', 'pex', 'nodes', 'runs')} || exit 1\n"
        f"{_FREE_SPACE}"
    )


class FleetError(FleetbenchError):
    """One or more hosts failed; the message names every one of them."""

    def __init__(self, what: str, failures: Mapping, results: Mapping | None = None):
        self.failures = dict(failures)
        self.results = dict(results or {})  # what did succeed, so a caller can undo it
        lines = "\n".join(f"  - {exc}" if str(exc).startswith(f"{host}:") else f"  - {host}: {exc}"
                          for host, exc in failures.items())
        super().__init__(f"{what}: {len(failures)} host(s) failed\n{lines}")


@dataclass(frozen=True)
class Interpreter:
    """The python3 a host really has."""

    executable: str
    version: str
    implementation: str
    machine: str
    libc: list[str]
    soabi: str
    hostname: str
    system: str = "Linux"  # platform.system(): what a server build targets (with machine)

    @property
    def fingerprint(self) -> str:
        return json.dumps([self.executable, self.version, self.implementation, self.machine, self.libc, self.soabi])


class Fleet:
    """``private_addresses``: overrides of where other hosts reach a host (the spawn file's
    ``hosts.private_addresses``), checked on the host by the preflight."""

    def __init__(self, destinations: Iterable[str], settings: SshSettings,
                 private_addresses: Mapping[str, str] | None = None, bundled: BundledPython | None = None):
        self.settings = settings
        self.bundled = bundled
        self.private_overrides = dict(private_addresses or {})
        self.names: list[str] = list(dict.fromkeys(destinations))
        config = fleet_config(load_ssh_config(settings.config_files))  # parsed and built once per fleet
        self.connections: dict[str, Connection] = {
            name: connection(name, settings, config=config) for name in self.names
        }
        #: What the rest of fleetbench acts on: each host behind the one seam (fabfile.remote.host).
        self.hosts: dict[str, Host] = {name: SshHost(c) for name, c in self.connections.items()}
        self.interpreters: dict[str, Interpreter] = {}
        self.addresses: dict[str, addresses.HostAddresses] = {}  # learned by the preflight
        #: Per host, which python it runs and why (said by the preflight before anything is pushed).
        self.choices: dict[str, str] = {}
        #: Hosts that run the bundled python: their machine (``uname -m``), then where it is.
        self.needs_bundled: dict[str, str] = {}
        self.bundled_pythons: dict[str, str] = {}
        self._opened = False

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def reconnect(self, name: str, host_timeout: float) -> None:
        """Open ``name``'s connection again if it is down (closing what is left of it first),
        host-key checked; its host declared lost after ``host_timeout`` seconds of silence."""
        c = self.connections[name]
        if c.transport is None or not c.transport.is_active():
            self.drop(name)
            open_checked(c, self.settings)
            set_host_timeout(c, host_timeout, self.settings.keepalive_s)

    def drop(self, name: str) -> None:
        """Close ``name``'s connection, whatever state it is in."""
        try:
            self.connections[name].close()
        except Exception:  # a dead transport may fail to close in many ways; it is gone either way
            pass

    def address(self, name: str) -> str:
        """The address other hosts use to reach ``name``: its private address, learned by the
        preflight (:meth:`open`); before one, ssh_config's HostName (else the host)."""
        learned = self.addresses.get(name)
        return learned.private if learned else self.connections[name].host

    @overload
    def each(self, fn: Callable[[str], T], names: None = None, *, what: str = "") -> dict[str, T]: ...
    @overload
    def each(self, fn: Callable[[K], T], names: Iterable[K], *, what: str = "") -> dict[K, T]: ...

    def each(self, fn: Callable[[Any], T], names: Iterable[Any] | None = None, *, what: str = "") -> dict[Any, T]:
        """``{item: fn(item)}`` over every host, or over ``names`` (host names, or anything else keyed
        by host, such as server nodes), concurrently; FleetError naming every item that failed."""
        try:
            return pool.each(self.names if names is None else names, fn)
        except pool.PartialFailure as exc:
            raise FleetError(what or getattr(fn, "__name__", "operation"), exc.failures, exc.results) from None

    def connect(self, then: Callable[[str], T] | None = None, *, what: str = "connect") -> dict[str, T | None]:
        """Connect to every host (in parallel, bounded) without the preflight, which is enough
        for what only looks at hosts (status, logs, stop). ``then(name)`` runs on each host as
        soon as that host is connected, in the same worker: no host waits for the slowest
        connect before its own work starts."""
        def one(name: str) -> T | None:
            self._open_host(name)
            return then(name) if then else None

        return self.each(one, what=what)

    def _open_host(self, name: str) -> None:
        """Connect to ``name``, host-key checked; ConnectError naming it."""
        open_checked(self.connections[name], self.settings)

    def open(self, python: bool = True) -> Fleet:
        """Connect to every host and check it can run us; names every bad host at once
        (unreachable, refused, host key, no room), before anything starts anywhere. Hosts
        without a usable python3 get the bundled one (unless ``python`` is False: for what
        runs no Python there; they then have no entry in ``interpreters``)."""
        if self._opened:
            return self

        def check(name: str) -> Interpreter | None:
            self._open_host(name)
            return self._preflight(name)

        checked = self.each(check, what="preflight")
        self.interpreters.update({name: info for name, info in checked.items() if info is not None})
        if self.needs_bundled and python:
            self._use_bundled()
        self._opened = True
        return self

    def _use_bundled(self) -> None:
        """Say which hosts get the bundled python, install it there, then probe it as any python3."""
        if self.bundled is None:
            raise FleetError("preflight", {name: RemoteError(name, "python3 --version", why) for name, why
                                           in self.choices.items() if name in self.needs_bundled})
        self.bundled.announce(self.choices)
        self.bundled_pythons.update(self.bundled.install(self, dict(self.needs_bundled)))

        def probe(name: str) -> Interpreter:
            python = self.bundled_pythons[name]
            self.connections[name].fleetbench_path = python.rsplit("/", 1)[0]
            info = self._preflight(name, python)
            assert info is not None
            return info

        self.interpreters.update(self.each(probe, list(self.needs_bundled), what="preflight (bundled python)"))

    def _preflight(self, name: str, python: str = "python3") -> Interpreter | None:
        """One round trip: which python (None: the bundled one, recorded in needs_bundled), the
        private directory, free space."""
        override = self.private_overrides.get(name)
        forced = bool(self.bundled and self.bundled.forced)
        lines = run(self[name], preflight_command(override, python, forced)).splitlines()
        if not lines:
            raise RemoteError(name, "preflight", "the host said nothing")
        if lines[0].startswith(BUNDLED + " "):
            machine, _, why = lines[0][len(BUNDLED) + 1:].partition(" ")
            self.needs_bundled[name] = machine
            needs = "" if forced else f"; fleetbench needs python3 >= {_min()}"
            self.choices[name] = f"the bundled python ({why}{needs})"
            _check_free_space(name, path=lines[1], df_line=lines[-1], need_mb=MIN_FREE_MB + BUNDLED_FREE_MB)
            return None
        probed = json.loads(lines[0])
        reached = self.connections[name].host  # ssh_config's HostName: where we reach it
        self.addresses[name] = addresses.learn(name, reached, probed.pop("addresses", None), override)
        info = Interpreter(**probed)
        if tuple(int(x) for x in info.version.split(".")[:2]) < MIN_PYTHON:
            raise RemoteError(name, "python3 --version", f"python3 is {info.version} ({info.executable}); "
                              f"fleetbench needs >= {_min()}")
        if python == "python3":
            self.choices[name] = f"its own python3 {info.version} ({info.executable}): >= {_min()}"
        _check_free_space(name, path=lines[1], df_line=lines[-1])
        return info

    def close(self) -> None:
        for c in self.connections.values():
            c.close()


def _min() -> str:
    return ".".join(map(str, MIN_PYTHON))


class BundledPython(Protocol):
    """What installs the bundled python on the hosts that need it (fabfile.ship.bundled)."""

    forced: bool  # --bundled-python: every host runs it

    def announce(self, choices: Mapping[str, str]) -> None: ...

    def install(self, fleet: Fleet, machines: Mapping[str, str]) -> dict[str, str]:
        """``{host: absolute path of its bundled python}`` for ``{host: machine}``."""
        ...


def _check_free_space(name: str, path: str, df_line: str, need_mb: int = MIN_FREE_MB) -> None:
    """A full disk fails pushes and pex extraction in obscure ways: say so up front."""
    fields = df_line.split()
    free_mb = int(fields[3]) // 1024
    if free_mb < need_mb:
        raise RemoteError(name, _FREE_SPACE, f"only {free_mb} MB free in {path} (filesystem {fields[0]}, mounted "
                                             f"on {fields[-1]}); fleetbench needs {need_mb} MB there")

