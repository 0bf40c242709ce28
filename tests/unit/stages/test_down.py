"""The down stage against fake hosts (tests/unit/fakes.py): what each host is told (take the
deploy lock, stop every process of ours, remove our files), and that one bad host (unreachable,
locked by another controller) neither stops the others from being cleaned nor loses the
deployment record that lets `inv down` retry it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fabfile.deployment import Deployment
from fabfile.remote.fleet import FleetError
from fabfile.remote.lock import Holder, LockRefused
from fabfile.remote.ssh import ConnectError, SshSettings
from fabfile.session import Session, Workspace
from fabfile.stages import down
from tests.unit.fakes import FakeFleet, FakeHost, fake_fleet, spawn_file

HOSTS = ["s1", "a1", "a2"]
#: Another controller's lock: another user, another machine, taken a minute ago.
THEIRS = Holder("bob", "bobs-laptop", "/home/bob/bench", 777, "deploy e2e", 0.0)


def down_host(h: FakeHost, pids: str) -> FakeHost:
    h.on(r"set -C", "taken\n")  # the deploy lock is free
    h.on(r"kill \$pids", f"{pids}\n")  # the reaper prints what it stopped
    return h


def _session(tmp_path: Path, fleet: FakeFleet, said: list[str]) -> Session:
    project = tmp_path / "project"
    project.mkdir()
    path = spawn_file(project, ["s1"], ["a1", "a2"])
    s = Session(Workspace(project), path, SshSettings(), echo=said.append)
    s._fleet = fleet  # this call's open fleet: down reuses its connections
    s.save(Deployment(spawn_path=str(path), hosts={n: fleet.interpreters[n] for n in fleet.names}))
    return s


def _fleet(unreachable: tuple[str, ...] = ()) -> FakeFleet:
    fleet = fake_fleet(*HOSTS, unreachable=unreachable)
    for i, h in enumerate(fleet.fakes.values()):
        down_host(h, " ".join(str(100 * (i + 1) + k) for k in range(i + 1)))
    return fleet


def test_every_host_is_locked_stopped_and_cleaned_and_the_deployment_forgotten(tmp_path):
    said: list[str] = []
    fleet = _fleet()
    s = _session(tmp_path, fleet, said)
    down.run(s)
    for h in fleet.fakes.values():
        lock, reap, remove = h.index(r"set -C"), h.index(r"kill \$pids"), h.index(r"rm -rf \.fleetbench")
        assert -1 < lock < reap < remove, h.commands
        (removal,) = h.ran(r"rm -rf \.fleetbench")
        assert "for d in" in removal.command  # a bundled python kept outside ~/.fleetbench goes too
        assert len(h.calls) == 3
    assert sorted(fleet.connected) == sorted(HOSTS)
    assert "stopped 6 process(es) on 3 host(s); removed ~/.fleetbench on each" in said
    assert not s.workspace.state_path.exists()
    assert not fleet.closed  # the call's fleet: closed by the session, not by down


def test_keep_files_stops_everything_and_removes_nothing(tmp_path):
    said: list[str] = []
    fleet = _fleet()
    s = _session(tmp_path, fleet, said)
    down.run(s, keep_files=True)
    for h in fleet.fakes.values():
        assert h.ran(r"kill \$pids") and not h.ran(r"rm -rf")
    assert "stopped 6 process(es) on 3 host(s)" in said


def test_an_unreachable_host_and_a_host_locked_by_another_controller_are_named_the_rest_cleaned(tmp_path):
    said: list[str] = []
    fleet = _fleet(unreachable=("a1",))
    fleet.fakes["a2"].on(r"set -C", f"held\n{THEIRS.line()}\n")
    s = _session(tmp_path, fleet, said)
    with pytest.raises(FleetError) as caught:
        down.run(s)
    failures = caught.value.failures
    assert sorted(failures) == ["a1", "a2"]
    assert isinstance(failures["a1"], ConnectError) and "cannot reach" in str(failures["a1"])
    assert isinstance(failures["a2"], LockRefused) and "locked by bob@bobs-laptop" in str(failures["a2"])
    message = str(caught.value)
    assert "`inv down` again retries; cleaned: s1" in message
    assert fleet.fakes["s1"].ran(r"rm -rf \.fleetbench")
    assert not fleet.fakes["a1"].calls  # never reached
    assert not fleet.fakes["a2"].ran(r"kill|rm -rf")  # another controller's deployment is left alone
    assert s.workspace.state_path.exists()  # kept: running down again retries a1 and a2
    assert "stopped 1 process(es) on 1 host(s); removed ~/.fleetbench on each" in said


def test_force_takes_over_the_lock_of_a_controller_that_is_gone(tmp_path):
    said: list[str] = []
    fleet = _fleet()
    stale = Holder("bob", "bobs-laptop", "/home/bob/bench", 777, "deploy e2e", 1.0)  # 1970: long gone
    fleet.fakes["a2"].on(r"set -C", f"held\n{stale.line()}\n")
    fleet.fakes["a2"].on(r'if \[ "\$cur" = ', "taken\n")  # the take-over replaces that very lock
    s = _session(tmp_path, fleet, said)
    down.run(s, force=True)
    assert fleet.fakes["a2"].ran(r"rm -rf \.fleetbench")
    assert any(re.match(r"a2: took the deploy lock over from bob@bobs-laptop", line) for line in said), said


def test_the_hosts_are_the_deployments_unless_the_command_line_names_others(tmp_path):
    fleet = _fleet()
    s = _session(tmp_path, fleet, [])
    s.save(Deployment(spawn_path="x", hosts={"old1": fleet.interpreters["s1"]}))
    assert down.hosts_of(s) == ["old1"]  # the spawn file may have changed since the deploy
    s.host_lists = (["n1"], ["n2"])
    s._spawn = None
    assert down.hosts_of(s) == ["n1", "n2"]
