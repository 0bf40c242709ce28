"""The command line run in this process with the stages replaced by a recorder (no fleet): the
``fake`` fixture (re-exported by conftest.py) and ``fleetbench``/``inv`` runners."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from invoke import Program

from fabfile import stages
from fabfile.cli.program import make_program
from fabfile.session import Session, forget_sessions

REPO = Path(__file__).resolve().parents[3]
SPAWN = (REPO / "spawn.toml").read_text()


@dataclass
class FakeRunDir:
    run_id: str
    detached: bool = False

    def meta(self) -> dict[str, Any]:
        return {"host_run": {"spawn_detached": self.detached}}


@dataclass
class Stages:
    """Stands in for fabfile.stages: records each call with what it was handed."""

    merged: dict[str, Any] = field(default_factory=lambda: {"run_id": "r1", "status": "ok", "benchmarks": []})
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _record(self, name: str, s: Session | None = None, **details: Any) -> None:
        if s is not None:
            details.update(spawn=str(s.spawn_path), hosts=s.host_lists, ssh_files=s.settings.config_files,
                           accept=s.settings.accept_new_host_keys, runs_dir=s.workspace.runs_dir,
                           bundled=s.bundled_python)
        self.calls.append((name, details))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def of(self, name: str) -> dict[str, Any]:
        return next(details for called, details in self.calls if called == name)

    def deploy(self, s: Session, direct_push: bool = False, force: bool = False) -> None:
        self._record("deploy", s, direct_push=direct_push, force=force)

    def build(self, s: Session) -> dict:
        self._record("build", s)
        return {}

    def bench(self, s: Session, run_options: Any) -> FakeRunDir:
        self._record("bench", s, options=run_options)
        return FakeRunDir("r1")

    def attach(self, s: Session, run: str | None, reconnect_for: float, verbose: bool = False,
               host_timeout: float | None = None) -> FakeRunDir:
        self._record("attach", s, run=run)
        return FakeRunDir(run or "r1", detached=True)

    def fetch(self, s: Session, run: str | None = None) -> None:
        self._record("fetch", s, run=run)

    def collect(self, runs_dir: Path, run: str | None = None, fmt: str = "simple", detail: bool = False,
                echo: Any = None) -> dict[str, Any]:
        self._record("collect", runs_dir=runs_dir, run=run, format=fmt, detail=detail)
        return self.merged

    def down(self, s: Session, keep_files: bool = False, force: bool = False) -> None:
        self._record("down", s, keep_files=keep_files, force=force)


@pytest.fixture
def fake(monkeypatch, tmp_path: Path) -> Stages:
    recorder = Stages()
    for module, name, replacement in [
        (stages.deploy, "run", recorder.deploy), (stages.deploy, "build", recorder.build),
        (stages.bench, "run", recorder.bench), (stages.bench, "attach", recorder.attach),
        (stages.collect, "fetch", recorder.fetch), (stages.collect, "run", recorder.collect),
        (stages.down, "run", recorder.down),
    ]:
        monkeypatch.setattr(module, name, replacement)
    for key in [k for k in os.environ if k.startswith("INVOKE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.fleetbench.yaml of the developer's
    project = tmp_path / "project"
    project.mkdir()
    (project / "spawn.toml").write_text(SPAWN)
    (project / "other.toml").write_text(SPAWN.replace('name = "default"', 'name = "other"'))
    monkeypatch.chdir(project)
    yield recorder
    forget_sessions()


def fleetbench(capsys, *argv: str) -> tuple[int, str, str]:
    """``fleetbench ARGV`` in this process: its exit status, stdout and stderr."""
    code = 0
    try:
        make_program().run(["fleetbench", *argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def inv(capsys, *argv: str) -> tuple[int, str, str]:
    """``inv --search-root REPO ARGV`` in this process, as the checkout's users run it."""
    code = 0
    try:
        Program(binary_names=["invoke", "inv"]).run(["inv", "--search-root", str(REPO), *argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
