"""fabfile.runs.follow without a fleet: what one poll's files do to the local run directory,
and when a host counts as finished, dead or given up by the fleet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bench.wire import hist, progress
from bench.wire import hostrun as wire
from bench.wire.hostrun import MAX_RESULT_BYTES, STDERR_KEEP_BYTES
from fabfile import terminal
from fabfile.runs import hostrun
from fabfile.runs.follow import Follower, HostFollow, launched_phase
from fabfile.runs.live import LiveView, Planned
from fabfile.runs.store import RunDir

PUBLIC_JOB = {"benchmark": "set", "agent_num": 0, "auth": None, "params": {"token": {"env": "TOKEN"}}}


def follower(tmp_path: Path, echoed: list[str], shown: io.StringIO | None = None) -> Follower:
    """A follower of hosts a1 (agent set#0) and a2, its live view printing into ``shown``."""
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.path.mkdir(parents=True)
    expected = {"a1": [{"benchmark": "set", "agent_num": 0, "dir": "set", "job": PUBLIC_JOB}]}
    view = LiveView(shown or io.StringIO(), verbose=True, tty=False, redraw_s=None)
    return Follower(None, run_dir, ["a1", "a2"], nodes=[], expected=expected, echo=echoed.append,  # type: ignore[arg-type]
                    renew=True, reconnect_for=60, host_timeout=5, phases=[["set"]],
                    planned=[[Planned("set", 1, duration_s=5.0)]], view=view)


def host_state(status: str, agents: dict, **extra) -> bytes:
    """A host run's state.json (bench.wire.hostrun's STATE_SCHEMA)."""
    return json.dumps({"schema": wire.STATE_SCHEMA, "status": status, "pid": 42, "started_at": 1.0,
                       "updated_at": extra.pop("updated_at", 2.0), "phase": 0, "agents": agents, **extra}).encode()


def state(status: str, agent: dict, barrier: dict | None = None) -> bytes:
    return host_state(status, {"set/agent-0": {"benchmark": "set", "agent_num": 0, "phase": 0, **agent}},
                      barrier=barrier)


def _second(at: int, values: list[int]) -> str:
    h = hist.new()
    for v in values:
        h.record_value(v)
    return progress.to_line({"at": at, "t": 0, "ops": len(values), "errors": 0, "hist": hist.encode(h)})


def test_stderr_feeds_the_live_view_and_results_are_recorded_when_the_agent_ends(tmp_path):
    echoed: list[str] = []
    shown = io.StringIO()
    f = follower(tmp_path, echoed, shown)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "pending", "phase": 0})), hostrun.ALIVE: (0, b"1"),
                hostrun.METRICS: (0, b'{"t": 1}\n{"t": 2')})
    assert echoed == []  # no agent of a phase launched yet
    phase0 = state("running", {"state": "running", "phase": 0})
    record_line = _second(1_700_000_000, [100, 200, 300]).encode()
    f._take(h, {hostrun.STATE: (0, phase0), "set/agent-0.stderr": (0, b"one\n" + record_line + b"\ntw")})
    assert echoed == ["benchmark set ..."]
    assert "[a1 set#0] one" in shown.getvalue()  # verbose: the agent's own line, labelled
    assert "fleetbench-second" not in shown.getvalue()  # a per-second record is data, not a line
    assert "[a1 set#0] tw" not in shown.getvalue()  # a torn line waits for its end
    assert f.run_dir.host_metrics_text("a1") == '{"t": 1}\n'  # only complete lines
    offset = len(b"one\n" + record_line + b"\ntw")
    result = {"ops": 5, "started_at": 1.0, "job": {"auth": "the-password", "params": {"token": "s3cr3t-value"}}}
    f._take(h, {hostrun.STATE: (0, state("done", {"state": "done", "exit_code": 0})),
                "set/agent-0.stderr": (offset, b"o\n"), "set/agent-0.json": (0, json.dumps(result).encode())})
    f._end_view()
    assert "[a1 set#0] two" in shown.getvalue()
    last = shown.getvalue().splitlines()[-1]  # the phase's last line: set#0 done, its second merged
    assert "1 done" in last and "3 ops/s, p50 0.2 ms, p99 0.3 ms" in last, last
    assert h.finished
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["result"]["ops"] == 5 and record["benchmark"] == "set" and record["host"] == "a1"
    assert record["result"]["job"] == PUBLIC_JOB  # the agent's echo of its job held the secrets
    assert f.run_dir.agent_path("set", 0).with_suffix(".stderr").read_text() == "one\ntwo\n"


def test_a_flood_is_skipped_a_large_result_refused_and_secrets_scrubbed(tmp_path):
    terminal.hide("s3cr3t-value")
    f = follower(tmp_path, [])
    h = f.hosts["a1"]
    running = state("running", {"state": "running"})
    f._take(h, {hostrun.STATE: (0, running), "set/agent-0.stderr": (0, b"early line\n")})
    # The host skipped 400 MB: the poll gave the last bytes only, from where they begin.
    last = b"x" * 100 + b"\nthe token is s3cr3t-value\n"
    f._take(h, {hostrun.STATE: (0, running), "set/agent-0.stderr": (400 << 20, last)})
    assert h.stderr["set/agent-0"].offset == (400 << 20) + len(last)
    f._take(h, {hostrun.STATE: (0, state("done", {"state": "done", "exit_code": 0})),
                "set/agent-0.json": (0, b"{" + b" " * MAX_RESULT_BYTES + b"}")})
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["result"] is None and "larger than 16 MiB: refused" in record["failure"]["error"]
    kept = f.run_dir.agent_path("set", 0).with_suffix(".stderr").read_text()
    assert kept.startswith("[... the first ") and "early line" not in kept
    assert "s3cr3t-value" not in kept and "the token is ***" in kept
    assert "s3cr3t-value" not in json.dumps(record)
    assert len(kept) < STDERR_KEEP_BYTES + 1000


