"""The fleet's preflight, run for real with sh against a private HOME."""

from __future__ import annotations

import platform
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import REMOTE_DIR


def _fleet_of(host) -> Fleet:
    fleet = Fleet.__new__(Fleet)  # no SSH: the preflight runs on the local stand-in
    fleet.connections = fleet.hosts = {host.original_host: host}  # the stand-in is both
    fleet.private_overrides, fleet.addresses = {}, {}
    fleet.bundled, fleet.choices, fleet.needs_bundled = None, {}, {}
    return fleet


def _path_without_python(tmp_path, monkeypatch, python3: str | None = None):
    """PATH: the system's tools but no python (and ``python3``, a script, when given)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for d in ("/usr/bin", "/bin"):
        for tool in sorted(Path(d).iterdir()):
            if not tool.name.startswith("python") and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    if python3 is not None:
        (tools / "python3").write_text(python3)
        (tools / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))


def test_preflight_probes_python_and_makes_the_private_dir_in_one_round_trip(local_host):
    info = _fleet_of(local_host)._preflight("local")
    assert len(local_host.commands) == 1
    assert tuple(int(x) for x in info.version.split(".")[:2]) >= (3, 9) and info.executable
    assert stat.S_IMODE((local_host.home / REMOTE_DIR).stat().st_mode) == 0o700
    assert (local_host.home / REMOTE_DIR / "runs").is_dir()


def test_preflight_gives_a_host_without_python3_the_bundled_one_and_says_why(local_host, tmp_path, monkeypatch):
    _path_without_python(tmp_path, monkeypatch)
    fleet = _fleet_of(local_host)
    assert fleet._preflight("local") is None
    assert fleet.needs_bundled == {"local": platform.machine()}
    assert fleet.choices["local"].startswith("the bundled python (no python3 on the PATH;"), fleet.choices
    assert len(local_host.commands) == 1 and (local_host.home / REMOTE_DIR / "runs").is_dir()


def test_preflight_gives_a_host_with_python36_the_bundled_one(local_host, tmp_path, monkeypatch):
    _path_without_python(tmp_path, monkeypatch, "#!/bin/sh\necho 3.6.15; exit 3\n")
    fleet = _fleet_of(local_host)
    assert fleet._preflight("local") is None
    assert "python3 is 3.6.15" in fleet.choices["local"]


def test_without_a_bundled_python_a_host_without_python3_is_named(local_host, tmp_path, monkeypatch):
    _path_without_python(tmp_path, monkeypatch)
    fleet = _fleet_of(local_host)
    fleet._preflight("local")
    with pytest.raises(FleetError) as err:
        fleet._use_bundled()
    assert "local: " in str(err.value) and "no python3" in str(err.value)


def test_bundled_python_forced_on_a_host_with_a_good_python3(local_host):
    fleet = _fleet_of(local_host)
    fleet.bundled = SimpleNamespace(forced=True)
    assert fleet._preflight("local") is None
    assert fleet.choices["local"] == "the bundled python (--bundled-python)"


def test_the_own_python3_is_said_with_its_version(local_host):
    fleet = _fleet_of(local_host)
    info = fleet._preflight("local")
    assert fleet.choices["local"] == f"its own python3 {info.version} ({info.executable}): >= 3.9"
