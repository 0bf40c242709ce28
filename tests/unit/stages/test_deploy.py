"""The deploy stage against fake hosts (tests/unit/fakes.py): what is built (the builder is
faked at its seam), what is pushed where, in which order servers start and form, and how a
failing host is named. The code between the stage and the hosts is the real one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fabfile.remote.fleet import FleetError
from fabfile.remote.host import Output
from fabfile.remote.shell import RemoteError
from fabfile.remote.ssh import SshSettings
from fabfile.session import Session, Workspace
from fabfile.ship.build import Artifact
from fabfile.stages import deploy
from tests.unit.fakes import FakeFleet, FakeHost, Python, fake_fleet, spawn_file

SERVERS = ["s1", "s2", "s3"]
AGENTS = ["a1"]
PID = 4242


class FakeBuilder:
    """The builder seam: records what it was asked to build, builds files with known bytes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.probed: list[str] = []
        self.built: list[tuple[str, list[str]]] = []

    def probe_platform(self, c: FakeHost, interpreter) -> Path:
        self.probed.append(c.name)
        return self.out_dir / f"platform-{interpreter.version}.json"

    def _artifact(self, name: str, platforms: list[Path]) -> Artifact:
        targets = sorted({p.name for p in platforms})  # as the real builder: each platform once
        self.built.append((name, targets))
        path = self.out_dir / f"{name}.pex"
        path.write_bytes(f"{name} pex for {targets}".encode())
        return Artifact(name, path, _sha256(path))

    def server(self, requirements, script: str, platforms: list[Path], base_dir: Path) -> Artifact:
        return self._artifact("server", platforms)

    def agent(self, platforms: list[Path], modules) -> Artifact:
        return self._artifact("agent", platforms)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def redis_host(h: FakeHost) -> FakeHost:
    """A host on which everything a redis-cluster deploy asks succeeds."""
    h.on(r"set -C", "taken\n")  # the deploy lock
    h.on(r"python3 .*--version|--version 2>&1", "Redis server v=7.2.4 sha=00000000:0 malloc=libc bits=64\n")
    h.on(r"setsid nohup", f"{PID}\n")  # a node's start prints its pid
    h.on(r"readlink /proc/\d+/cwd.* && echo yes", "yes\n")  # the node is alive and ours
    h.on(r"redis call .* PING", "PONG\n")
    h.on(r"redis create ", "cluster created\n")
    h.on(r"CLUSTER INFO", "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n")
    h.on(r"^if test -f", "")  # the presence check: nothing is there yet
    h.on(r"echo send; cat", "send\n")  # a push: the host wants the bytes
    return h


@pytest.fixture
def said() -> list[str]:
    return []


def _session(tmp_path: Path, fleet: FakeFleet, said: list[str], monkeypatch, builder: FakeBuilder | None = None):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    path = spawn_file(project, SERVERS, AGENTS, server='kind = "redis-cluster"\nport = 7000')
    s = Session(Workspace(project), path, SshSettings(), echo=said.append)
    s._fleet = fleet  # the session's fleet, already through its preflight
    builder = builder or FakeBuilder(project / ".fleetbench" / "out")
    monkeypatch.setattr(deploy, "Builder", lambda cache_dir, echo: builder)
    return s, builder


def _fleet() -> FakeFleet:
    fleet = fake_fleet(*SERVERS, *AGENTS)
    for h in fleet.fakes.values():
        redis_host(h)
    return fleet


def _pushed(h: FakeHost) -> dict[str, bytes]:
    """remote path -> the bytes that were streamed into its push."""
    out = {}
    for p in h.processes:
        final = re.search(r"test -f '?([^' ;]+)", p._call.command)
        assert final, p._call.command
        out[final.group(1)] = bytes(p.received)
    return out


