"""Shared fixtures. ``local_host`` is a :class:`fabfile.remote.host.Host` that runs the real
remote shell scripts with ``sh`` on this machine, in a private temporary HOME."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ci_guard import (  # noqa: F401  (hooks: CI runs the real suite)
    pytest_addoption,
    pytest_configure,
    pytest_runtest_makereport,
)


class LocalHost:
    """Runs commands as a host would (``sh -c``, cwd = HOME), nothing more. ``start`` is not
    here: what streams into a host is tested with tests/unit/fakes.py's FakeHost."""

    def __init__(self, home: Path, name: str = "local"):
        self.home = home
        self.original_host = name
        self.fleetbench_name = name
        self.host = "127.0.0.1"  # where the controller reaches it (Connection.host, read by Fleet.address)
        self.commands: list[str] = []

    @property
    def name(self) -> str:
        return self.fleetbench_name

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None):
        from fabfile.remote.host import Output  # agent-side tests run where fabfile cannot be imported

        self.commands.append(command)
        env = {"HOME": str(self.home), "PATH": os.environ["PATH"]}
        proc = subprocess.run(["sh", "-c", command], cwd=self.home, env=env, capture_output=True,
                              timeout=timeout or 60, input=stdin)
        return Output(proc.returncode, proc.stdout, proc.stderr)

    def run_input(self, command: str, data: bytes, *, timeout: float, limit: int):
        from fabfile.remote.streams import HostDataError

        output = self.run(command, timeout=timeout, stdin=data)
        if len(output.stdout) > limit:
            raise HostDataError(f"{self.name}: `{command[:80]}` sent more than {limit} bytes; refused")
        return output


@pytest.fixture
def local_host(tmp_path: Path) -> LocalHost:
    home = tmp_path / "home"
    home.mkdir()
    return LocalHost(home)


@pytest.fixture(autouse=True)
def _no_user_ssh_config(monkeypatch, tmp_path):
    """Keep the developer's own ~/.ssh/config and known_hosts out of tests."""
    try:
        from fabfile.remote import ssh
    except ImportError:  # agent-side tests also run on a host-like Python without fabric
        return

    monkeypatch.setattr(ssh, "USER_SSH_CONFIG", tmp_path / "no-ssh-config")
    monkeypatch.setattr(ssh, "USER_KNOWN_HOSTS", tmp_path / "no-known-hosts")


@pytest.fixture(scope="session")
def redis_builds(tmp_path_factory):
    """One build cache of redis-server from source for the whole session (fabfile.ship.redis_source):
    a platform is compiled once (a minute or two), whichever test needs it first."""
    from fabfile.ship.redis_source import RedisBuilder

    return RedisBuilder(tmp_path_factory.mktemp("redis-builds"))
