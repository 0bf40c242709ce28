"""The host run: its plan and state rules, then whole runs in a temporary directory with a
stand-in agent (a script that honours ``run --job-file - --out`` and the job's ``start_at``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.agent.hostrun import PlanError, agent_state, lease_expired, load_plan, new_state
from bench.wire import hostrun as wire

REPO = Path(__file__).resolve().parents[3]

FAKE_AGENT = """#!{python}
import json, sys, time
args = sys.argv[1:]
assert args[0] == "run", args
assert args[args.index("--job-file") + 1] == "-", args  # the job (it holds secrets) comes on stdin
job = json.load(sys.stdin)
out = args[args.index("--out") + 1]
stopped = []
import signal
signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
print("ready", file=sys.stderr, flush=True)
start = args[args.index("--start-file") + 1]
open(start + ".ready", "w").close()
import os
while not os.path.exists(start) and not stopped:
    time.sleep(0.001)
start_at = float(open(start).read()) if not stopped else 0
while time.time() < start_at and not stopped:
    time.sleep(0.001)
began = time.time()
end = began + job["duration_s"]
while time.time() < end and not stopped:
    time.sleep(0.01)
result = {{"agent_num": job["agent_num"], "benchmark": job["benchmark"], "started_at": began,
          "elapsed_s": time.time() - began, "interrupted": bool(stopped), "pex_root": os.environ.get("PEX_ROOT")}}
