"""The run store: one directory per run, written as results arrive.

    runs/<run-id>/
      spawn.toml            the spawn file as given
      spawn.json            its normalised form
      deployment.json       hosts, nodes, pids, pex hashes
      agents/<dir>/agent-<n>.json     each agent's raw result (or failure record) + its label
      agents/<dir>/agent-<n>.stderr   its stderr
      hosts/<host>/facts.json           the host's facts (bench.agent.hostfacts), at bench start
      hosts/<host>/metrics.ndjson       its per-second metrics (bench.agent.hostmetrics), appended
                                        after every benchmark phase
      hosts/<host>/logs/<port>-server.log.gz   what each server node logged during the run
      run.json              the merged run (schema_version), written by collect
      export/               HdrHistogram logs and CSV tables (bench.report.export), written by collect
      plots/                PNGs (bench.report.plots), written by ``inv plot``; report.html by ``inv report --html``
    runs/latest -> <run-id>

``<host>`` is the ssh destination as the spawn file gives it (the spec allows no ``/`` in one).

``<dir>`` is the benchmark label itself when it is a plain name, else a slug and a hash of it
(:func:`dir_name`): a name is data and never becomes a path as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from bench.wire.result import AgentRecord

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._#-]{0,99}\Z")


def dir_name(label: str) -> str:
    """The directory (locally and on hosts) of benchmark ``label``: the label when it is plain,
    else a readable slug plus a hash of the label, so that distinct labels never share one."""
    if _PLAIN.match(label):
        return label
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:40] or "benchmark"
    return f"{slug}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def new_run_id(name: str, now: float | None = None) -> str:
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


#: An agent's record holds its result, which the controller refused above 16 MiB when it came in.
MAX_RECORD_BYTES = 24 << 20


def _read_record(path: Path, agent_num: int) -> AgentRecord:
    def failed(why: str) -> AgentRecord:
        return cast(AgentRecord, {"benchmark": path.parent.name, "result": None, "failure": {
            "agent_num": agent_num, "host": None, "error": f"its record {path.name} {why}", "stderr_tail": ""}})

    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        return failed(f"is {size} bytes, more than the {MAX_RECORD_BYTES} accepted")
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        return failed(f"is not JSON ({type(exc).__name__})")
    if not isinstance(record, dict) or not isinstance(record.get("benchmark", ""), str):
        return failed("is not an agent record")
    return cast(AgentRecord, record)


class RunDir:
    def __init__(self, root: Path, run_id: str):
        self.root = root
        self.run_id = run_id
        self.path = root / run_id

    def start(self, spawn_text: str, spawn: dict[str, Any], deployment: dict[str, Any], meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "spawn.toml", spawn_text)
        write_json(self.path / "spawn.json", spawn)
        write_json(self.path / "deployment.json", deployment)
        write_json(self.path / "meta.json", meta)
        self.point_latest()

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())

    def update_meta(self, **changes: Any) -> None:
        meta = self.meta()
        meta.update(changes)
        write_json(self.path / "meta.json", meta)

    def agent_path(self, benchmark: str, agent_num: int) -> Path:
        return self.path / "agents" / dir_name(benchmark) / f"agent-{agent_num}.json"

    def write_agent(self, benchmark: str, agent_num: int, record: AgentRecord, stderr: list[str]) -> None:
        """``record`` holds the result, or the failure (and the result if any); stderr is kept beside it."""
        path = self.agent_path(benchmark, agent_num)
        write_atomic(path.with_suffix(".stderr"), "\n".join(stderr) + ("\n" if stderr else ""))
        write_json(path, {**record, "benchmark": benchmark})

    def agent_records(self) -> Iterator[tuple[str, AgentRecord]]:
        """(benchmark, record) for every agent written so far."""
        for benchmark, _, record in self.agent_files():
            yield benchmark, record

    def agent_files(self) -> Iterator[tuple[str, int, AgentRecord]]:
        """(benchmark, agent number, record) for every agent written so far. A file that cannot
        be read back (too large, not JSON, not a record) is that agent's failure record."""
        for path in sorted((self.path / "agents").glob("*/agent-*.json")):
            num = path.stem.removeprefix("agent-")
            if not num.isdigit():
                continue
            record = _read_record(path, int(num))
            yield str(record.get("benchmark") or path.parent.name), int(num), record

    def write_run(self, run: Mapping[str, Any]) -> Path:
        path = self.path / "run.json"
        write_json(path, run)
        return path

    # -- hosts: facts, metrics, logs (fabfile.runs.observe writes them as they arrive) --

    def host_dir(self, host: str) -> Path:
        return self.path / "hosts" / host

    def observed_hosts(self) -> list[str]:
        hosts = self.path / "hosts"
        return sorted(p.name for p in hosts.iterdir() if p.is_dir()) if hosts.is_dir() else []

    def write_host_facts(self, host: str, facts: dict[str, Any]) -> None:
        write_json(self.host_dir(host) / "facts.json", facts)

    def host_facts(self, host: str) -> dict[str, Any] | None:
        path = self.host_dir(host) / "facts.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def host_metrics_path(self, host: str) -> Path:
        return self.host_dir(host) / "metrics.ndjson"

    def host_metrics_size(self, host: str) -> int:
        path = self.host_metrics_path(host)
        return path.stat().st_size if path.is_file() else 0

    def append_host_metrics(self, host: str, lines: bytes) -> None:
        """Append complete NDJSON lines (the caller keeps a torn last line for later)."""
        path = self.host_metrics_path(host)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def host_metrics_text(self, host: str) -> str:
        path = self.host_metrics_path(host)
        return path.read_text() if path.is_file() else ""

    def write_host_log(self, host: str, name: str, data: bytes) -> Path:
        path = self.host_dir(host) / "logs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    def write_exports(self, files: dict[str, str]) -> Path:
        directory = self.path / "export"
        for name, text in files.items():
            write_atomic(directory / name, text)
        return directory

    def point_latest(self) -> None:
        link = self.root / "latest"
        tmp = self.root / f".latest.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.run_id)
        tmp.replace(link)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run under ``root``, oldest first: run_id, started_at, name, benchmarks, status.

    ``status`` is run.json's when the run was collected, else meta.json's with
    ``(not collected)``; ``benchmarks`` are run.json's names, else the spawn file's.
    """
    out: list[dict[str, Any]] = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        meta_path = path / "meta.json"
        if path.is_symlink() or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
            run = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else None
            spawn = json.loads((path / "spawn.json").read_text()) if (path / "spawn.json").is_file() else {}
        except ValueError as exc:
            out.append({"run_id": path.name, "started_at": None, "name": "?", "benchmarks": [],
                        "status": f"unreadable: {exc}"})
            continue
        if run is not None:
            names = [str(b.get("name")) for b in run.get("benchmarks", ())]
            status = str(run.get("status"))
        else:
            names = [str(b.get("name")) for b in spawn.get("benchmarks", ())]
            status = f"{meta.get('status', '?')} (not collected)"
        out.append({"run_id": path.name, "started_at": meta.get("started_at"), "name": meta.get("name"),
                    "benchmarks": names, "status": status})
    return sorted(out, key=lambda r: (r["started_at"] or 0, r["run_id"]))


def resolve(root: Path, ref: str | None) -> RunDir:
    """A run by id, by directory, or the latest one."""
    if ref and Path(ref).is_dir():
        path = Path(ref).resolve()
        return RunDir(path.parent, path.name)
    run_id = ref or (os.readlink(root / "latest") if (root / "latest").is_symlink() else None)
    if not run_id or not (root / run_id).is_dir():
        raise FileNotFoundError(f"no run {ref!r} under {root}/" if ref else f"no runs yet under {root}/")
    return RunDir(root, run_id)
