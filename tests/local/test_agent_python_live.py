"""The agent CLI's python workload against real servers on 127.0.0.1: the example module
(examples/redis_ping.py) over real TCP connections, errors raised by ops, and the ways a
target can be wrong (exit 2 before any connection, or a fatal setup).

The server is a line server from the standard library's socketserver, in threads of this
process: ``PING`` gets ``+PONG``, anything else ``-ERR``. The agent runs as a subprocess with
the examples directory on its path, as the pex would hold the module.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.wire import hist

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]
        for line in self.rfile:
            self.wfile.write(b"+PONG\r\n" if line.strip() == b"PING" else b"-ERR unknown command\r\n")


class LineServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), LineHandler)
        self.lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"{HOST}:{self.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[list[LineServer]]:
    started = [LineServer(), LineServer()]
    yield started
    for s in started:
        s.shutdown()
        s.server_close()


def job(targets: list[str], **fields: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"run_id": "t", "benchmark": "py-test", "workload": "python", "agent_num": 0, "agents": 1,
                         "server_kind": "redis", "targets": targets, "connections": 4, "iterations": 2000,
                         "params": {"target": "redis_ping:connect"}}
    d.update(fields)
    return d


def run_agent(j: dict[str, Any], *paths: Path) -> tuple[int, dict[str, Any], str]:
    path = os.pathsep.join([str(REPO), str(REPO / "examples"), *map(str, paths)])
    env = dict(os.environ, PYTHONPATH=path)
    p = subprocess.run([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j)], cwd=str(REPO), env=env,
                       capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    return p.returncode, (json.loads(lines[-1]) if lines else {}), p.stderr


def test_example_module_pings_every_node(servers):
    rc, result, err = run_agent(job([s.target for s in servers]))
    assert rc == 0 and "fatal" not in result, err
    assert (result["ops"], result["errors"]) == (2000, 0)
    assert hist.decode(result["histograms"]["latency_us"]).get_total_count() == 2000
    assert sum(s["ops"] for s in result["timeseries"]) == 2000
    assert [s.connections for s in servers] == [2, 2]  # connection i of agent 0 -> node i mod 2
    assert "python redis_ping:connect" in err


def test_open_loop_and_op_errors(servers):
    j = job([servers[0].target], iterations=None, duration_s=1.0, rate=400.0, connections=2,
            params={"target": "redis_ping:connect", "options": {"command": "NOPE"}})
    rc, result, err = run_agent(j)
    assert rc == 0 and "fatal" not in result, err
    assert (result["ops"], result["errors"]) == (0, 400)
    assert result["error_samples"] == ["RuntimeError: -ERR unknown command"]
    assert sum(s["errors"] for s in result["timeseries"]) == 400 and "late_ops" in result


def test_wrong_targets_exit_2_before_connecting(tmp_path):
    (tmp_path / "half_done.py").write_text("def other(ctx):\n    return lambda: None\n")
    rc, result, err = run_agent(job(["127.0.0.1:1"], params={"target": "half_done:run"}), tmp_path)
    assert rc == 2 and result == {} and "module 'half_done' has no 'run'" in err
    rc, result, err = run_agent(job(["127.0.0.1:1"], params={"target": "not_shipped:run"}))
    assert rc == 2 and "not in this agent pex (list its file in params.modules)" in err


def test_failing_setup_is_fatal_with_the_cause(servers):
    gone = LineServer()
    dead = gone.target
    gone.shutdown()
    gone.server_close()
    rc, result, err = run_agent(job([dead], iterations=10, connections=1))
    assert rc == 1 and result["ops"] == 0
    assert result["fatal"].startswith("cannot connect to python:0: "
                                      "redis_ping:connect(ctx) raised ConnectionRefusedError")
    assert "Traceback" in err  # the user's traceback, to debug their setup


def test_an_agent_whose_pipes_are_gone_still_writes_its_result(servers, tmp_path):
    """Its SSH session ended: stdout and stderr are pipes nobody reads. The result file is
    written all the same (before any log line), and nothing is lost to a broken pipe."""
    path = os.pathsep.join([str(REPO), str(REPO / "examples")])
    out = tmp_path / "agent-0.json"
    j = job([servers[0].target], iterations=None, duration_s=1.0, connections=1)
    p = subprocess.Popen([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j), "--out", str(out)],
                         cwd=str(REPO), env=dict(os.environ, PYTHONPATH=path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    p.stderr.close()
    assert p.wait(60) == 0
    result = json.loads(out.read_text())
    assert result["ops"] > 0 and "fatal" not in result


def test_the_measured_window_opens_at_start_at(servers):
    import time

    start_at = time.time() + 1.5
    rc, result, err = run_agent(job([servers[0].target], iterations=None, duration_s=0.5, connections=1,
                                    start_at=start_at))
    assert rc == 0, err
    assert result["started_at"] >= start_at
    assert result["job"]["start_at"] == start_at


def test_with_a_start_file_the_agent_says_ready_then_waits_for_its_start(servers, tmp_path):
    import time

    path = os.pathsep.join([str(REPO), str(REPO / "examples")])
    start = tmp_path / "agent-0.start"
    j = job([servers[0].target], iterations=None, duration_s=0.5, connections=1)
    p = subprocess.Popen([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j), "--out",
                          str(tmp_path / "agent-0.json"), "--start-file", str(start)], cwd=str(REPO),
                         env=dict(os.environ, PYTHONPATH=path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (tmp_path / "agent-0.start.ready").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the agent never said it was ready"
        time.sleep(0.01)
    start_at = time.time() + 0.5
    start.write_text(repr(start_at))
    assert p.wait(60) == 0
    result = json.loads((tmp_path / "agent-0.json").read_text())
    assert result["started_at"] >= start_at and result["ops"] > 0
