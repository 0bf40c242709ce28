"""The fleet's preflight, run for real with sh against a private HOME."""

from __future__ import annotations

import stat

import pytest

from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import REMOTE_DIR, RemoteError


def _fleet_of(host) -> Fleet:
    fleet = Fleet.__new__(Fleet)  # no SSH: the preflight runs on the local stand-in
    fleet.connections = {host.original_host: host}
    fleet.private_overrides, fleet.addresses = {}, {}
    return fleet


def test_preflight_probes_python_and_makes_the_private_dir_in_one_round_trip(local_host):
    info = _fleet_of(local_host)._preflight("local")
    assert len(local_host.commands) == 1
    assert tuple(int(x) for x in info.version.split(".")[:2]) >= (3, 9) and info.executable
    assert stat.S_IMODE((local_host.home / REMOTE_DIR).stat().st_mode) == 0o700
    assert (local_host.home / REMOTE_DIR / "runs").is_dir()


def test_preflight_names_a_host_without_python3_and_creates_nothing(local_host, tmp_path, monkeypatch):
    only_sh = tmp_path / "only-sh"
    only_sh.mkdir()
    (only_sh / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(only_sh))
    with pytest.raises(RemoteError) as err:
        _fleet_of(local_host)._preflight("local")
    assert str(err.value).startswith("local: ") and "no python3" in str(err.value)
    assert not (local_host.home / REMOTE_DIR).exists()
