"""The controller's commands against a real shell (issue 20): a state file replaced while a poll
reads it, a live run found under a symlinked HOME, the plan removed when the pex cannot start,
and a start channel whose exit status never comes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from bench.wire import hostrun as wire
from fabfile.remote import host
from fabfile.remote.shell import RemoteError
from fabfile.runs import hostrun


def _sh(command: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], env={**os.environ, "HOME": str(home)}, capture_output=True,
                          check=check, timeout=60)


def _unpack(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_state_file_replaced_while_it_is_read_is_read_whole(tmp_path):
    """The host run replaces state.json at every change; a poll that reads it twice by name gets
    half of one and half of the other. Read through one open file, it is one or the other."""
    control = tmp_path / ".fleetbench" / "runs" / "r1" / "_run"
    control.mkdir(parents=True)
    small = json.dumps({"pid": 1, "status": "running", "pad": ""}) + "\n"
    large = json.dumps({"pid": 1, "status": "running", "pad": "x" * 20000}) + "\n"
    _write_atomic(control / "state.json", small)
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            for text in (large, small):
                _write_atomic(control / "state.json", text)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    command = hostrun.poll_command("r1", {}, renew=False)
    got = []
    try:
        for _ in range(150):
            files = hostrun.parse_poll(_unpack(_sh(command, tmp_path).stdout))
            assert files is not None
            got.append(files[wire.STATE][1].decode())
    finally:
        stop.set()
        writer.join(10)
    torn = [text[:60] for text in got if text not in (small, large)]
    assert not torn, f"{len(torn)} of {len(got)} polls got a torn state.json"
    assert large in got or small in got


def test_a_live_run_is_found_under_a_symlinked_home(tmp_path):
    real = tmp_path / "real-home"
    control = real / ".fleetbench" / "runs" / "r9" / "_run"
    control.mkdir(parents=True)
    home = tmp_path / "home"
    home.symlink_to(real)  # /proc's cwd says real-home/...; $HOME says home/...
    sleeper = subprocess.Popen(["sleep", "30"], cwd=control)
    try:
        (control / "state.json").write_text(json.dumps({"pid": sleeper.pid, "started_at": 1700000000.5}))
        found = hostrun.parse_live_runs(_sh(hostrun.live_runs_command(), home).stdout.decode())
        assert found == [("r9", 1700000000.5)]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("pex", ["#!/bin/sh\nexit 3\n", None])  # a pex that fails at once, or is missing
def test_the_plan_is_removed_when_the_pex_does_not_start(tmp_path, pex):
    if pex is not None:
        path = tmp_path / ".fleetbench" / "bin" / "agent.pex"
        path.parent.mkdir(parents=True)
        path.write_text(pex)
        path.chmod(0o700)
    done = subprocess.run(["sh", "-c", hostrun.start_command("r1", ".fleetbench/bin/agent.pex")],
                          env={**os.environ, "HOME": str(tmp_path)}, input=b'{"secret": "s3cr3t-value"}',
                          capture_output=True, timeout=60)
    assert done.returncode != 0
    control = tmp_path / ".fleetbench" / "runs" / "r1" / "_run"
    assert control.is_dir()
    assert not list(control.glob("plan.json*")), list(control.iterdir())


class _Buffer:
    def set_event(self, event: threading.Event) -> None:
        event.set()  # its output has ended: the reader looks at once


class _Channel:
    """A session channel whose command's output ends but whose exit status never comes."""

    eof_received = True
    closed = False

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.in_buffer = self.in_stderr_buffer = _Buffer()

    def settimeout(self, timeout: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def recv_ready(self) -> bool:
        return False

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_exit_status(self) -> int:
        self.status_event.wait()  # paramiko's own: no timeout
        return 0

    def close(self) -> None:
        self.status_event.set()


class _Transport:
    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> _Channel:
        return _Channel()


class _Connection:
    original_host = "h1"
    transport = _Transport()


def test_a_start_channel_without_an_exit_status_times_out(monkeypatch):
    monkeypatch.setattr(host, "EXIT_STATUS_S", 0.2)
    out: dict = {}

    def call() -> None:
        try:
            hostrun.exec_with_stdin(host.SshHost(_Connection()), "true", b"plan", timeout=1.0)  # type: ignore[arg-type]
        except RemoteError as exc:
            out["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "exec_with_stdin waited for the exit status forever"
    assert "no exit status" in str(out["error"])


def test_a_poll_spends_a_fixed_budget_results_first_and_whole(tmp_path, monkeypatch):
    """However many agents a host has, a poll sends at most its budget: a result that does not
    fit is framed empty from its end ("there, later"), the rest of a stderr comes next time."""
    monkeypatch.setattr(hostrun, "POLL_BUDGET_BYTES", 150)
    base = tmp_path / ".fleetbench" / "runs" / "r1"
    (base / "_run").mkdir(parents=True)
    (base / "set").mkdir()
    (base / "_run" / "state.json").write_text('{"pid": 1}')
    for n in (0, 1):
        (base / "set" / f"agent-{n}.json").write_bytes(b"{" + b" " * 98 + b"}")
    (base / "set" / "agent-0.stderr").write_bytes(b"e" * 80)
    offsets = {"set/agent-0.stderr": 0, "set/agent-0.json": 0, "set/agent-1.json": 0}
    files = hostrun.parse_poll(_unpack(_sh(hostrun.poll_command("r1", offsets, renew=False), tmp_path).stdout))
    assert files is not None
    assert files["set/agent-0.json"] == (0, b"{" + b" " * 98 + b"}")  # results first, whole
    assert files["set/agent-1.json"] == (100, b"")  # does not fit: next time
    assert files["set/agent-0.stderr"] == (0, b"e" * 50)  # what is left of the budget
    assert files[wire.STATE] == (0, b'{"pid": 1}')  # the state is never cut by the budget
