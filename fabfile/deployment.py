"""The deployment record: what is deployed where, so later ``inv`` calls can find it.

Kept in ``.fleetbench/state.json`` beside the project. Written atomically after each step
that changes the fleet, so a crash leaves the last true picture for ``inv down``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fabfile.errors import FleetbenchError
from fabfile.remote.fleet import Interpreter
from fabfile.servers.nodes import Node
from fabfile.ship import server_build
from fabfile.ship.build import Artifact

STATE_VERSION = 1


class StateError(FleetbenchError, ValueError):
    """The deployment record cannot be read; the message names the file."""


@dataclass
class Deployment:
    spawn: dict[str, Any] = field(default_factory=dict)  # the normalised spawn file
    spawn_path: str = ""
    server_digest: str = ""  # what the running servers were started from (config + pex)
    topology: str = ""  # "cluster" | "standalone" | "command"
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # "server" | "agent" -> its pex
    nodes: list[Node] = field(default_factory=list)  # every server node started
    hosts: dict[str, Interpreter] = field(default_factory=dict)  # host -> its python3
    pushed: dict[str, list[str]] = field(default_factory=dict)  # host -> remote files we put there
    server_files: dict[str, str] = field(default_factory=dict)  # host -> dir of the server's own files
    runs: list[str] = field(default_factory=list)  # run ids benched on this deployment
    version: int = STATE_VERSION

    @property
    def masters(self) -> list[Node]:
        """The nodes agents send load to (a replica only follows its master)."""
        return [n for n in self.nodes if n.role == "master"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as in ``state.json`` and a run's ``deployment.json``."""
        return {**self.__dict__,
                "artifacts": {name: a.to_dict() for name, a in self.artifacts.items()},
                "nodes": [n.to_dict() for n in self.nodes],
                "hosts": {name: asdict(i) for name, i in self.hosts.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        artifacts = {name: server_build.restore(a) if "platform" in a  # the server's own files
                     else Artifact(a["name"], Path(a["path"]), a["sha256"])
                     for name, a in data.get("artifacts", {}).items()}  # remote_path follows from them
        return cls(**{**data, "artifacts": artifacts,
                      "nodes": [Node(**n) for n in data.get("nodes", [])],
                      "hosts": {name: Interpreter(**i) for name, i in data.get("hosts", {}).items()}})


def load(path: Path) -> Deployment | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("version") != STATE_VERSION:
        raise StateError(f"{path}: deployment state version {data.get('version')} is not {STATE_VERSION}; "
                         "remove it after stopping the old deployment by hand")
    return Deployment.from_dict(data)


def save(path: Path, deployment: Deployment) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(deployment.to_dict(), indent=1, sort_keys=True))
    tmp.replace(path)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
