"""Running agent processes on hosts and bringing their results back.

Each agent runs attached to its own SSH channel: its first stdout line is its pid (so it can
be stopped if we are interrupted), its last stdout line is its JSON result, and its stderr
streams back line by line, labelled with host and agent. The agent also writes its result on
the host (``--out``), so a result survives a lost controller.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from fabric import Connection

from bench.wire import progress
from bench.wire.job import AgentJob
from bench.wire.result import AgentRecord, AgentResult, Failure
from fabfile.remote.shell import PEX_ROOT, REMOTE_DIR, cmd, label, run, tail
from fabfile.runs.store import dir_name

Echo = Callable[[str], None]


@dataclass
class AgentOutcome:
    host: str
    job: AgentJob
    result: AgentResult | None = None
    exit_code: int | None = None
    error: str | None = None
    stderr: list[str] = field(default_factory=list)
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.exit_code == 0 and not self.result.get("fatal")

    def failure(self) -> Failure:
        fatal = self.result.get("fatal") if self.result is not None else None
        return {"agent_num": self.job.agent_num, "host": self.host,
                "error": self.error or fatal or f"exit status {self.exit_code}",
                "stderr_tail": tail("\n".join(self.stderr))}

    def record(self) -> AgentRecord:
        """What the run store keeps for this agent: its result, and why it failed if it did."""
        if self.ok:
            return {"benchmark": self.job.benchmark, "result": self.result}
        return {"benchmark": self.job.benchmark, "failure": self.failure(), "result": self.result}


def remote_run_dir(run_id: str) -> str:
    return f"{REMOTE_DIR}/runs/{dir_name(run_id)}"


def remote_result_path(job: AgentJob) -> str:
    # The benchmark name is data (it may hold quotes, spaces, `$(...)`): only its slug is a path.
    return f"{remote_run_dir(job.run_id)}/{dir_name(job.benchmark)}/agent-{job.agent_num}.json"


def agent_command(agent_pex: str, job: AgentJob) -> str:
    """Runs in the benchmark's own directory, so the reaper can always find it."""
    out = remote_result_path(job)
    workdir, name = out.rsplit("/", 1)
    return (
        f"umask 077 && mkdir -p {cmd(workdir)} && cd {cmd(workdir)} && echo $$ && "
        f'PEX_ROOT="$HOME/{PEX_ROOT}" exec "$HOME"/{cmd(agent_pex)} run --job {cmd(job.to_json())} --out {cmd(name)}'
    )


def run_agent(c: Connection, agent_pex: str, job: AgentJob, *, echo: Echo, timeout: float,
              on_pid: Callable[[int], None] = lambda pid: None,
              cancel: threading.Event | None = None,
              on_record: Callable[[dict], None] | None = None) -> AgentOutcome:
    """Run one agent to completion (or ``timeout`` seconds, or until ``cancel`` is set) and
    return what happened. Its per-second records (bench.wire.progress) go to ``on_record``,
    its other stderr lines, labelled, to ``echo``. A lost host ends the wait once its connection is declared dead
    (see :func:`fabfile.remote.ssh.set_host_timeout`), never after the full ``timeout``."""
    host = label(c)
    outcome = AgentOutcome(host, job)
    prefix = f"[{host} {job.benchmark}#{job.agent_num}]"
    if c.transport is None or not c.transport.is_active():
        outcome.error = f"lost the connection to {host} earlier in this run; not started"
        return outcome
    channel = c.transport.open_session(timeout=30)
    stdout = b""
    stderr_buf = b""

    def emit_stderr(final: bool = False) -> None:
        nonlocal stderr_buf
        *lines, stderr_buf = stderr_buf.split(b"\n")
        if final and stderr_buf:
            lines.append(stderr_buf)
            stderr_buf = b""
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            record = progress.parse_line(line)
            if record is not None:  # data for the live view, not a log line
                if on_record is not None:
                    on_record(record)
                continue
            outcome.stderr.append(line)
            del outcome.stderr[:-200]  # keep a bounded tail
            echo(f"{prefix} {line}")

    try:
        channel.exec_command(agent_command(agent_pex, job))
        channel.shutdown_write()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            while channel.recv_stderr_ready():
                stderr_buf += channel.recv_stderr(65536)
                busy = True
            while channel.recv_ready():
                stdout += channel.recv(65536)
                busy = True
            if busy:
                emit_stderr()
                if outcome.pid is None and b"\n" in stdout:
                    first = stdout.split(b"\n", 1)[0].strip()
                    if first.isdigit():
                        outcome.pid = int(first)
                        on_pid(outcome.pid)
            elif channel.exit_status_ready() or channel.closed or not c.transport.is_active():
                # A dead connection closes the channel too, with no exit status (-1).
                if channel.exit_status == -1 and not c.transport.is_active():
                    outcome.error = f"lost the connection to {host} while the agent ran" + _why_lost(c)
                break
            elif cancel is not None and cancel.is_set():
                outcome.error = "interrupted: no result came back after the agent was stopped"
                break
            elif time.monotonic() > deadline:
                outcome.error = f"no result after {timeout:.0f}s; stopped it"
                stop_agent(c, outcome.pid)
                break
            else:
                time.sleep(0.02)
        if outcome.error is None and channel.exit_status_ready():
            outcome.exit_code = channel.recv_exit_status()
    finally:
        emit_stderr(final=True)
        channel.close()
    outcome.result = _last_json(stdout)
    if outcome.result is None and outcome.error is None:
        if outcome.exit_code == -1:  # paramiko's "no exit-status": sshd sent exit-signal instead
            outcome.error = "the agent was killed by a signal (no exit status) and printed no result"
        else:
            outcome.error = f"exit status {outcome.exit_code} and no JSON result on stdout"
    return outcome


def _why_lost(c: Connection) -> str:
    exc = c.transport.get_exception() if c.transport is not None else None
    return f" ({exc})" if exc else ""


def _last_json(stdout: bytes) -> AgentResult | None:
    """The result line. Not checked here: the merge checks every result it reads back."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                return None
            return cast(AgentResult, data) if isinstance(data, dict) else None
    return None


def stop_agent(c: Connection, pid: int | None) -> None:
    """TERM an agent (it then prints what it measured), if that pid is still one of our agents."""
    if not pid:
        return
    pid = int(pid)
    # Real paths on both sides: $HOME may go through a symlink, /proc/PID/cwd never does.
    ours = (f'{{ r=$(cd -P "$HOME"/{REMOTE_DIR}/runs 2>/dev/null && pwd) && '
            f'case "$(readlink /proc/{pid}/cwd 2>/dev/null)" in "$r/"*) true;; *) false;; esac; }}')
    run(c, f"{ours} && kill {pid} || true", check=False, timeout=10)
