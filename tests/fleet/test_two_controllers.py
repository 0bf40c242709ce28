"""Two controllers, one fleet: the second is refused, naming the holder, until the holder is
gone and it passes --force. The second controller is another project directory on this
machine, pointed at the same testbed with --ssh-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

INV = Path(sys.executable).parent / "inv"
REPO = Path(__file__).resolve().parents[2]
SPAWN = """
name = "shared"
[hosts]
servers = ["$h1"]
agents = ["$h4"]
[server]
kind = "redis"
port = 7400
[[benchmark]]
name = "set"
workload = "set"
agents = 1
iterations = 500
"""


def _other_inv(project, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INV), "--search-root", str(REPO), *args, "--ssh-config",
                           str(project.path / ".testbed" / "ssh_config")], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _node_alive(project, host: str, pid: int) -> bool:
    return project.ssh(host, f"[ -d /proc/{pid} ] && echo yes || echo no").stdout.strip() == "yes"


def test_a_second_controller_is_refused_until_the_holder_is_gone_and_it_forces(project, tmp_path):
    project.reset()
    h = project.hosts
    spawn = project.write_spawn("shared.toml", SPAWN)
    project.inv("deploy", "--spawn", str(spawn))
    [node] = json.loads((project.path / ".fleetbench" / "state.json").read_text())["nodes"]
    lock = json.loads(project.ssh(h[0], "cat ~/.fleetbench/lock").stdout)
    assert lock["project"] == str(project.path) and lock["run"] == "deploy shared"
    assert project.ssh(h[0], "stat -c %a ~/.fleetbench/lock").stdout.strip() == "600"

    other = tmp_path / "second-controller"
    other.mkdir()
    (other / "shared.toml").write_text(spawn.read_text())
    for task in ("deploy", "down"):
        refused = _other_inv(project, other, task, "--spawn", "shared.toml")
        assert refused.returncode == 1, refused.stdout
        assert "Traceback" not in refused.stderr
        assert f"{h[0]}: deploying is locked by {lock['user']}@{lock['controller']} (deploy shared, from " \
               f"{project.path}, pid {lock['pid']}) since " in refused.stderr, refused.stderr
        assert f"{h[3]}: deploying is locked by" in refused.stderr
        assert "pass --force" in refused.stderr
        assert _node_alive(project, h[0], node["pid"])  # the holder's server was left alone
    assert json.loads(project.ssh(h[0], "cat ~/.fleetbench/lock").stdout) == lock

    # The holder's `inv deploy` has ended (its pid is gone on this machine): --force may take over.
    forced = _other_inv(project, other, "deploy", "--spawn", "shared.toml", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"{h[0]}: took the deploy lock over from {lock['user']}@{lock['controller']}" in forced.stdout
    taken = json.loads(project.ssh(h[0], "cat ~/.fleetbench/lock").stdout)
    assert taken["project"] == str(other)
    # Now the first controller is the one refused.
    back = project.inv("deploy", "--spawn", str(spawn), check=False)
    assert back.returncode == 1 and f"from {other}, pid {taken['pid']}" in back.stderr, back.stderr
    down = _other_inv(project, other, "down", "--spawn", "shared.toml")
    assert down.returncode == 0, down.stderr
    project.reset()