def test_a_deploy_pushes_only_what_each_host_lacks_and_starts_every_node_before_forming_the_cluster(
        tmp_path, said, monkeypatch):
    fleet = _fleet()
    s, builder = _session(tmp_path, fleet, said, monkeypatch)
    agent_digest = {}

    def have_agent(command: str, stdin: bytes) -> str:  # s1 already has this agent pex
        path = re.search(r"test -f (\S+);", command).group(1)
        return f"{agent_digest['sha']}  {path}\n" if "agent-" in path else ""

    fleet.fakes["s1"].on(r"^if test -f", have_agent)
    real_agent = builder.agent

    def agent(platforms, modules):
        artifact = real_agent(platforms, modules)
        agent_digest["sha"] = artifact.sha256
        return artifact

    builder.agent = agent  # type: ignore[method-assign]

    deployment = deploy.run(s, direct_push=True)

    # One interpreter everywhere: probed once, each pex built once for its one platform.
    assert builder.probed == ["s1"]
    assert builder.built == [("server", ["platform-3.11.2.json"]), ("agent", ["platform-3.11.2.json"])]
    agent, server = deployment.artifacts["agent"], deployment.artifacts["server"]
    pushed = {name: _pushed(h) for name, h in fleet.fakes.items()}
    assert pushed["s1"] == {server.remote_path: server.path.read_bytes()}  # its agent pex was kept
    for name in ("s2", "s3"):
        assert pushed[name] == {agent.remote_path: agent.path.read_bytes(),
                                server.remote_path: server.path.read_bytes()}
    assert pushed["a1"] == {agent.remote_path: agent.path.read_bytes()}  # agents get no server pex
    assert all(p.stdin_closed and p.closed for h in fleet.fakes.values() for p in h.processes)
    assert "pushed 6 file(s), 1 already in place" in " ".join(said)

    # Each node: its binary checked, started (the password on stdin, never on its command line),
    # then pinged; the cluster formed from s1 only once every node answered, then checked.
    for name in SERVERS:
        h = fleet.fakes[name]
        assert -1 < h.index(r"--version") < h.index(r"setsid nohup") < h.index(r"redis call .* PING")
        start = h.ran(r"setsid nohup")[0]
        assert deployment.redis_password in start.stdin.decode()
        assert deployment.redis_password not in start.command
    pings = [c.seq for name in SERVERS for c in fleet.fakes[name].ran(r"redis call .* PING")]
    create = fleet.fakes["s1"].ran(r"redis create ")
    assert len(create) == 1 and not fleet.fakes["s2"].ran(r"redis create ")
    assert max(pings) < create[0].seq < min(c.seq for name in SERVERS for c in fleet.fakes[name].ran("CLUSTER INFO"))
    assert all(f"10.9.0.{i}:7000" in create[0].command for i in (1, 2, 3))
    assert not fleet.fakes["a1"].ran(r"setsid nohup|redis ")  # agent hosts run no server

    saved = json.loads(s.workspace.state_path.read_text())
    assert saved["topology"] == "cluster"
    assert [(n["host"], n["pid"], n["role"]) for n in saved["nodes"]] == [(h, PID, "master") for h in SERVERS]
    assert saved["pushed"]["a1"] == [agent.remote_path]


def test_hosts_with_two_pythons_get_one_probe_and_one_agent_build_for_both(tmp_path, said, monkeypatch):
    fleet = _fleet()
    fleet.interpreters["a1"] = Python("3.9.2").interpreter("a1")
    s, builder = _session(tmp_path, fleet, said, monkeypatch)
    deploy.run(s, direct_push=True)
    assert sorted(builder.probed) == ["a1", "s1"]
    assert builder.built == [("server", ["platform-3.11.2.json"]),  # servers all run 3.11
                             ("agent", ["platform-3.11.2.json", "platform-3.9.2.json"])]
    assert "hosts run python 3.11.2, 3.9.2" in said


def test_a_push_that_fails_names_the_host_and_its_step_and_a_first_deploy_leaves_nothing(tmp_path, said,
                                                                                      monkeypatch):
    fleet = _fleet()
    fleet.fakes["s2"].on(r"echo send; cat", Output(1, b"send\n", b"cat: write error: No space left on device\n"))
    s, _ = _session(tmp_path, fleet, said, monkeypatch)
    with pytest.raises(FleetError) as caught:
        deploy.run(s, direct_push=True)
    message = str(caught.value)
    assert "1 host(s) failed" in message and "s2: `cat > ~/.fleetbench/bin/" in message
    assert "No space left on device" in message
    assert not any(h.ran(r"setsid nohup") for h in fleet.fakes.values())  # no server started anywhere
    for h in fleet.fakes.values():  # a failed first deploy clears every host it reached
        assert h.ran(r"rm -rf \.fleetbench"), h.name
    assert not s.workspace.state_path.exists()


def test_a_node_that_dies_at_start_is_named_with_its_log_and_the_others_are_stopped(tmp_path, said,
                                                                                   monkeypatch):
    fleet = _fleet()
    s2 = fleet.fakes["s2"]
    s2.on(r"readlink /proc/\d+/cwd.* && echo yes", "")  # its pid is gone
    s2.on(r"for f in start\.log server\.log", "==> start.log <==\n# Could not create server TCP listening socket "
                                               "*:7000: bind: Address already in use\n")
    s, _ = _session(tmp_path, fleet, said, monkeypatch)
    with pytest.raises(FleetError) as caught:
        deploy.run(s, direct_push=True)
    error = caught.value.failures[next(iter(caught.value.failures))]
    assert isinstance(error, RemoteError) and error.host == "s2" and error.command == "redis-server ping"
    assert f"the server (pid {PID}) exited" in str(error) and "Address already in use" in str(error)
    for name in ("s1", "s3"):  # started, then stopped again: nothing is left running
        h = fleet.fakes[name]
        assert h.index(rf"kill {PID}") > h.index(r"setsid nohup") > -1, name
    assert not fleet.fakes["s1"].ran(r"redis create ")  # no cluster formed of what is left
    assert not s.workspace.state_path.exists()


def test_a_second_deploy_of_the_same_healthy_servers_restarts_nothing(tmp_path, said, monkeypatch):
    fleet = _fleet()
    s, builder = _session(tmp_path, fleet, said, monkeypatch)
    first = deploy.run(s, direct_push=True)
    for h in fleet.fakes.values():
        h.calls.clear()
        h.processes.clear()
        h.on(r"^if test -f", lambda command, stdin: "".join(  # every file is in place now
            f"{a.sha256}  {a.remote_path}\n" for a in first.artifacts.values() if a.remote_path in command))
    again = deploy.run(s, direct_push=True)
    assert again.nodes == first.nodes and again.redis_password == first.redis_password
    assert not any(h.processes or h.ran(r"setsid nohup|kill ") for h in fleet.fakes.values())
    assert "servers already running (cluster, 3 nodes): nothing to restart" in said
