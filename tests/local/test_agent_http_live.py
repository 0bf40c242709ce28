"""The agent CLI's http workload against real HTTP servers on 127.0.0.1.

The servers are the standard library's ``http.server`` in threads of this process: two
keep-alive HTTP/1.1 nodes (as a ``command`` server would give) and one HTTP/1.0 server that
closes after every response. The agent runs as a subprocess, as it does on a host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench.wire import hist
from bench.wire.result import RESULT_SCHEMA

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.protocol_version == "HTTP/1.1" and "Transfer-Encoding" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers), body))
        path = self.path
        if path == "/missing":
            self._reply(404, b"no")
        elif path == "/slow":
            time.sleep(1.5)
            self._reply(200, b"late")
        elif path == "/chunked":
            self._reply(200, b"", {"Transfer-Encoding": "chunked"})
            self.wfile.write(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n")
        elif path == "/close":
            self.close_connection = True
            self._reply(200, b"bye", {"Connection": "close"})
        else:
            self._reply(200, b"x" * 100 + path.encode())

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class Http10Handler(Handler):
    protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the server closes


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type) -> None:
        super().__init__((HOST, 0), handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"{HOST}:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.connections = 0
            self.requests = []

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Server]]:
    servers = [Server(Handler), Server(Handler)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def http10() -> Iterator[Server]:
    s = Server(Http10Handler)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def fresh(nodes: list[Server], http10: Server) -> None:
    for s in (*nodes, http10):
        s.reset()


def job(targets: list[str], kind: str = "command", **fields: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"run_id": "t", "benchmark": "http-test", "workload": "http", "agent_num": 0, "agents": 1,
                         "server_kind": kind, "targets": targets, "connections": 3}
    d.update(fields)
    if "iterations" not in d and "duration_s" not in d:
        d["iterations"] = 600
    return d


def run_agent(j: dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j)], cwd=str(REPO), env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.splitlines()
    return p.returncode, (json.loads(lines[-1]) if lines else {}), p.stderr


def assert_result(rc: int, result: dict[str, Any], stderr: str, ops: int, errors: int = 0) -> None:
    assert rc == 0, stderr
    assert result["schema"] == RESULT_SCHEMA and "fatal" not in result, stderr
    assert (result["ops"], result["errors"]) == (ops, errors), result["error_samples"]
    assert hist.decode(result["histograms"]["latency_us"]).get_total_count() == ops
    assert sum(s["ops"] for s in result["timeseries"]) == ops
    assert sum(s["errors"] for s in result["timeseries"]) == errors


def test_closed_loop_round_robin_over_nodes_and_paths_on_kept_alive_connections(nodes):
    j = job([n.target for n in nodes], params={"paths": ["/a", "/b", "/missing"]})
    rc, result, err = run_agent(j)
    assert_result(rc, result, err, ops=400, errors=200)
    assert sorted(result["error_samples"]) == [f"HTTP/1.1 404 Not Found (GET /missing HTTP/1.1 on {n.target})"
                                               for n in sorted(nodes, key=lambda n: n.target)]
    for n in nodes:
        assert len(n.requests) == 300
        assert {p for _, p, _, _ in n.requests} == {"/a", "/b", "/missing"}
        assert n.connections == 3  # one per worker, reused for every request
        assert n.requests[0][2]["Host"] == n.target and n.requests[0][2]["User-Agent"].startswith("fleetbench/")
    assert "HTTP GET round-robin over 3 path(s) on 2 node(s)" in err


def test_open_loop_reports_both_histograms_and_late_ops(nodes):
    j = job([nodes[0].target], duration_s=1.0, rate=300.0, iterations=None, params={"paths": ["/"]})
    rc, result, err = run_agent(j)
    assert_result(rc, result, err, ops=300)
    assert hist.decode(result["histograms"]["service_us"]).get_total_count() == 300
    assert 0 <= result["late_ops"] <= 300
    assert result["job"]["rate"] == 300.0


def test_post_sends_body_and_headers(nodes):
    j = job([nodes[1].target], iterations=20, connections=1,
            params={"method": "POST", "paths": ["/items"], "body": '{"a": 1}',
                    "headers": {"Content-Type": "application/json", "X-Run": "t"}})
    rc, result, err = run_agent(j)
    assert_result(rc, result, err, ops=20)
    method, path, headers, body = nodes[1].requests[0]
    assert (method, path, body) == ("POST", "/items", b'{"a": 1}')
    assert headers["Content-Type"] == "application/json" and headers["X-Run"] == "t"


def test_chunked_head_and_connection_close(nodes):
    rc, result, err = run_agent(job([nodes[0].target], iterations=60, params={"paths": ["/chunked"]}))
    assert_result(rc, result, err, ops=60)
    assert nodes[0].connections == 3
    rc, result, err = run_agent(job([nodes[0].target], iterations=30, params={"method": "HEAD"}))
    assert_result(rc, result, err, ops=30)
    nodes[0].reset()
    rc, result, err = run_agent(job([nodes[0].target], iterations=30, params={"paths": ["/close"]}))
    assert_result(rc, result, err, ops=30)
    assert nodes[0].connections == 30  # the server closes after each response: a new connection each time


def test_http10_server_that_closes_after_every_response(http10):
    rc, result, err = run_agent(job([http10.target], iterations=50, connections=2))
    assert_result(rc, result, err, ops=50)
    assert http10.connections == 50


def test_urls_instead_of_server_nodes(nodes):
    urls = [f"http://{nodes[0].target}/u1", f"http://{nodes[1].target}/u2?q=1"]
    j = job(["127.0.0.1:1"], kind="redis", iterations=40, params={"urls": urls})  # the targets are not used
    rc, result, err = run_agent(j)
    assert_result(rc, result, err, ops=40)
    assert [p for _, p, _, _ in nodes[0].requests] == ["/u1"] * 20
    assert [p for _, p, _, _ in nodes[1].requests] == ["/u2?q=1"] * 20


def test_request_timeout_is_an_op_error_not_fatal(nodes):
    j = job([nodes[0].target], iterations=6, connections=2, params={"paths": ["/slow", "/"], "timeout": 0.3})
    rc, result, err = run_agent(j)
    assert_result(rc, result, err, ops=3, errors=3)
    assert result["error_samples"] == [f"no response from {nodes[0].target} within 0.3s"]


def test_unreachable_server_is_fatal_and_bad_jobs_exit_2(nodes):
    gone = Server(Handler)
    dead = gone.target
    gone.stop()
    rc, result, err = run_agent(job([dead], iterations=5))
    assert rc == 1 and "cannot connect" in result["fatal"] and result["ops"] == 0
    rc, result, err = run_agent(job([nodes[0].target], pipeline=4))
    assert rc == 2 and result == {} and "pipeline must be 1" in err
    rc, result, err = run_agent(job([nodes[0].target], params={"urls": ["https://example.test/"]}))
    assert rc == 2 and "https is not supported" in err
