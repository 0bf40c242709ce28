"""A server that stalls for 1 s in every 5 s, driven open loop at 200 ops/s (Gil Tene's "How NOT
to measure latency"; field notes, "Latency truth, by construction"): 20% of the intended requests
wait 0 to 1 s, so the corrected p99 is about 0.95 s. The live lines must show it (each merges
every second since the line before, with its worst second beside it: one second picked every
10 s said p99 under 8 ms), and the late-ops warning must blame the server, which held every
connection, not the agents, which kept the rate.

The server is a few lines of the standard library pushed as a file (``python3`` is on the
testbed's hosts): HTTP/1.1 keep-alive, one thread per connection, every request that arrives in
the first second of a 5-second period of the wall clock held until that second ends.
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.fleet

SERVER = '''#!/usr/bin/env python3
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PERIOD_S, STALL_S = 5, 1.0


class Stalling(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body in one send (flushed per response): no Nagle + delayed-ACK 40 ms

    def do_GET(self):
        now = time.time()
        if now % PERIOD_S < STALL_S:  # the stall: held until it ends
            time.sleep(STALL_S - now % PERIOD_S)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Stalling).serve_forever()
'''

SPAWN = """
name = "stall"
[hosts]
servers = ["$h2"]
agents = ["$h3", "$h4"]
[server]
kind = "command"
port = 7600
files = ["stall/stall-server"]
script = "stall-server"
args = ["{host}", "{port}"]
ready = "tcp"
[[benchmark]]
name = "stalling"
workload = "http"
agents = 2
duration = "12s"
rate = 200
connections = 4
"""

MS = {"ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = text.split()
    return float(value) * MS[unit]


def test_live_lines_show_a_stall_and_the_warning_blames_the_server(project):
    project.reset()
    server = project.path / "stall" / "stall-server"
    server.parent.mkdir(exist_ok=True)
    server.write_text(SERVER)
    server.chmod(0o755)
    spawn = project.write_spawn("stall.toml", SPAWN)
    try:
        out = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                          "collect", "--spawn", str(spawn)).stdout
    finally:
        project.inv("down", "--spawn", str(spawn), check=False)
    print(out)  # shown with -rP: what a user sees
    live = [line for line in out.splitlines() if line.startswith("[live] stalling: ")]
    figures = [re.search(r"p99 ([\d.]+ m?s) over the last (\d+) s, worst second p99 ([\d.]+ m?s); "
                         r"([\d,]+) errors, ([\d,]+) late in them", line) for line in live]
    assert len(live) >= 2 and all(figures), live  # one mid-run (every 10 s), one at the end
    # every second is in some line: a 1 s stall cannot fall between two of them
    assert sum(int(f.group(2)) for f in figures) >= 10, live
    worst = max(max(_ms(f.group(1)), _ms(f.group(3))) for f in figures)
    assert worst >= 500, live  # the ops held by a 1 s stall: hundreds of ms late, not a few ms
    assert sum(int(f.group(5).replace(",", "")) for f in figures) > 0, live

    run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
    (entry,) = run["benchmarks"]
    assert entry["errors"] == 0 and entry["latency_us"]["p99"] >= 500_000  # the run's own table agrees
    assert entry["late_busy_ops"] > entry["late_loop_ops"], entry  # the agents measured who held them
    warning = re.search(r"^.*stalling: [\d,]+ of [\d,]+ ops \([\d.]+%\) were sent late: (.*)$", out, re.M)
    assert warning, out
    assert warning.group(1).startswith("every connection was busy waiting on the server"), warning.group(0)
    assert "the server was the limit, not the agents" in warning.group(1)
