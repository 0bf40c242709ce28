"""The ``fleetbench`` command as a user gets it: a wheel built from this checkout (not an editable
install) in a fresh venv, run from a directory outside the repository against the testbed.

The wheel is built from a copy of what it is made of (pyproject.toml, README.md, bench/, fabfile/)
so the build leaves nothing in the checkout and cannot reach devtools/ or tests/; the venv takes its
dependencies from the registry as the Makefile's does (pip's cache keeps that quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
WHEEL_SOURCES = ("pyproject.toml", "README.md", "bench", "fabfile")

SPAWN = """
name = "installed"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "redis"
port = 7300
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 2000
params = { keyspace = 100 }
"""


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # Nothing of the checkout's: no PYTHONPATH, no activated venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**env, "PYTHONUNBUFFERED": "1"})


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}\n--- stdout\n" \
                                 f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed; its bin directory."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = root / "wheels"
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, source], root))
    (wheel,) = wheels.glob("fleetbench-*.whl")
    _ok(_run([sys.executable, "-m", "venv", root / "venv"], root))
    bin_dir = root / "venv" / "bin"
    _ok(_run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheel], root))
    return bin_dir


def test_the_wheel_installs_the_package_and_not_the_developer_tools(venv: Path, tmp_path: Path) -> None:
    probe = ("import importlib.util, fabfile.cli.program as p; print(p.__file__); "
             "print(importlib.util.find_spec('devtools'), importlib.util.find_spec('tasks'))")
    lines = _ok(_run([venv / "python", "-c", probe], tmp_path)).stdout.splitlines()
    assert lines[0].startswith(str(venv.parent / "lib")) and "site-packages" in lines[0], lines
    assert lines[1] == "None None"
    refused = _run([venv / "fleetbench", "testbed.up"], tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("testbed.up is a developer tool of fleetbench's source checkout"), refused.stderr


def test_check_spawn_and_report_from_a_directory_outside_the_checkout(venv: Path, project, tmp_path: Path) -> None:
    project.reset()
    work = tmp_path / "bench-here"
    work.mkdir()
    assert REPO not in work.parents and work != REPO
    (work / "spawn.toml").write_text(project.spawn(SPAWN))
    fleetbench = venv / "fleetbench"

    checked = _ok(_run([fleetbench, "check"], work))
    assert checked.stdout.strip() == "spawn.toml: ok (1 server hosts, 2 agent hosts, 1 benchmarks)"

    # The testbed's ssh_config is the project's, not this directory's: given once, before the task.
    ssh_config = project.path / ".testbed" / "ssh_config"
    spawned = _ok(_run([fleetbench, "--ssh-config", ssh_config, "spawn"], work, timeout=900))
    out = spawned.stdout
    assert "connected to 3 hosts" in out, out
    run_line = next(line for line in out.splitlines() if line.startswith("run ") and ": ok -> " in line)
    run_id = run_line.split()[1].rstrip(":")
    assert run_line.endswith(str(work / "runs" / run_id / "run.json")), run_line

    # The run is stored here, under ./runs, with the build cache beside it.
    assert (work / "runs" / "latest").resolve() == work / "runs" / run_id
    run = json.loads((work / "runs" / run_id / "run.json").read_text())
    assert run["status"] == "ok"
    (bench,) = run["benchmarks"]
    assert (bench["name"], bench["ops"], bench["errors"]) == ("set", 2000, 0)
    assert (work / ".fleetbench").is_dir()
    assert not (REPO / "runs" / run_id).exists()

    reported = _ok(_run([fleetbench, "report"], work)).stdout
    row = next(line for line in reported.splitlines() if line.startswith("set "))
    assert "2,000" in row or "2000" in row, reported
    assert _ok(_run([fleetbench, "runs", "--format", "csv"], work)).stdout.count(run_id) == 1

    # Somewhere else, the same command sees only that directory's runs unless told where they are.
    other = tmp_path / "other"
    other.mkdir()
    missing = _run([fleetbench, "report"], other)
    assert missing.returncode == 1 and missing.stderr.startswith("report failed: "), missing.stderr
    elsewhere = _ok(_run([fleetbench, "--runs-dir", work / "runs", "report", "--format", "csv"], other)).stdout
    assert any(line.startswith("set,") and ",2000," in line for line in elsewhere.splitlines()), elsewhere
    assert not (other / "runs").exists()