def test_a_host_run_that_died_ends_its_agents_as_failed(tmp_path):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"})), hostrun.ALIVE: (0, b"0")})
    assert h.dead and h.status == "failed" and h.finished
    record = json.loads(f.run_dir.agent_path("set", 0).read_text())
    assert record["failure"]["error"].startswith("lost: the host run ended while it ran")


def test_a_lost_hosts_agents_get_failure_records(tmp_path):
    f = follower(tmp_path, [])
    h = f.hosts["a1"]
    h.gave_up, h.unreachable = "no answer for 10 min", True
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


def test_a_phase_is_announced_when_its_first_agent_is_launched():
    agents = {"a/agent-0": {"phase": 0, "state": "done"}, "b/agent-0": {"phase": 1, "state": "running"},
              "c/agent-0": {"phase": 2, "state": "pending"}}
    assert launched_phase({"phase": 2, "agents": agents}) == 1  # its host is in phase 2, its agents not yet
    assert launched_phase({"phase": 3, "agents": {}}) is None  # a host with no agents says nothing


def test_statuses_and_clock(tmp_path):
    f = follower(tmp_path, [])
    f.hosts["a1"] = HostFollow("a1", state={"status": "done", "clock": {"offset_s": 0.001}})
    assert f.statuses() == {"a1": "done", "a2": None}
    assert f.clock() == {"a1": {"offset_s": 0.001}}


@pytest.mark.parametrize("lose_a2", [False, True], ids=["recorded", "given-up"])
def test_the_view_moves_on_once_every_agent_of_the_phase_before_is_recorded(tmp_path, lose_a2):
    """a1 is first in phase 1 while a2's phase-0 agent has not been seen to end: the view keeps
    phase 0 (so its last line says how it ended) and shows a1's phase-1 lines once it moves on."""
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.path.mkdir(parents=True)
    expected = {"a1": [{"benchmark": "set", "agent_num": 0, "dir": "set"},
                       {"benchmark": "get", "agent_num": 0, "dir": "get"}],
                "a2": [{"benchmark": "set", "agent_num": 1, "dir": "set"}]}
    echoed: list[str] = []
    shown = io.StringIO()
    view = LiveView(shown, verbose=True, tty=False, redraw_s=None)
    f = Follower(None, run_dir, ["a1", "a2"], nodes=[], expected=expected, echo=echoed.append,  # type: ignore[arg-type]
                 renew=True, reconnect_for=60, host_timeout=5, phases=[["set"], ["get"]],
                 planned=[[Planned("set", 2, duration_s=1.0)], [Planned("get", 1, duration_s=1.0)]], view=view)

    a1_set = {"benchmark": "set", "agent_num": 0, "phase": 0}
    a1_get = {"benchmark": "get", "agent_num": 0, "phase": 1}
    a2_set = {"benchmark": "set", "agent_num": 1, "phase": 0}
    f._take(f.hosts["a1"], {hostrun.STATE: (0, host_state("running", {"set/agent-0": {**a1_set, "state": "running"},
                                                            "get/agent-0": {**a1_get, "state": "pending"}}))})
    f._take(f.hosts["a2"], {hostrun.STATE: (0, host_state("running", {"set/agent-1": {**a2_set, "state": "running"}}))})
    assert echoed == ["benchmark set ..."]
    done = {"state": "done", "exit_code": 0}
    f._take(f.hosts["a1"], {hostrun.STATE: (0, host_state("running", {"set/agent-0": {**a1_set, **done},
                                                            "get/agent-0": {**a1_get, "state": "running"}})),
                            "set/agent-0.json": (0, b'{"ops": 1}'), "get/agent-0.stderr": (0, b"get line\n")})
    assert echoed == ["benchmark set ..."]  # a2's set agent is not recorded yet
    assert "get line" not in shown.getvalue()
    if lose_a2:  # a2 frozen: given up (its agent recorded lost), the view need not wait for it
        f.hosts["a2"].gave_up = "no answer for 10 s"
        f._record_lost(f.hosts["a2"])
        f._announce(None)
    else:
        f._take(f.hosts["a2"], {hostrun.STATE: (0, host_state("running", {"set/agent-1": {**a2_set, **done}})),
                                "set/agent-1.json": (0, b'{"ops": 1}')})
    assert echoed == ["benchmark set ...", "benchmark get ..."]
    text = shown.getvalue()
    assert "[live] set: ended" in text
    assert ("agents 0 running, 1 done, 1 failed" if lose_a2 else "agents 0 running, 2 done, 0 failed") in text
    assert text.index("[live] set: ended") < text.index("[a1 get#0] get line")  # replayed in the get phase
