"""fabfile.deployment: typed in memory, the same JSON on disk as before (state.json, deployment.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fabfile import deployment as state_file
from fabfile.deployment import Deployment, StateError
from fabfile.errors import FleetbenchError
from fabfile.remote.fleet import Interpreter
from fabfile.servers.nodes import Node
from fabfile.ship.build import Artifact

# A state.json as the untyped record wrote it (dicts of Artifact.to_dict, Node.to_dict, facts).
ON_DISK = {
    "artifacts": {"agent": {"name": "agent", "path": "/p/.fleetbench/build/agent-ab.pex", "sha256": "ab" * 32,
                            "remote_path": ".fleetbench/bin/agent-abababababababab.pex"}},
    "hosts": {"tb1": {"executable": "/usr/bin/python3", "hostname": "tb1", "implementation": "cpython",
                      "libc": ["glibc", "2.36"], "machine": "x86_64", "soabi": "cpython-311-x86_64-linux-gnu",
                      "version": "3.11.2"}},
    "nodes": [{"address": "10.0.0.1", "host": "tb1", "index": 0, "pid": 42, "port": 7000, "role": "master"},
              {"address": "10.0.0.2", "host": "tb2", "index": 1, "pid": 43, "port": 7001, "role": "replica"}],
    "pushed": {"tb1": [".fleetbench/bin/agent-abababababababab.pex"]},
    "redis_password": "f0" * 24, "runs": ["r1"], "server_digest": "d" * 16, "spawn": {"name": "x"},
    "spawn_path": "spawn.toml",
    "topology": "cluster", "version": state_file.STATE_VERSION,
}
# What it writes back: the same, with the keys added since as their defaults (a record from before
# server files: no node version, hosts on Linux, no server files; before private addresses: none).
WRITTEN = {**ON_DISK, "nodes": [{**n, "version": ""} for n in ON_DISK["nodes"]],
           "hosts": {h: {**i, "system": "Linux"} for h, i in ON_DISK["hosts"].items()}, "server_files": {},
           "addresses": {}}


def test_the_record_reads_typed_and_writes_back_the_same_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(ON_DISK, indent=1, sort_keys=True))
    loaded = state_file.load(path)
    assert loaded is not None
    assert loaded.nodes[1] == Node("tb2", "10.0.0.2", 7001, 1, pid=43, role="replica")
    assert loaded.artifacts["agent"] == Artifact("agent", Path("/p/.fleetbench/build/agent-ab.pex"), "ab" * 32)
    assert isinstance(loaded.hosts["tb1"], Interpreter) and loaded.hosts["tb1"].libc == ["glibc", "2.36"]
    assert [n.endpoint for n in loaded.masters] == ["10.0.0.1:7000"]
    assert loaded.to_dict() == WRITTEN
    state_file.save(path, loaded)
    assert path.read_text() == json.dumps(WRITTEN, indent=1, sort_keys=True)
    assert state_file.load(path) == loaded


def test_an_empty_record_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state_file.save(path, Deployment())
    assert state_file.load(path) == Deployment()
    state_file.clear(path)
    assert state_file.load(path) is None


def test_a_record_of_another_version_is_a_clean_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({**ON_DISK, "version": 0}))
    with pytest.raises(StateError, match=f"{path}: deployment state version 0 is not") as err:
        state_file.load(path)
    assert isinstance(err.value, FleetbenchError)


def test_the_state_is_private_and_a_runs_copy_holds_no_secret(tmp_path: Path) -> None:
    import os
    import stat

    state_dir = tmp_path / ".fleetbench"
    state_dir.mkdir(mode=0o755)  # as an older fleetbench left it
    path = state_dir / "state.json"
    path.write_text("{}")
    path.chmod(0o644)
    loaded = Deployment.from_dict(dict(ON_DISK))
    state_file.save(path, loaded)
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    public = json.dumps(loaded.public_dict())
    assert "f0" * 24 not in public and "d" * 16 not in public
    assert [n["pid"] for n in loaded.public_dict()["nodes"]] == [42, 43]
