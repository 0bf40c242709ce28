"""What the task entry points share: where things are, how to connect, and clean failures.

Every known failure (a bad spawn file, a host that cannot be reached, a command that failed
remotely, a build that failed) reaches the user as one clear message and a non-zero exit,
never as a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from pathlib import Path

from invoke.exceptions import Exit

from bench.report.merge import ResultError
from bench.spawn.spec import SpecError
from fabfile.remote.fleet import FleetError
from fabfile.remote.shell import RemoteError
from fabfile.remote.ssh import ConnectError, SshSettings
from fabfile.session import PipelineError, Session, Workspace
from fabfile.ship.build import BuildError

KNOWN_ERRORS = (SpecError, FleetError, RemoteError, ConnectError, BuildError, PipelineError, ResultError,
                FileNotFoundError)

_sessions: dict[tuple, Session] = {}


def workspace() -> Workspace:
    return Workspace(Path.cwd())


def ssh_settings(ws: Workspace, ssh_config: str | None, accept_new_host_keys: bool) -> SshSettings:
    """The user's ssh_config, with the testbed's in front of it when a testbed is up."""
    files = [Path(ssh_config).expanduser()] if ssh_config else []
    testbed = ws.testbed_dir / "ssh_config"
    if testbed.is_file():
        files.append(testbed)
    return SshSettings(tuple(files), accept_new_host_keys=accept_new_host_keys)


def session(spawn: str, ssh_config: str | None = None, accept_new_host_keys: bool = False) -> Session:
    """One Session per (spawn file, ssh settings) for the whole ``inv`` call, so that the tasks
    of ``inv deploy bench collect`` share their connections instead of reconnecting."""
    ws = workspace()
    settings = ssh_settings(ws, ssh_config, accept_new_host_keys)
    key = (str(ws.root), str(Path(spawn).resolve()), settings)
    if key not in _sessions:
        _sessions[key] = Session(ws, Path(spawn), settings)
    return _sessions[key]


def forget_sessions() -> None:
    for s in _sessions.values():
        s.close()
    _sessions.clear()


atexit.register(forget_sessions)


@contextlib.contextmanager
def clean_errors(what: str) -> Iterator[None]:
    try:
        yield
    except KNOWN_ERRORS as exc:
        raise Exit(f"{what} failed: {exc}", code=1) from None
    except KeyboardInterrupt:
        raise Exit(f"{what} interrupted", code=130) from None
