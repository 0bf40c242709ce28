"""The controller's side of host runs, without hosts: plans from a spawn file, the poll
script run by a real shell against a run directory, its framing, skews, backoff, records."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.spawn import spec
from bench.wire import hostrun as wire
from fabfile.runs import hostrun
from fabfile.runs.follow import agent_record, backoff

SPAWN = """
name = "t"
[hosts]
servers = ["s1"]
agents = ["a1", "a2"]
[server]
kind = "redis"
[[benchmark]]
name = "set"
workload = "set"
agents = 3
duration = "10s"
[[benchmark]]
name = "get"
workload = "get"
agents = 1
duration = "5s"
"""


@pytest.fixture
def spawn(tmp_path: Path) -> spec.Spawn:
    path = tmp_path / "spawn.toml"
    path.write_text(SPAWN)
    return spec.load(path)


def test_every_host_gets_every_phase_and_only_its_own_jobs(spawn):
    barrier = hostrun.new_barrier(["s1", "a1", "a2"], "a1", "10.0.0.2")
    plans = hostrun.host_plans(spawn=spawn, run_id="r", hosts=["s1", "a1", "a2"], targets=["10.0.0.1:6379"],
                               agent_pex=".fleetbench/bin/agent.pex",
                               nodes=[{"host": "s1", "address": "10.0.0.1", "port": 6379, "index": 0}],
                               barrier=barrier, lease_s=100, host_timeout_s=30, agent_timeout_s=900, sampler_cap_s=50)
    assert set(plans) == {"s1", "a1", "a2"}
    for host, p in plans.items():
        assert hostrun.PLAN_SCHEMA == p["schema"] and p["host"] == host
        assert [ph["benchmarks"] for ph in p["phases"]] == [["set"], ["get"]]
        assert p["barrier"]["token"] == barrier.token and len(barrier.token) == 64
    jobs = {h: [[(j["dir"], j["job"]["agent_num"]) for j in ph["jobs"]] for ph in p["phases"]]
            for h, p in plans.items()}
    assert jobs == {"s1": [[], []], "a1": [[("set", 0), ("set", 2)], [("get", 0)]], "a2": [[("set", 1)], []]}
    assert plans["s1"]["sampler"]["pid_files"] == [".fleetbench/nodes/6379/server.pid"]
    assert plans["a1"]["sampler"]["pid_files"] == []


def test_the_default_lease_is_the_planned_duration_plus_half_an_hour(spawn):
    assert hostrun.planned_seconds(spawn) == 10 + 5 + 2 * hostrun.START_LEAD_S
    assert hostrun.default_lease(spawn) == hostrun.planned_seconds(spawn) + 1800


def _sh(command: str, home: Path) -> bytes:
    return subprocess.run(["sh", "-c", command], env={**os.environ, "HOME": str(home)}, capture_output=True,
                          check=True, timeout=30).stdout


def _unpack(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data


def test_the_poll_script_sends_state_and_new_bytes_and_renews_the_lease(tmp_path):
    base = tmp_path / ".fleetbench" / "runs" / "r1"
    (base / "_run").mkdir(parents=True)
    (base / "_host").mkdir()
    (base / "set").mkdir()
    sleeper = subprocess.Popen(["sleep", "30"], cwd=base / "_run")  # stands for the host run's process
    state = json.dumps({"status": "running", "pid": sleeper.pid}) + "\n"
    (base / "_run" / "state.json").write_text(state)
    (base / "_host" / "metrics.ndjson").write_bytes(b'{"t":1}\n{"t":2}\n{"t":')
    (base / "set" / "agent-0.stderr").write_bytes(b"one\ntwo\n")
    offsets = {hostrun.METRICS: 8, "set/agent-0.stderr": 8, "set/agent-0.json": 0}
    try:
        files = hostrun.parse_poll(_unpack(_sh(hostrun.poll_command("r1", offsets, renew=True), tmp_path)))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert files == {hostrun.STATE: (0, state.encode()), hostrun.METRICS: (8, b'{"t":2}\n{"t":'),
                     hostrun.ALIVE: (0, b"1")}
    gone = hostrun.parse_poll(_unpack(_sh(hostrun.poll_command("r1", {}, renew=False), tmp_path)))
    assert gone is not None and gone[hostrun.ALIVE] == (0, b"0")  # the process is gone: a dead host run
    assert (base / "_run" / "lease").exists()
    assert not (base / "_run" / "stop").exists()
    _sh(hostrun.stop_command("r1"), tmp_path)
    assert (base / "_run" / "stop").exists()
    assert hostrun.parse_poll(_unpack(_sh(hostrun.poll_command("nope", {}, renew=False), tmp_path))) is None


def test_a_poll_takes_a_stderr_flood_s_last_bytes_and_the_next_part_of_anything_else(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "POLL_STDERR_BYTES", 10)
    monkeypatch.setattr(wire, "POLL_FILE_BYTES", 6)
    base = tmp_path / ".fleetbench" / "runs" / "r1"
    (base / "_run").mkdir(parents=True)
    (base / "_host").mkdir()
    (base / "set").mkdir()
    (base / "_run" / "state.json").write_text("{}")
    (base / "set" / "agent-0.stderr").write_bytes(b"a" * 1000 + b"last line\n")
    (base / "_host" / "metrics.ndjson").write_bytes(b"0123456789")
    offsets = {"set/agent-0.stderr": 3, hostrun.METRICS: 2}
    files = hostrun.parse_poll(_unpack(_sh(hostrun.poll_command("r1", offsets, renew=False), tmp_path)))
    assert files is not None
    assert files["set/agent-0.stderr"] == (1000, b"last line\n")  # where they begin: 997 bytes skipped
    assert files[hostrun.METRICS] == (2, b"234567")  # the rest comes with the next poll
    assert hostrun.poll_bytes(list(offsets)) == hostrun.poll_bytes([f"b/agent-{n}.stderr" for n in range(1000)])


def test_plans_carry_jobs_as_their_agents_get_them(spawn):
    """With the redis password (wire_job, which also resolves { env = ... }): a plan goes on stdin."""
    kwargs = dict(spawn=spawn, run_id="r", hosts=["s1", "a1", "a2"], targets=["10.0.0.1:6379"], agent_pex="p",
                  nodes=[], barrier=None, lease_s=100, host_timeout_s=30, agent_timeout_s=900, sampler_cap_s=50)
    (get,) = hostrun.host_plans(**kwargs, auth="pw-123456")["a1"]["phases"][1]["jobs"]  # type: ignore[arg-type]
    assert get["job"]["auth"] == "pw-123456"
    (get,) = hostrun.host_plans(**kwargs)["a1"]["phases"][1]["jobs"]  # type: ignore[arg-type]
    assert get["job"]["auth"] is None


def test_poll_framing_survives_newlines_and_the_frame_marker_inside_a_file():
    body = b"@@fleetbench x 0 3\nline\n"
    data = hostrun.FRAME + f"a/b.stderr 5 {len(body)}\n".encode() + body + b"\n"
    assert hostrun.parse_poll(data) == {"a/b.stderr": (5, body)}
    with pytest.raises(wire.WireError, match="expected b'@@fleetbench '"):
        hostrun.parse_poll(b"garbage")


def test_a_live_run_is_found_by_its_pid_and_working_directory(tmp_path):
    control = tmp_path / ".fleetbench" / "runs" / "r9" / "_run"
    control.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"], cwd=control)
    try:
        (control / "state.json").write_text(json.dumps({"pid": sleeper.pid, "started_at": 1700000000.5}))
        found = hostrun.parse_live_runs(_sh(hostrun.live_runs_command(), tmp_path).decode())
        assert found == [("r9", 1700000000.5)]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert hostrun.parse_live_runs(_sh(hostrun.live_runs_command(), tmp_path).decode()) == []


def test_start_text_names_when():
    assert hostrun.started_text(0.0, now=90.0) == "at 1970-01-01 00:00:00 UTC (90 s ago)"


def test_phase_skews_use_each_hosts_clock_offset():
    records = [("set", {"result": {"agent_num": 0, "started_at": 100.000, "ops": 5}}),
               ("set", {"result": {"agent_num": 1, "started_at": 99.010, "ops": 5}}),  # its clock is 1 s behind
               ("get", {"result": {"agent_num": 0, "started_at": 200.0, "ops": 0}}),  # never began
               ("get", {"failure": {"error": "x"}, "result": None})]
    host_of = {("set", 0): "a1", ("set", 1): "a2", ("get", 0): "a1"}
    skews = hostrun.phase_skews([["set"], ["get"]], records, host_of, {"a1": 0.0, "a2": 1.0})
    assert skews[0]["agents"] == 2 and skews[0]["start_skew_ms"] == pytest.approx(10.0)
    assert skews[1] == {"phase": 1, "benchmarks": ["get"], "agents": 0, "start_skew_ms": None}


def test_backoff_doubles_up_to_15_s_and_never_past_the_deadline():
    assert [backoff(n, 600) for n in range(7)] == [1, 2, 4, 8, 15, 15, 15]
    assert backoff(6, 3.5) == 3.5 and backoff(2, -1) == 0


@pytest.mark.parametrize("agent,result,expected", [
    ({"state": "done", "exit_code": 0}, {"ops": 1}, None),
    ({"state": "failed", "exit_code": 1}, {"ops": 1, "fatal": "boom"}, "boom"),
    ({"state": "stopped", "exit_code": 143}, {"ops": 1, "interrupted": True}, "stopped: the run was stopped"),
    ({"state": "pending"}, None, "never started"),
    ({"state": "failed", "exit_code": 2}, None, "exit status 2 and no result"),
])
def test_agent_records(agent, result, expected):
    record = agent_record("a1", {"agent_num": 0, "benchmark": "set", **agent}, result, "a\nb\n")
    assert record["benchmark"] == "set" and record["result"] == result
    if expected is None:
        assert "failure" not in record
    else:
        assert record["failure"]["error"].startswith(expected) and record["failure"]["host"] == "a1"
        assert record["failure"]["stderr_tail"]


