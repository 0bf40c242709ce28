"""The deployment record: what is deployed where, so later ``inv`` calls can find it.

Kept in ``.fleetbench/state.json`` beside the project. Written atomically after each step
that changes the fleet, so a crash leaves the last true picture for ``inv down``. It holds the
deployment's redis password, so the file is 0600 and its directory 0700 (both are made so on
every save); :meth:`Deployment.public_dict` is the form without secrets that runs/ keeps.
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
SECRET_KEYS = ("redis_password", "server_digest")


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
    # host -> {"ssh": where we reach it, "private": where the other hosts do, "learned_from"}
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)
    pushed: dict[str, list[str]] = field(default_factory=dict)  # host -> remote files we put there
    server_files: dict[str, str] = field(default_factory=dict)  # host -> dir of the server's own files
    runs: list[str] = field(default_factory=list)  # run ids benched on this deployment
    # The redis servers' password (random per deployment); secret: only here and on the server
    # hosts in 0600 files, handed to agents in their jobs (stdin). Empty for `command` servers.
    redis_password: str = ""
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

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the secrets (the password, and the digest that hashes the
        server's secret environment): what a run's ``deployment.json`` keeps."""
        public = self.to_dict()
        for key in SECRET_KEYS:
            public.pop(key, None)
        return public

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
    """Write the state atomically, readable by its owner only (it holds the redis password)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # also a directory made before the state held secrets
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # a leftover tmp file kept its old mode through O_CREAT
        f.write(json.dumps(deployment.to_dict(), indent=1, sort_keys=True))
    tmp.replace(path)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