open(out + ".tmp", "w").write(json.dumps(result))
os.replace(out + ".tmp", out)
print("done", file=sys.stderr)
sys.exit(143 if stopped else 0)
"""


def job(benchmark: str, n: int, duration: float = 0.2) -> dict:
    return {"run_id": "r1", "benchmark": benchmark, "workload": "set", "agent_num": n, "agents": 2,
            "server_kind": "redis", "targets": ["127.0.0.1:1"], "duration_s": duration}


def plan(tmp_path: Path, phases: list[list[dict]], **extra) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    agent = tmp_path / "fake-agent"
    agent.write_text(FAKE_AGENT.format(python=sys.executable))
    agent.chmod(agent.stat().st_mode | stat.S_IXUSR)
    return {"schema": wire.PLAN_SCHEMA, "run_id": "r1", "host": "h1", "agent_pex": str(agent), "pex_root": "pexes",
            "lease_s": 600, "host_timeout_s": 5, "agent_timeout_s": 60, "start_lead_s": 1.0,
            "phases": [{"benchmarks": sorted({j["benchmark"] for j in jobs}),
                        "jobs": [{"dir": j["benchmark"], "job": j} for j in jobs]} for jobs in phases],
            **extra}


def write_run(tmp_path: Path, p: dict) -> Path:
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "_run").mkdir(parents=True)
    (run_dir / "_run" / "plan.json").write_text(json.dumps(p))
    return run_dir


def start(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.agent", "hostrun", "--dir", str(run_dir), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "_run" / "state.json").read_text())


def wait_for(run_dir: Path, statuses=wire.TERMINAL, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = state(run_dir)
        except (FileNotFoundError, ValueError):
            s = {}
        if s.get("status") in statuses:
            return s
        time.sleep(0.05)
    raise AssertionError(f"no status in {statuses} after {timeout}s: {s}")


def test_load_plan_names_what_is_wrong(tmp_path):
    good = plan(tmp_path, [[job("set", 0)]])
    assert load_plan(json.dumps(good))["run_id"] == "r1"
    with pytest.raises(PlanError, match="not a fleetbench.host-plan/1"):
        load_plan(json.dumps({**good, "schema": "x"}))
    with pytest.raises(PlanError, match="lease_s"):
        load_plan(json.dumps({k: v for k, v in good.items() if k != "lease_s"}))
    bad = json.loads(json.dumps(good))
    bad["phases"][0]["jobs"][0]["dir"] = "../escape"
    with pytest.raises(PlanError, match="plain 'dir'"):
        load_plan(json.dumps(bad))
    with pytest.raises(PlanError, match="barrier.token"):
        load_plan(json.dumps({**good, "barrier": {"address": "a", "port": 1, "participants": [], "coordinator": "h"}}))


def test_new_state_lists_every_agent_pending(tmp_path):
    s = new_state(plan(tmp_path, [[job("set", 0)], [job("get", 0), job("get", 1)]]), pid=7, now=1.0)
    assert s["status"] == "running" and s["phases"] == 2
    assert s["agents"] == {"set/agent-0": {"benchmark": "set", "agent_num": 0, "phase": 0, "state": "pending"},
                           "get/agent-0": {"benchmark": "get", "agent_num": 0, "phase": 1, "state": "pending"},
                           "get/agent-1": {"benchmark": "get", "agent_num": 1, "phase": 1, "state": "pending"}}


@pytest.mark.parametrize("code,result,stopping,timed_out,expected", [
    (0, True, False, False, "done"), (1, True, False, False, "failed"), (0, False, False, False, "failed"),
    (143, True, True, False, "stopped"), (143, False, True, False, "failed"), (143, True, False, True, "timeout"),
])
def test_agent_state(code, result, stopping, timed_out, expected):
    assert agent_state(code, result, stopping, timed_out) == expected


def test_lease_is_the_mtime_of_the_lease_file(tmp_path):
    lease = tmp_path / "lease"
    assert lease_expired(str(lease), 10, time.time())  # none at all: expired
    lease.touch()
    assert not lease_expired(str(lease), 10, time.time())
    assert lease_expired(str(lease), 10, time.time() + 11)


def test_a_detached_run_survives_its_caller_and_runs_the_phases_in_order(tmp_path):
    run_dir = write_run(tmp_path, plan(tmp_path, [[job("set", 0), job("set", 1)], [job("get", 0)]]))
    started = start(run_dir, "--detach")
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.strip())
    assert os.getsid(pid) != os.getsid(0)  # another session: no SIGHUP from ours
    s = wait_for(run_dir)
    assert s["status"] == "done", s
    assert {k: a["state"] for k, a in s["agents"].items()} == {"set/agent-0": "done", "set/agent-1": "done",
                                                                 "get/agent-0": "done"}
    results = {k: json.loads((run_dir / f"{k}.json").read_text()) for k in s["agents"]}
    assert results["get/agent-0"]["started_at"] >= max(results[f"set/agent-{n}"]["started_at"] +
                                                       results[f"set/agent-{n}"]["elapsed_s"] for n in (0, 1))
    assert abs(results["set/agent-0"]["started_at"] - results["set/agent-1"]["started_at"]) < 0.5
    # pex scrubs PEX_ROOT from the host run's own environment: each pex it starts gets the plan's
    assert results["get/agent-0"]["pex_root"] == os.path.join(os.path.expanduser("~"), "pexes")
    assert (run_dir / "set" / "agent-0.stderr").read_text() == "ready\ndone\n"
    assert stat.S_IMODE(os.stat(run_dir / "_run" / "state.json").st_mode) == 0o600
    # The plan and the jobs hold secrets: the plan is removed once read, each job went on stdin.
    assert not (run_dir / "_run" / "plan.json").exists()
    assert not list(run_dir.rglob("*job*"))


def test_a_second_host_run_of_the_same_run_is_refused(tmp_path):
    run_dir = write_run(tmp_path, plan(tmp_path, [[job("set", 0, duration=3)]]))
    assert start(run_dir, "--detach").returncode == 0
    second = start(run_dir, "--detach")
    assert second.returncode == 2 and "already running" in second.stderr
    (run_dir / "_run" / "stop").touch()
    assert wait_for(run_dir)["status"] == "stopped"


def test_the_stop_file_stops_the_agents_and_keeps_what_they_measured(tmp_path):
    run_dir = write_run(tmp_path, plan(tmp_path, [[job("set", 0, duration=30)], [job("get", 0)]]))
    assert start(run_dir, "--detach").returncode == 0
    deadline = time.monotonic() + 20
    stderr = run_dir / "set" / "agent-0.stderr"
    while not (stderr.is_file() and "ready" in stderr.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # (a TERM before its handler is set would just kill it)
    (run_dir / "_run" / "stop").touch()
    s = wait_for(run_dir)
    assert s["status"] == "stopped"
    assert s["agents"]["set/agent-0"]["state"] == "stopped"
    assert s["agents"]["get/agent-0"]["state"] == "pending"  # the next phase never started
    assert json.loads((run_dir / "set" / "agent-0.json").read_text())["interrupted"] is True


def test_an_expired_lease_abandons_the_run(tmp_path):
    run_dir = write_run(tmp_path, plan(tmp_path, [[job("set", 0, duration=30)]], lease_s=1))
    assert start(run_dir, "--detach").returncode == 0
    s = wait_for(run_dir)
    assert s["status"] == "abandoned"
    assert s["agents"]["set/agent-0"]["state"] == "stopped"
    assert json.loads((run_dir / "set" / "agent-0.json").read_text())["elapsed_s"] < 10


def test_two_host_runs_share_a_barrier(tmp_path):
    barrier = {"address": "127.0.0.1", "port": _free_port(), "token": "k" * 64, "participants": ["h1", "h2"],
               "coordinator": "h1"}
    dirs = []
    for host, durations in (("h1", (0.2, 0.2)), ("h2", (1.0, 0.2))):
        p = plan(tmp_path / host, [[job("set", 0 if host == "h1" else 1, durations[0])],
                                   [job("get", 0 if host == "h1" else 1, durations[1])]], barrier=barrier)
        dirs.append(write_run(tmp_path / host, {**p, "host": host}))
    for d in dirs:
        assert start(d, "--detach").returncode == 0
    states = [wait_for(d) for d in dirs]
    assert [s["status"] for s in states] == ["done", "done"]
    get = [json.loads((d / "get" / f"agent-{n}.json").read_text()) for n, d in enumerate(dirs)]
    set_ = [json.loads((d / "set" / f"agent-{n}.json").read_text()) for n, d in enumerate(dirs)]
    # h1's second phase waited for h2's longer first one, and both started it together
    assert min(g["started_at"] for g in get) >= max(s["started_at"] + s["elapsed_s"] for s in set_)
    assert abs(get[0]["started_at"] - get[1]["started_at"]) < 0.5  # (the fleet suite holds it to 50 ms)
    assert all(abs(s["clock"]["offset_s"]) < 0.05 for s in states)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SEARCH_AGENT = """#!{python}
