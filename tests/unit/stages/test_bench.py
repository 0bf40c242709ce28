"""The bench stage against fake hosts (tests/unit/fakes.py): the plan each host is handed (on
stdin: it holds the barrier token and the redis password), and a host that fails to start: the
others are stopped, what they did is kept, the error names that host. The code between the
stage and the hosts (hostrun, the follower, the run store) is the real one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.wire import hostrun as wire
from fabfile.deployment import Deployment
from fabfile.errors import PipelineError
from fabfile.remote.host import Output
from fabfile.remote.ssh import SshSettings
from fabfile.servers.nodes import Node
from fabfile.session import Session, Workspace
from fabfile.ship.build import Artifact
from fabfile.stages import bench
from fabfile.stages.bench import RunOptions
from tests.unit.fakes import FakeFleet, FakeHost, fake_fleet, spawn_file
from tests.unit.runs.test_follow import host_state

PASSWORD = "f00d" * 12
HOSTS = ["s1", "a1", "a2"]


def _run_dir_of(h: FakeHost) -> str | None:
    """The run directory this host was told to start (its start command names it)."""
    for call in h.ran(r"hostrun --dir .* --detach"):
        found = re.search(r"\.fleetbench/runs/([^/' ]+)/", call.command)
        if found:
            return found.group(1)
    return None


def bench_host(h: FakeHost, pid: int) -> FakeHost:
    """A host on which a run starts: the lock is free, no run is live until ours starts (then
    ours is listed, as its first state.json makes it), and a stop ends it."""
    h.on(r"set -C", "taken\n")
    h.on(r"for s in .*state\.json", lambda command, stdin: f"{_run_dir_of(h)} 1.0\n" if _run_dir_of(h) else "")
    h.on(r"hostrun --dir .* --detach", f"{pid}\n")
    # Polled after a stop (a start that failed elsewhere): its host run has stopped, nothing ran.
    h.on(r"@@fleetbench", wire.FRAME + b"%s 0 %d\n" % (wire.STATE.encode(), len(_stopped())) + _stopped() + b"\n"
         + wire.FRAME + f"{wire.ALIVE} 0 1\n0\n".encode())
    return h


def _stopped() -> bytes:
    return host_state("stopped", {})


def _session(tmp_path: Path, fleet: FakeFleet, said: list[str]) -> Session:
    project = tmp_path / "project"
    project.mkdir()
    path = spawn_file(project, ["s1"], ["a1", "a2"], server='kind = "redis"\nport = 7000',
                      benchmarks='[[benchmark]]\nname = "set"\nworkload = "set"\nagents = 2\nduration = "2s"\n')
    s = Session(Workspace(project), path, SshSettings(), echo=said.append)
    s._fleet = fleet
    agent = project / "agent.pex"
    agent.write_bytes(b"agent")
    s.save(Deployment(spawn_path=str(path), topology="standalone", redis_password=PASSWORD,
                      artifacts={"agent": Artifact("agent", agent, "ab" * 32)},
                      nodes=[Node("s1", "10.9.0.1", 7000, 0, pid=4242)]))
    return s


def _fleet() -> FakeFleet:
    fleet = fake_fleet(*HOSTS)
    for i, h in enumerate(fleet.fakes.values()):
        bench_host(h, 1000 + i)
    return fleet


def test_each_host_is_handed_its_own_plan_on_stdin_and_the_run_is_recorded(tmp_path):
    said: list[str] = []
    fleet = _fleet()
    s = _session(tmp_path, fleet, said)
    run_dir = bench.run(s, RunOptions(detach=True, host_timeout=5))
    plans = {}
    for name, h in fleet.fakes.items():
        (start,) = h.ran(r"hostrun --dir .* --detach")
        assert start.kind == "input" and PASSWORD not in start.command
        plans[name] = json.loads(start.stdin)
        assert plans[name]["barrier"]["token"] not in start.command
    assert {p["run_id"] for p in plans.values()} == {run_dir.run_id}
    assert [p["host"] for p in plans.values()] == HOSTS
    tokens = {p["barrier"]["token"] for p in plans.values()}
    assert len(tokens) == 1 and len(next(iter(tokens))) == 64  # one run, one secret barrier
    assert {p["barrier"]["coordinator"] for p in plans.values()} == {"a1"}  # the first agent host
    assert plans["a1"]["barrier"]["address"] == "10.9.0.2"  # where the others reach a1
    jobs = {name: [j["job"] for phase in p["phases"] for j in phase["jobs"]] for name, p in plans.items()}
    assert jobs["s1"] == []  # a server host runs no agent, but keeps the phases' order
    assert [(j["benchmark"], j["agent_num"]) for j in jobs["a1"] + jobs["a2"]] == [("set", 0), ("set", 1)]
    assert all(j["auth"] == PASSWORD and j["targets"] == ["10.9.0.1:7000"] for j in jobs["a1"] + jobs["a2"])
    # The sampler of the server's host watches its node.
    assert {n: p["sampler"]["pid_files"] for n, p in plans.items()} == {
        "s1": [".fleetbench/nodes/7000/server.pid"], "a1": [], "a2": []}
    # Every host was locked, then asked for a live run, before any was started.
    for h in fleet.fakes.values():
        assert -1 < h.index(r"set -C") < h.index(r"for s in") < h.index(r"hostrun --dir .* --detach")
    meta = run_dir.meta()
    assert meta["status"] == "running" and meta["host_run"]["hosts"] == HOSTS
    assert PASSWORD not in (run_dir.path / "meta.json").read_text()  # secrets stay off the run store
    assert any("detached" in line for line in said)
    assert s.deployment().runs == [run_dir.run_id]


def test_a_host_that_fails_to_start_is_named_and_the_others_are_stopped(tmp_path):
    said: list[str] = []
    fleet = _fleet()
    fleet.fakes["a2"].on(r"hostrun --dir .* --detach", Output(1, b"", b"sh: 1: .fleetbench/bin/agent.pex: not found\n"))
    s = _session(tmp_path, fleet, said)
    with pytest.raises(PipelineError) as caught:
        bench.run(s, RunOptions(host_timeout=5))
    message = str(caught.value)
    assert "start the host runs: 1 host(s) failed" in message
    assert "- a2: `" in message and "(exit 1)" in message and "agent.pex: not found" in message
    assert re.search(r"did not start: stopped it on (s1, a1|a1, s1)", message), message
    for name in ("s1", "a1"):  # started, then told to stop, then read until they said so
        h = fleet.fakes[name]
        assert -1 < h.index(r"hostrun --dir .* --detach") < h.index(r"touch stop") < h.index(r"@@fleetbench"), name
    assert not fleet.fakes["a2"].ran(r"touch stop")  # nothing to stop where nothing started
    (run_dir,) = (p for p in (s.workspace.runs_dir).iterdir() if p.is_dir() and not p.is_symlink())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and "a2" in meta["start_error"]
    assert sorted(meta["host_statuses"]) == ["a1", "s1"] and set(meta["host_statuses"].values()) == {"stopped"}
    assert any("stopping it on the 2 host(s) already started" in line for line in said)


def test_a_fleet_with_a_live_run_is_refused_naming_the_host_and_run(tmp_path):
    fleet = _fleet()
    fleet.fakes["a2"].on(r"for s in .*state\.json", "20261207-030000-fake 1.0\n")
    s = _session(tmp_path, fleet, [])
    with pytest.raises(PipelineError, match=r"^a2 is still running run 20261207-030000-fake, started at 1970"):
        bench.run(s, RunOptions(detach=True))
    assert not any(h.ran(r"hostrun --dir .* --detach") for h in fleet.fakes.values())

