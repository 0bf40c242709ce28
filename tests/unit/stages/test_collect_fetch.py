"""collect's fetch against fake hosts: a run started detached (its controller gone) is fetched
from the hosts that finished it and merged; a host that cannot be reached keeps its results for
a later collect, said so. From the bench stage's start to run.json, with no network."""

from __future__ import annotations

import json

from runfactory import agent_result, spread

from bench.wire import hostrun as wire
from fabfile.runs import recorded
from fabfile.stages import bench, collect
from fabfile.stages.bench import RunOptions
from tests.unit.fakes import FakeFleet, FakeHost, fake_fleet
from tests.unit.runs.test_follow import host_state
from tests.unit.stages.test_bench import HOSTS, _session, bench_host


def frame(path: str, body: bytes, start: int = 0) -> bytes:
    return wire.FRAME + f"{path} {start} {len(body)}\n".encode() + body + b"\n"


def finished(h: FakeHost, run_id: str, agent_num: int | None) -> None:
    """``h``'s host run is done; with an agent, that agent's result is there to fetch."""
    agents = {} if agent_num is None else {
        f"set/agent-{agent_num}": {"benchmark": "set", "agent_num": agent_num, "phase": 0, "state": "done",
                                   "exit_code": 0}}
    answer = frame(wire.STATE, host_state("done", agents)) + frame(wire.ALIVE, b"0")
    if agent_num is not None:
        result = agent_result("set", agent_num, 2, spread(100, 60), run_id=run_id)
        answer += frame(f"set/agent-{agent_num}.json", json.dumps(result).encode())
    h.on(r"@@fleetbench", answer)


def _started(tmp_path, said: list[str]) -> tuple[FakeFleet, object, object]:
    fleet = fake_fleet(*HOSTS)
    for i, h in enumerate(fleet.fakes.values()):
        bench_host(h, 1000 + i)
    s = _session(tmp_path, fleet, said)
    return fleet, s, bench.run(s, RunOptions(detach=True, host_timeout=5))


def test_a_detached_run_is_fetched_from_its_hosts_and_merged(tmp_path, monkeypatch):
    said: list[str] = []
    fleet, s, run_dir = _started(tmp_path, said)
    for name, num in (("s1", None), ("a1", 0), ("a2", 1)):
        finished(fleet.fakes[name], run_dir.run_id, num)
    monkeypatch.setattr(recorded, "run_fleet", lambda s, run_dir: fleet)  # the run's hosts, faked
    collect.fetch(s, run_dir.run_id)
    meta = run_dir.meta()
    assert meta["status"] == "ok" and meta["fetched"] is True and meta["lost_hosts"] == []
    assert meta["host_statuses"] == {"s1": "done", "a1": "done", "a2": "done"}
    for name in HOSTS:  # read, never renewed: a fetch does not keep a run alive
        polls = fleet.fakes[name].ran(r"@@fleetbench")
        assert polls and not any("lease" in p.command for p in polls), name
    merged = collect.run(s.workspace.runs_dir, run_dir.run_id, "simple", False, echo=said.append)
    (entry,) = merged["benchmarks"]
    assert merged["status"] == "ok" and (entry["agents"], entry["agents_ok"], entry["ops"]) == (2, 2, 120)


def test_a_host_that_cannot_be_reached_keeps_its_results_for_a_later_collect(tmp_path, monkeypatch):
    said: list[str] = []
    fleet, s, run_dir = _started(tmp_path, said)
    finished(fleet.fakes["s1"], run_dir.run_id, None)
    finished(fleet.fakes["a1"], run_dir.run_id, 0)
    fleet.unreachable = {"a2"}
    monkeypatch.setattr(recorded, "run_fleet", lambda s, run_dir: fleet)
    collect.fetch(s, run_dir.run_id)
    meta = run_dir.meta()
    assert meta["fetched"] is False and meta["lost_hosts"] == ["a2"]
    assert meta["status"] == "running"  # a2 may still be running it: not decided here
    assert any(line.startswith("warning: a2: ") and "later `inv collect`" in line for line in said), said
    assert not fleet.fakes["a2"].ran(r"@@fleetbench")
    merged = collect.run(s.workspace.runs_dir, run_dir.run_id, "simple", False, echo=said.append)
    (entry,) = merged["benchmarks"]
    assert merged["status"] == "partial" and (entry["agents"], entry["agents_ok"]) == (2, 1)
