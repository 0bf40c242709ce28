"""A real agent process reports each wall-clock second as it closes: on stderr (marked lines)
and in the records file beside --out, the same records that end up in its result."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

from bench.wire import hist, progress

REPO = Path(__file__).resolve().parents[2]


class Pong(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for _ in self.rfile:
            self.wfile.write(b"+PONG\r\n")


def test_each_second_goes_out_as_it_closes_and_matches_the_result(tmp_path):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Pong)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    job = {"run_id": "t", "benchmark": "s", "workload": "python", "agent_num": 0, "agents": 1,
           "server_kind": "redis", "targets": [f"127.0.0.1:{server.server_address[1]}"], "connections": 2,
           "duration_s": 2.5, "rate": 300.0, "params": {"target": "redis_ping:connect"}}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "examples")]))
    try:
        p = subprocess.run([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(job),
                            "--out", str(tmp_path / "agent-0.json")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    on_stderr = [r for r in map(progress.parse_line, p.stderr.splitlines()) if r is not None]
    in_file = [json.loads(line) for line in (tmp_path / "agent-0.seconds.ndjson").read_text().splitlines()]
    assert on_stderr == in_file == result["timeseries"]
    assert len(on_stderr) in (3, 4)  # 2.5 s starting mid-second: 3 or 4 wall-clock seconds
    assert [r["at"] for r in on_stderr] == list(range(on_stderr[0]["at"], on_stderr[0]["at"] + len(on_stderr)))
    assert on_stderr[0]["at"] <= result["started_at"] < on_stderr[0]["at"] + 1
    assert sum(r["ops"] for r in on_stderr) == result["ops"] > 0
    assert sum(hist.decode(r["hist"]).get_total_count() for r in on_stderr if "hist" in r) == result["ops"]
    assert not any(line.startswith(progress.MARK) for line in p.stdout.splitlines())  # stdout: the result only
