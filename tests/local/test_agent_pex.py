"""The real agent pex, built by the Builder for this machine's interpreter, opened and run.

It must ship the agent and the wire it speaks, and nothing of the controller: no spawn-file
parser (3.11-only tomllib), no merge, tables, compare or plots (matplotlib).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fabfile.ship import build

REPO = Path(__file__).resolve().parents[2]
CONTROLLER_ONLY = ("spec", "plots", "tables", "compare", "merge", "export", "hosts", "plan")


@pytest.fixture(scope="module")
def agent_pex(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("agent-pex")
    platform = tmp / "platform.json"
    inspect = subprocess.run([sys.executable, "-m", "pex.cli", "interpreter", "inspect", "--markers", "--tags"],
                             capture_output=True, text=True, check=True)
    platform.write_text(inspect.stdout)
    example = REPO / "examples" / "redis_ping.py"
    artifact = build.Builder(tmp / "cache", echo=lambda m: None).agent([platform], {"redis_ping": example})
    with zipfile.ZipFile(artifact.path) as z:
        names = z.namelist()
    return artifact.path, names


def ours(names: list[str]) -> set[str]:
    """The pex's own sources: everything but pex's bootstrap, its metadata and the wheels."""
    return {n for n in names if not n.startswith((".bootstrap/", ".deps/", "__pex__/"))
            and n not in ("PEX-INFO", "__main__.py") and not n.endswith("/")}


def test_the_agent_pex_ships_the_agent_and_the_wire_only(agent_pex):
    _, names = agent_pex
    shipped = ours(names)
    assert "bench/__init__.py" in shipped and "bench/agent/__main__.py" in shipped
    assert "bench/wire/job.py" in shipped and "bench/wire/result.py" in shipped
    assert "redis_ping.py" in shipped  # the user's python-workload module, at the top level
    outside = sorted(n for n in shipped - {"bench/__init__.py", "redis_ping.py"}
                     if not n.startswith(("bench/agent/", "bench/wire/")))
    assert outside == []
    # Exactly this tree's files of those packages, nothing stale, nothing compiled.
    expected = {f"bench/{p.relative_to(REPO / 'bench').as_posix()}"
                for package in build.AGENT_PACKAGES for p in (REPO / "bench" / package).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert shipped - {"bench/__init__.py", "redis_ping.py"} == expected
    stems = {Path(n).stem for n in names}
    for module in CONTROLLER_ONLY:
        assert module not in stems, module
    assert not [n for n in names if n.startswith(("bench/spawn/", "bench/report/"))]
    # Third-party code: uvloop only (the histograms are bench.wire.hdr's), never hdrhistogram or
    # the controller's fabric, invoke, tabulate or matplotlib.
    wheels = {n.split("/")[1].split("-")[0].lower() for n in names if n.startswith(".deps/") and n.count("/") > 1}
    assert wheels == {"uvloop"}


def test_the_agent_pex_runs_and_checks_its_job(agent_pex):
    path, _ = agent_pex
    job = {"run_id": "r", "benchmark": "b", "workload": "set", "agent_num": 0, "agents": 1,
           "server_kind": "redis", "targets": ["127.0.0.1:1"], "iterations": 0}
    env = {"PATH": "/usr/bin:/bin", "PEX_ROOT": str(path.parent / "pex_root"), "HOME": str(path.parent)}
    proc = subprocess.run([sys.executable, str(path), "run", "--job", json.dumps(job)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "invalid job: iterations: must be a positive integer, got 0" in proc.stderr
