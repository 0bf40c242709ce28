"""The run store: one directory per run, written as results arrive.

    runs/<run-id>/
      spawn.toml            the spawn file as given
      spawn.json            its normalised form
      deployment.json       hosts, nodes, pids, pex hashes
      agents/<benchmark>/agent-<n>.json     each agent's raw result (or failure record)
      agents/<benchmark>/agent-<n>.stderr   its stderr
      run.json              the merged run (schema_version), written by collect
    runs/latest -> <run-id>
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple


def new_run_id(name: str, now: Optional[float] = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "run"
    return f"{stamp}-{safe}-{secrets.token_hex(2)}"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


class RunDir:
    def __init__(self, root: Path, run_id: str):
        self.root = root
        self.run_id = run_id
        self.path = root / run_id

    def start(self, spawn_text: str, spawn: Dict[str, Any], deployment: Dict[str, Any], meta: Dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "spawn.toml", spawn_text)
        write_json(self.path / "spawn.json", spawn)
        write_json(self.path / "deployment.json", deployment)
        write_json(self.path / "meta.json", meta)
        self.point_latest()

    def meta(self) -> Dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())

    def update_meta(self, **changes: Any) -> None:
        meta = self.meta()
        meta.update(changes)
        write_json(self.path / "meta.json", meta)

    def agent_path(self, benchmark: str, agent_num: int) -> Path:
        return self.path / "agents" / benchmark / f"agent-{agent_num}.json"

    def write_agent(self, benchmark: str, agent_num: int, record: Dict[str, Any], stderr: List[str]) -> None:
        """``record`` is {"result": ...} or {"failure": ...}; stderr is kept beside it."""
        path = self.agent_path(benchmark, agent_num)
        write_atomic(path.with_suffix(".stderr"), "\n".join(stderr) + ("\n" if stderr else ""))
        write_json(path, record)

    def agent_records(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """(benchmark, record) for every agent written so far."""
        for path in sorted((self.path / "agents").glob("*/agent-*.json")):
            yield path.parent.name, json.loads(path.read_text())

    def write_run(self, run: Dict[str, Any]) -> Path:
        path = self.path / "run.json"
        write_json(path, run)
        return path

    def point_latest(self) -> None:
        link = self.root / "latest"
        tmp = self.root / f".latest.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.run_id)
        tmp.replace(link)


def resolve(root: Path, ref: Optional[str]) -> RunDir:
    """A run by id, by directory, or the latest one."""
    if ref and Path(ref).is_dir():
        path = Path(ref).resolve()
        return RunDir(path.parent, path.name)
    run_id = ref or (os.readlink(root / "latest") if (root / "latest").is_symlink() else None)
    if not run_id or not (root / run_id).is_dir():
        raise FileNotFoundError(f"no run {ref!r} under {root}/" if ref else f"no runs yet under {root}/")
    return RunDir(root, run_id)
