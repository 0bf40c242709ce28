"""One ``inv`` call's view of the fleet: the spawn file, the open fleet, the deployment record.

A Session is shared by every task of the call (``inv deploy bench collect`` connects once):
:func:`session` keeps one per (project, spawn file, ssh settings) until the call ends. What the
stages do with it lives in :mod:`fabfile.stages`; a Session only holds what they share.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.spawn import secrets, spec
from fabfile import deployment as state_file
from fabfile.deployment import Deployment
from fabfile.remote.fleet import Fleet
from fabfile.remote.ssh import SshSettings
from fabfile.ship.bundled import BundledInstaller
from fabfile.terminal import hide, say

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Workspace:
    """Where the controller keeps things, relative to the project directory (the working one)."""

    root: Path
    runs: Path | None = None  # --runs-dir (fleetbench.runs_dir): relative to root, or absolute

    @property
    def cache_dir(self) -> Path:
        return self.root / ".fleetbench"

    @property
    def state_path(self) -> Path:
        return self.cache_dir / "state.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / (self.runs or "runs")

    @property
    def testbed_dir(self) -> Path:
        return self.root / ".testbed"


def load_spawn(path: Path, servers: Sequence[str] | None = None, agents: Sequence[str] | None = None) -> spec.Spawn:
    """The spawn file, validated, with every { env = ... } secret's variable set in this
    environment (each one missing is named by its key, before any SSH); their values are
    hidden from everything shown from now on."""
    spawn = spec.load(path, servers=servers, agents=agents)
    missing = secrets.missing(spawn, os.environ)
    if missing:
        raise spec.SpecError(missing)
    for value in secrets.values(spawn, os.environ).values():
        hide(value)
    return spawn


class Session:
    def __init__(self, workspace: Workspace, spawn_path: Path, settings: SshSettings, echo: Echo = say,
                 servers: Sequence[str] | None = None, agents: Sequence[str] | None = None):
        self.workspace = workspace
        self.spawn_path = spawn_path
        self.settings = settings
        self.echo = echo
        self.host_lists = (servers, agents)  # --servers/--agents: replace the spawn file's [hosts]
        self._spawn: spec.Spawn | None = None
        self._fleet: Fleet | None = None
        self.bundled_python = False  # --bundled-python: every host runs the bundled python
        self._installer: BundledInstaller | None = None

    def _pex3_tool(self) -> Path:
        from fabfile.ship.build import Builder  # the pex tooling is only loaded when a bundle is built

        return Builder(self.workspace.cache_dir, echo=self.echo).pex3_tool().path

    def bundled_platform(self, host: str) -> Path | None:
        """The pex complete platform of ``host``'s bundled python (None: it runs its own python3)."""
        machine = self.fleet().needs_bundled.get(host)
        return self._installer.platform_file(machine) if machine and self._installer else None

    @property
    def spawn(self) -> spec.Spawn:
        if self._spawn is None:
            servers, agents = self.host_lists
            self._spawn = load_spawn(self.spawn_path, servers=servers, agents=agents)  # SpecError before any SSH
        return self._spawn

    def fleet(self, hosts: Sequence[str] | None = None, python: bool = True) -> Fleet:
        """The open fleet of every host in the spawn file (or ``hosts``), connected once.
        ``python=False``: hosts that would need the bundled python do not get it (stopping and
        removing need no Python, and a ``down`` must not push one to then delete it)."""
        if self._fleet is None:
            names = hosts or [*self.spawn.hosts.servers, *self.spawn.hosts.agents]
            # the spawn file's overrides of where hosts reach each other (``down`` needs none)
            overrides = {} if hosts else self.spawn.hosts.private_addresses
            started = time.monotonic()
            self._installer = BundledInstaller(self.bundled_python, self.echo, pex3_tool=self._pex3_tool)
            self._fleet = Fleet(names, self.settings, overrides, bundled=self._installer).open(python=python)
            self.echo(f"connected to {len(self._fleet.names)} hosts in {time.monotonic() - started:.1f}s")
            private = [f"{n}={a.private}" for n, a in self._fleet.addresses.items() if a.private != a.ssh]
            if private:  # behind a NAT (a cloud's public addresses), or reached at another interface
                more = f" (and {len(private) - 5} more)" if len(private) > 5 else ""
                self.echo(f"hosts reach each other at private addresses: {', '.join(private[:5])}{more}")
        return self._fleet

    def open_fleet(self) -> Fleet | None:
        """The fleet this call already opened (``fleet()``), if any: a later stage reuses its connections."""
        return self._fleet

    def deployment(self) -> Deployment | None:
        deployment = state_file.load(self.workspace.state_path)
        if deployment is not None:
            hide(deployment.redis_password)
        return deployment

    def save(self, deployment: Deployment) -> None:
        state_file.save(self.workspace.state_path, deployment)

    def forget_deployment(self) -> None:
        state_file.clear(self.workspace.state_path)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()
            self._fleet = None


# -- the per-call cache ----------------------------------------------------------------------

_sessions: dict[tuple[object, ...], Session] = {}


def workspace(runs_dir: str | Path | None = None) -> Workspace:
    return Workspace(Path.cwd(), Path(runs_dir).expanduser() if runs_dir else None)


def ssh_settings(ws: Workspace, ssh_config: str | None, accept_new_host_keys: bool) -> SshSettings:
    """The user's ssh_config, with the testbed's in front of it when a testbed is up."""
    files = [Path(ssh_config).expanduser()] if ssh_config else []
    testbed = ws.testbed_dir / "ssh_config"
    if testbed.is_file():
        files.append(testbed)
    return SshSettings(tuple(files), accept_new_host_keys=accept_new_host_keys)


def session(spawn: str, ssh_config: str | None = None, accept_new_host_keys: bool = False,
            servers: list[str] | None = None, agents: list[str] | None = None,
            runs_dir: str | Path | None = None) -> Session:
    """One Session per (spawn file, ssh settings, hosts) for the whole ``inv`` call, so that the
    tasks of ``inv deploy bench collect`` share their connections instead of reconnecting."""
    ws = workspace(runs_dir)
    settings = ssh_settings(ws, ssh_config, accept_new_host_keys)
    hosts = (tuple(servers) if servers is not None else None, tuple(agents) if agents is not None else None)
    key = (ws, str(Path(spawn).resolve()), settings, hosts)
    if key not in _sessions:
        _sessions[key] = Session(ws, Path(spawn), settings, servers=servers, agents=agents)
    return _sessions[key]


def forget_sessions() -> None:
    for s in _sessions.values():
        s.close()
    _sessions.clear()


atexit.register(forget_sessions)
