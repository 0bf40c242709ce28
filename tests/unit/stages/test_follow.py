"""fabfile.stages.follow without a fleet: what one poll's files do to the local run directory,
and when a host counts as finished, dead or given up by the fleet."""

from __future__ import annotations

import json
from pathlib import Path

from fabfile.runs import hostrun
from fabfile.runs.store import RunDir
from fabfile.stages.follow import Follower, HostFollow


def follower(tmp_path: Path, echoed: list[str]) -> Follower:
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.path.mkdir(parents=True)
    expected = {"a1": [{"benchmark": "set", "agent_num": 0, "dir": "set"}]}
    return Follower(None, run_dir, ["a1", "a2"], nodes=[], expected=expected, echo=echoed.append,  # type: ignore[arg-type]
                    renew=True, reconnect_for=60, host_timeout=5)


def state(status: str, agent: dict, barrier: dict | None = None) -> bytes:
    return json.dumps({"status": status, "agents": {"set/agent-0": {"benchmark": "set", "agent_num": 0, **agent}},
                       "barrier": barrier}).encode()


def test_stderr_is_streamed_line_by_line_and_results_recorded_when_the_agent_ends(tmp_path):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"})), hostrun.ALIVE: (0, b"1"),
                hostrun.METRICS: (0, b'{"t": 1}\n{"t": 2')})
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"})),
                "set/agent-0.stderr": (0, b"one\ntw")})
    assert echoed == ["[a1 set#0] one"]  # a torn line waits for its end
    assert f.run_dir.host_metrics_text("a1") == '{"t": 1}\n'  # only complete lines
    result = {"ops": 5, "started_at": 1.0}
    f._take(h, {hostrun.STATE: (0, state("done", {"state": "done", "exit_code": 0})),
                "set/agent-0.stderr": (6, b"o\n"), "set/agent-0.json": (0, json.dumps(result).encode())})
    assert echoed == ["[a1 set#0] one", "[a1 set#0] two"]
    assert h.finished
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["result"] == result and record["benchmark"] == "set"
    assert f.run_dir.agent_path("set", 0).with_suffix(".stderr").read_text() == "one\ntwo\n"


def test_a_host_run_that_died_ends_its_agents_as_failed(tmp_path):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"})), hostrun.ALIVE: (0, b"0")})
    assert h.dead and h.status == "failed" and h.finished
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["failure"]["error"].startswith("lost: the host run ended while it ran")
    assert echoed and "failed" in echoed[0]


def test_a_lost_hosts_agents_get_failure_records(tmp_path):
    f = follower(tmp_path, [])
    h = f.hosts["a1"]
    h.gave_up = "no answer for 10 min"
    f._record_lost(h)
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["result"] is None and "lost the connection to a1" in record["failure"]["error"]


def test_a_host_is_given_up_early_only_when_the_barrier_dropped_it_and_the_rest_is_done(tmp_path):
    f = follower(tmp_path, [])
    lost, other = f.hosts["a1"], f.hosts["a2"]
    assert not f._given_up_by_the_fleet(lost, 60)  # the other host is still running
    other.finished = True
    other.state = {"barrier": {"dropped": {}}}
    assert not f._given_up_by_the_fleet(lost, 60)  # cut off from us only: the hosts still see it
    other.state = {"barrier": {"dropped": {"a1": "silent for 5 s"}}}
    assert not f._given_up_by_the_fleet(lost, 4)  # not yet host_timeout
    assert f._given_up_by_the_fleet(lost, 6)


def test_statuses_and_clock(tmp_path):
    f = follower(tmp_path, [])
    f.hosts["a1"] = HostFollow("a1", state={"status": "done", "clock": {"offset_s": 0.001}})
    assert f.statuses() == {"a1": "done", "a2": None}
    assert f.clock() == {"a1": {"offset_s": 0.001}}
