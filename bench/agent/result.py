"""The result (bench.wire.result.AgentResult) and how it leaves the agent.

It is written to ``--out`` first (tmp file + rename, so a reader never sees half a file and
a result survives a lost controller), then printed as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile

import bench
from bench.agent.stats import Recorder
from bench.wire.job import AgentJob
from bench.wire.result import RESULT_SCHEMA, AgentResult


def build(job: AgentJob, rec: Recorder, *, fatal: str | None = None, interrupted: bool = False,
          event_loop: str = "asyncio") -> AgentResult:
    out: AgentResult = {
        "schema": RESULT_SCHEMA,
        "run_id": job.run_id,
        "benchmark": job.benchmark,
        "workload": job.workload,
        "agent_num": job.agent_num,
        "agents": job.agents,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "fleetbench": bench.__version__,
        "event_loop": event_loop,
        "started_at": round(rec.started_at, 6),
        "elapsed_s": round(rec.elapsed(), 6),
        "ops": rec.ops,
        "errors": rec.errors,
        "error_samples": list(rec.error_samples),
        "histograms": rec.histograms(),
        "timeseries": rec.series,
        "job": {**job.to_dict(), "auth": None},  # never the password
    }
    if job.rate is not None:
        out["late_ops"] = rec.late_ops
        out["late_busy_ops"] = rec.late_busy_ops
        out["late_loop_ops"] = rec.late_loop_ops
    if fatal is not None:
        out["fatal"] = fatal
    if interrupted:
        out["interrupted"] = True
    return out


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".result-", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result is not a secret
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def emit(result: AgentResult, out_path: str | None) -> bool:
    """Write ``--out`` (if any) and print the one result line. False if ``--out`` failed."""
    line = json.dumps(result, sort_keys=True, separators=(",", ":"))
    ok = True
    if out_path:
        try:
            write_atomic(out_path, line + "\n")
        except OSError as exc:
            try:
                print(f"fleetbench-agent: cannot write {out_path}: {exc}", file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass
            ok = False
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # nobody reads stdout any more (a lost SSH session): --out has it
        _silence_stdout()
    return ok


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's exit flush does not fail on a broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