# A stand-in agent in front of a server that meets p99 < 5 ms up to {capacity} ops/s in all.
import json, os, sys, time
from bench.wire import hist
args = sys.argv[1:]
job = json.load(sys.stdin)
out, start = args[args.index("--out") + 1], args[args.index("--start-file") + 1]
open(start + ".ready", "w").close()
while not os.path.exists(start):
    time.sleep(0.001)
ops = int(job["rate"] * job["duration_s"] + 0.5)
h = hist.recorder()
h.record_value(1000 if job["rate"] * job["agents"] <= {capacity} else 50000, ops)
result = {{"agent_num": job["agent_num"], "benchmark": job["benchmark"], "ops": ops, "errors": 0, "late_ops": 0,
          "late_busy_ops": 0, "late_loop_ops": 0, "elapsed_s": job["duration_s"], "job": job,
          "histograms": {{"latency_us": hist.encode(h)}}}}
open(out, "w").write(json.dumps(result))
"""


def test_a_search_runs_as_steps_whose_rates_the_coordinator_chooses(tmp_path):
    """Two hosts, one agent each: every step's rate comes from the coordinator host's decision on
    both hosts' parts, and the search ends within its precision of the capacity."""
    barrier = {"address": "127.0.0.1", "port": _free_port(), "token": "k" * 64, "participants": ["h1", "h2"],
               "coordinator": "h1"}
    search = {"benchmark": "cap", "low": 100.0, "high": 10_000.0, "step_s": 0.1, "precision": 0.1, "agents": 2,
              "slo": [{"text": "p99 < 5ms", "metric": "p99", "op": "<", "threshold": 5000.0}]}
    dirs = []
    for n, host in enumerate(("h1", "h2")):
        p = plan(tmp_path / host, [[job("cap", n, duration=0.1)], [{**job("after", n, duration=0.1), "rate": 10.0}]],
                 barrier=barrier)
        (tmp_path / host / "fake-agent").write_text(SEARCH_AGENT.format(python=sys.executable, capacity=1500))
        p["phases"][0]["search"] = search
        dirs.append(write_run(tmp_path / host, {**p, "host": host}))
    for d in dirs:
        assert start(d, "--detach").returncode == 0
    states = [wait_for(d, timeout=60) for d in dirs]
    assert [s["status"] for s in states] == ["done", "done"], states
    decided = states[0]["searches"]["0"]
    rates = [step["rate"] for step in decided["steps"]]
    assert rates[:5] == [100, 200, 400, 800, 1600]  # the ramp, then bisection
    outcome = decided["outcome"]
    assert outcome["status"] == "found" and outcome["last_pass"] <= 1500 < outcome["first_fail"]
    assert (outcome["first_fail"] - outcome["last_pass"]) / outcome["last_pass"] <= 0.1
    for n, (d, s) in enumerate(zip(dirs, states, strict=True)):
        stepped = {k: a for k, a in s["agents"].items() if a.get("search_step")}
        assert [a["benchmark"] for a in stepped.values()] == [f"cap#s{k}" for k in range(1, len(rates) + 1)]
        for k, rate in enumerate(rates, 1):  # each host ran each step at its share of the decided rate
            result = json.loads((d / f"cap+s{k}" / f"agent-{n}.json").read_text())
            assert result["job"]["rate"] == rate / 2
        assert s["agents"][f"after/agent-{n}"]["state"] == "done"  # the next phase ran after the search
    assert states[1]["searches"] == {}  # only the coordinator decides
