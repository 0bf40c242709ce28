"""A capacity search against a server whose capacity is known by construction.

The server is examples/slot-server (a few lines of the standard library pushed as a file;
``python3`` is on the testbed's hosts): HTTP/1.1 keep-alive, one thread per connection, but every
request takes the next free slot of SERVICE_MS on one shared schedule and is answered when its
slot ends. However the requests are spread over connections and whatever each costs (below a
slot), it completes exactly 1000 / SERVICE_MS requests a second; beyond that its queue, and
every latency, grows step by step. The search must find that rate within its precision, on the hosts
with no controller attached while it runs (the coordinator's decisions are the rows of run.json),
and say so in the table. A second search
whose highest rate still passes must say the server was not saturated.

The testbed's hosts share the machine's cores with whatever else runs (the rest of the suite, or
more), so an agent's loop wakes more than 1 ms late now and then and a p99 of tens of ms is
noise: the searches allow 30% of a step's ops to be sent late (``late``; late sends still count
in every latency, measured from when each op was due, and a step must still send 99% of its
ops), and the SLO is p99 < 150 ms. Past the capacity the queue grows by the excess rate: 7.5%
over it, a 2 s step ends with 75 requests queued, 150 ms of them; so the search's first fail
lies within 7.5% of the capacity, inside its 10% precision.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]

SERVICE_MS = 2.0
CAPACITY = 1000 / SERVICE_MS  # 500 requests a second
PRECISION = 0.10


SPAWN = f"""
name = "capacity"
[hosts]
servers = ["$h2"]
agents = ["$h3", "$h4"]
[server]
kind = "command"
port = 7610
files = ["capacity/slot-server"]
script = "slot-server"
args = ["{{host}}", "{{port}}", "{SERVICE_MS:g}"]
ready = "tcp"

[[benchmark]]
name = "max-get"
workload = "http"
agents = 2
connections = 4
expect = ["rate >= 400"]
search.rate = [150, 4000]
search.slo = ["p99 < 150ms", "errors == 0"]
search.step = "2s"
search.precision = "{PRECISION:.0%}"
search.late = "30%"

[[benchmark]]
name = "too-easy"
workload = "http"
agents = 2
connections = 4
search = {{ rate = [100, 400], slo = ["p99 < 150ms"], step = "1s", late = "30%" }}
"""


def test_a_search_finds_the_servers_capacity_within_its_precision(project):
    project.reset()
    server = project.path / "capacity" / "slot-server"
    server.parent.mkdir(exist_ok=True)
    shutil.copy(REPO / "examples" / "slot-server", server)
    spawn = project.write_spawn("capacity.toml", SPAWN)
    try:
        # Detached: no controller while the steps run; the hosts choose every rate themselves.
        started = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn), "--detach").stdout
        run_id = re.search(r"^run (\S+)$", started, re.M).group(1)
        deadline = time.monotonic() + 300
        while "max-get#s3#" not in project.inv("status", "--spawn", str(spawn), "--run", run_id).stdout:
            assert time.monotonic() < deadline, "the search never reached its third step"
            time.sleep(0.5)
        out = project.inv("attach", "--spawn", str(spawn), "--run", run_id).stdout  # follows, then collects
    finally:
        project.inv("down", "--spawn", str(spawn), check=False)
    print(out)  # shown with -rP: what a user sees

    latest = project.path / "runs" / "latest"
    run = json.loads((latest / "run.json").read_text())
    found, easy = (entry["search"] for entry in run["benchmarks"])
    assert found["status"] == "found", found
    assert abs(found["found"] - CAPACITY) / CAPACITY <= PRECISION, found
    assert found["last_pass"] < found["first_fail"]
    assert (found["first_fail"] - found["last_pass"]) / found["last_pass"] <= PRECISION
    rows = found["rows"]
    assert [r["rate"] for r in rows[:3]] == [150, 300, 600]  # the ramp doubles to the first failure ...
    assert not rows[2]["passed"] and rows[2]["limit"] == "server" and "p99" in rows[2]["why"]
    assert all(r["passed"] for r in rows if r["rate"] <= 0.9 * CAPACITY)  # ... then bisects
    assert not any(r["passed"] for r in rows if r["rate"] >= 1.1 * CAPACITY)
    assert all(r["sent_pct"] >= 99 for r in rows if r["passed"])  # the fleet really sent each rate that passed
    # the rows are what the coordinator decided on the hosts, step by step
    host_run = _coordinator_state(latest)
    decided = next(s for s in host_run["searches"].values() if s["benchmark"] == "max-get")
    assert [(s["rate"], s["passed"]) for s in decided["steps"]] == [(r["rate"], r["passed"]) for r in rows]
    assert decided["outcome"]["rate"] == found["found"]

    assert easy["status"] == "not-saturated" and easy["found"] == 400
    assert [r["rate"] for r in easy["rows"]] == [100, 200, 400]
    assert "the server was not saturated; the load generator reached" in easy["text"]

    # what inv collect printed: each search's table and what it found, and the expectation on it
    assert re.search(r"capacity search max-get \(SLO p99 < 150ms, errors == 0\): [\d,]+ ops/s meets the SLO; "
                     r"[\d,]+ does not", out), out
    step_3 = r"^\s+3\s+600\s+100\.0\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+[\d,]+\s+[\d.]+\s+FAIL \(server\)"
    assert re.search(step_3, out, re.M), out
    assert "capacity search too-easy" in out and "not saturated" in out
    (verdict,) = run["benchmarks"][0]["expectations"]
    assert verdict["passed"] and verdict["measured"] == found["found"]
    report = project.inv("report").stdout
    assert "capacity search max-get" in report
    project.inv("plot")  # p99 against the rate of each step
    picture = latest / "plots" / "capacity-max-get.png"
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _coordinator_state(latest) -> dict:
    """The coordinator host's last state.json, as the follower kept it."""
    coordinator = json.loads((latest / "meta.json").read_text())["host_run"]["coordinator"]
    return json.loads((latest / "hosts" / coordinator / "hostrun.json").read_text())
