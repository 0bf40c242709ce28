"""Running agent processes on hosts and bringing their results back.

Each agent runs attached to its own SSH channel: its first stdout line is its pid (so it can
be stopped if we are interrupted), its last stdout line is its JSON result, and its stderr
streams back line by line, labelled with host and agent. The agent also writes its result on
the host (``--out``), so a result survives a lost controller.

What an agent sends is bounded here, whatever it sends: the last STDERR_KEEP_BYTES of its stderr
are kept (echoed lines are cut at ECHO_LINE_BYTES), and a result line over MAX_RESULT_BYTES is
refused as that agent's failure; stdout past that is read and dropped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from fabric import Connection
from paramiko import Channel

from bench.spawn import secrets
from bench.wire import progress
from bench.wire.job import AgentJob
from bench.wire.result import AgentRecord, AgentResult, Failure
from fabfile.remote.shell import PEX_ROOT, REMOTE_DIR, cmd, label, run, tail
from fabfile.remote.streams import ByteTail, LineCutter, mib
from fabfile.remote.transport import output_event
from fabfile.runs.store import dir_name

Echo = Callable[[str], None]

#: The stderr an agent's record keeps (its end: where a traceback or the last progress is).
STDERR_KEEP_BYTES = 4 << 20
#: An echoed stderr line is cut here: one line without a newline must not flood the terminal.
ECHO_LINE_BYTES = 4 << 10
#: A per-second record (its histogram encoded) is one stderr line and may be long; still bounded.
RECORD_LINE_BYTES = 1 << 20
#: The largest result line accepted. A 15-minute run's per-second histograms take about 3 MiB.
MAX_RESULT_BYTES = 16 << 20
_PID_LINE_BYTES = 32
_READS_PER_PASS = 16
#: Longest wait between looks at a quiet agent's channel: how soon a cancel or the deadline is seen.
_LOOK_S = 0.2


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
    """Runs in the benchmark's own directory, so the reaper can always find it. The job comes
    on stdin (:func:`wire_job`): it may hold secrets, and a command line is public on a host."""
    out = remote_result_path(job)
    workdir, name = out.rsplit("/", 1)
    return (
        f"umask 077 && mkdir -p {cmd(workdir)} && cd {cmd(workdir)} && echo $$ && "
        f'PEX_ROOT="$HOME/{PEX_ROOT}" exec "$HOME"/{cmd(agent_pex)} run --job-file - --out {cmd(name)}'
    )


def wire_job(job: AgentJob, auth: str | None, environ: Mapping[str, str]) -> str:
    """The job as its agent gets it: the redis password in, every { env = ... } resolved."""
    return replace(job, params=secrets.resolve(job.params, environ, f"benchmark {job.benchmark!r} params"),
                   auth=auth).to_json()


def public_job(job: AgentJob) -> dict[str, Any]:
    """The job as a result may keep it: secrets by name (``{"env": NAME}``), no password."""
    return {**job.to_dict(), "params": secrets.public(job.params), "auth": None}


def run_agent(c: Connection, agent_pex: str, job: AgentJob, *, echo: Echo, timeout: float,
              on_pid: Callable[[int], None] = lambda pid: None,
              cancel: threading.Event | None = None, auth: str | None = None,
              environ: Mapping[str, str] = os.environ,
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
    stdout = ByteTail(MAX_RESULT_BYTES)
    head = bytearray()  # the pid line
    stderr = ByteTail(STDERR_KEEP_BYTES)
    lines = LineCutter(ECHO_LINE_BYTES)  # what is shown of each stderr line
    records = LineCutter(RECORD_LINE_BYTES)  # the same lines, long enough for a per-second record

    def got_stdout(data: bytes) -> None:
        stdout.feed(data)
        if outcome.pid is None and len(head) < _PID_LINE_BYTES:
            head.extend(data[:_PID_LINE_BYTES])
            first, newline, _ = bytes(head).partition(b"\n")
            if newline and first.strip().isdigit():
                outcome.pid = int(first.strip())
                on_pid(outcome.pid)

    def got_stderr(data: bytes) -> None:
        stderr.feed(data)
        show(records.feed(data), lines.feed(data))

    def show(full: list[str], shown: list[str]) -> None:
        for line, cut in zip(full, shown, strict=True):  # the same bytes, so the same lines
            record = progress.parse_line(line)
            if record is not None:  # data for the live view, not a log line
                if on_record is not None:
                    on_record(record)
                continue
            echo(f"{prefix} {cut}")

    try:
        channel.exec_command(agent_command(agent_pex, job))
        channel.sendall(wire_job(job, auth, environ).encode())
        channel.shutdown_write()
        _pump(c, channel, outcome, got_stdout, got_stderr, timeout, cancel)
        if outcome.error is None and channel.exit_status_ready():
            outcome.exit_code = channel.recv_exit_status()
    finally:
        show(records.flush(), lines.flush())
        outcome.stderr = [line for line in stderr.text("bytes of stderr").splitlines()
                          if progress.parse_line(line) is None]  # the per-second records went to on_record
        channel.close()
    outcome.result, refused = _last_json(stdout)
    if outcome.result is not None:
        outcome.result["job"] = public_job(job)  # the agent's echo of it holds the secrets
    if outcome.result is None and outcome.error is None:
        if refused:
            outcome.error = refused
        elif outcome.exit_code == -1:  # paramiko's "no exit-status": sshd sent exit-signal instead
            outcome.error = "the agent was killed by a signal (no exit status) and printed no result"
        else:
            outcome.error = f"exit status {outcome.exit_code} and no JSON result on stdout"
    return outcome


def _pump(c: Connection, channel: Channel, outcome: AgentOutcome, got_stdout: Callable[[bytes], None],
          got_stderr: Callable[[bytes], None], timeout: float, cancel: threading.Event | None) -> None:
    """Read the channel until the agent ends, the host is lost, we are cancelled or time is up."""
    host = outcome.host
    deadline = time.monotonic() + timeout
    arrived = output_event(channel)  # a quiet agent costs no wakeups (125 agents polled 50 times a second did)
    while True:
        # A bounded number of reads per pass: an agent that floods one stream cannot starve
        # the other, nor keep us from seeing the deadline or a cancel.
        busy = False
        for _ in range(_READS_PER_PASS):
            if not channel.recv_stderr_ready():
                break
            got_stderr(channel.recv_stderr(65536))
            busy = True
        for _ in range(_READS_PER_PASS):
            if not channel.recv_ready():
                break
            got_stdout(channel.recv(65536))
            busy = True
        if not busy and (channel.exit_status_ready() or channel.closed or not c.transport.is_active()):
            # A dead connection closes the channel too, with no exit status (-1).
            if channel.exit_status == -1 and not c.transport.is_active():
                outcome.error = f"lost the connection to {host} while the agent ran" + _why_lost(c)
            return
        if cancel is not None and cancel.is_set():
            outcome.error = "interrupted: no result came back after the agent was stopped"
            return
        if time.monotonic() > deadline:
            outcome.error = f"no result after {timeout:.0f}s; stopped it"
            stop_agent(c, outcome.pid)
            return
        if not busy:
            arrived.wait(_LOOK_S)  # output, EOF, close or a lost connection wake it at once


def _why_lost(c: Connection) -> str:
    exc = c.transport.get_exception() if c.transport is not None else None
    return f" ({exc})" if exc else ""


def _last_json(stdout: ByteTail) -> tuple[AgentResult | None, str | None]:
    """The result (the last line that is a JSON object), or why there is none to take.
    Not checked here: the merge checks every result it reads back."""
    for line in stdout.lines_from_end():
        line = line.strip()
        if line.startswith(b"{"):
            try:
                data = json.loads(line)
            except (ValueError, RecursionError):
                return None, None
            return (cast(AgentResult, data), None) if isinstance(data, dict) else (None, None)
    if stdout.dropped:
        return None, (f"its result is larger than {mib(MAX_RESULT_BYTES)} (stdout sent {stdout.total} bytes): "
                      "refused")
    return None, None


def stop_agent(c: Connection, pid: int | None) -> None:
    """TERM an agent (it then prints what it measured), if that pid is still one of our agents."""
    if not pid:
        return
    pid = int(pid)
    # Real paths on both sides: $HOME may go through a symlink, /proc/PID/cwd never does.
    ours = (f'{{ r=$(cd -P "$HOME"/{REMOTE_DIR}/runs 2>/dev/null && pwd) && '
            f'case "$(readlink /proc/{pid}/cwd 2>/dev/null)" in "$r/"*) true;; *) false;; esac; }}')
    run(c, f"{ours} && kill {pid} || true", check=False, timeout=10)
