"""The deployment record: what is deployed where, so later ``inv`` calls can find it.

Kept in ``.fleetbench/state.json`` beside the project. Written atomically after each step
that changes the fleet, so a crash leaves the last true picture for ``inv down``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1


@dataclass
class Deployment:
    spawn: dict[str, Any] = field(default_factory=dict)  # the normalised spawn file
    spawn_path: str = ""
    server_digest: str = ""  # what the running servers were started from (config + pex)
    topology: str = ""  # "cluster" | "standalone" | "command"
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> Artifact.to_dict()
    nodes: list[dict[str, Any]] = field(default_factory=list)  # Node.to_dict() per server node
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> interpreter facts
    pushed: dict[str, list[str]] = field(default_factory=dict)  # host -> remote files we put there
    runs: list[str] = field(default_factory=list)  # run ids benched on this deployment
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load(path: Path) -> Deployment | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: deployment state version {data.get('version')} is not {STATE_VERSION}; "
                         "remove it after stopping the old deployment by hand")
    return Deployment(**data)


def save(path: Path, deployment: Deployment) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(deployment.to_dict(), indent=1, sort_keys=True))
    tmp.replace(path)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
