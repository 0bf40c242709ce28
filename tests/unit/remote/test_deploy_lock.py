"""The deploy lock with its real shell commands, on "hosts" that are private HOMEs here."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import LocalHost

from fabfile.remote import lock, pool
from fabfile.remote.fleet import FleetError


class Hosts:
    """Enough of a Fleet for the lock: connections by name, ``each`` over them."""

    def __init__(self, root: Path, names: list[str]):
        self.names = names
        self.hosts = {}
        for name in names:
            (root / name).mkdir()
            self.hosts[name] = LocalHost(root / name, name)

    def __getitem__(self, name: str) -> LocalHost:
        return self.hosts[name]

    def each(self, fn, names=None, *, what=""):
        try:
            return pool.each(self.names if names is None else names, fn)
        except pool.PartialFailure as exc:
            raise FleetError(what, exc.failures, exc.results) from None

    def lock_of(self, name: str) -> dict | None:
        path = self.hosts[name].home / lock.LOCK
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def fleet(tmp_path: Path) -> Hosts:
    (tmp_path / "hosts").mkdir()
    return Hosts(tmp_path / "hosts", ["h1", "h2"])


def _gone_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def _plant(fleet: Hosts, name: str, **fields) -> dict:
    holder = {"user": "alice", "controller": "laptop", "project": "/home/alice/bench", "pid": 4242,
              "run": "deploy e2e", "since": time.time(), **fields}
    path = fleet[name].home / lock.LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder, sort_keys=True) + "\n")
    return holder


def test_a_second_controller_is_refused_naming_the_holder(fleet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = lock.take(fleet, "deploy e2e")
    assert fleet.lock_of("h1") == json.loads(first.line()) == fleet.lock_of("h2")
    assert oct((fleet["h1"].home / ".fleetbench").stat().st_mode & 0o777) == "0o700"
    other = tmp_path / "other-project"
    other.mkdir()
    monkeypatch.chdir(other)  # another controller (project) of the same user on this machine
    with pytest.raises(FleetError) as refused:
        lock.take(fleet, "deploy mine")
    text = str(refused.value)
    assert "h1: deploying is locked by" in text and "h2: deploying is locked by" in text
    assert f"{first.user}@{first.controller} (deploy e2e, from {tmp_path}, pid {first.pid}) since " in text
    assert "--force takes over only once that controller is gone" not in text
    assert fleet.lock_of("h1") == json.loads(first.line())  # untouched
    # --force does not take a lock whose holder is alive (this test process).
    with pytest.raises(FleetError, match="--force takes over only once that controller is gone"):
        lock.take(fleet, "deploy mine", force=True)


def test_the_holder_takes_its_own_lock_again(fleet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = lock.me("deploy e2e")
    for name in fleet.names:  # left by an earlier inv deploy of this project, now finished
        _plant(fleet, name, user=mine.user, controller=mine.controller, project=mine.project, pid=_gone_pid())
    again = lock.take(fleet, "deploy e2e")
    assert fleet.lock_of("h1")["pid"] == again.pid
    assert lock.take(fleet, "deploy e2e").pid == again.pid  # the same process, twice


def test_force_takes_over_only_from_a_holder_that_is_gone(fleet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = lock.me("x")
    live = subprocess.Popen(["sleep", "60"])
    try:
        _plant(fleet, "h1", controller=mine.controller, pid=live.pid)  # alive, on this machine
        gone = _plant(fleet, "h2", controller=mine.controller, pid=_gone_pid())
        with pytest.raises(FleetError) as refused:
            lock.take(fleet, "deploy mine", force=True, echo=lambda _: None)
        assert f"pid {live.pid}" in str(refused.value) and "h2:" not in str(refused.value)
        assert fleet.lock_of("h2") == gone  # refused on the first host: nothing else was taken
        assert fleet.lock_of("h1")["pid"] == live.pid
    finally:
        live.kill()
        live.wait()
    _plant(fleet, "h2", controller=mine.controller, pid=_gone_pid())
    with pytest.raises(FleetError, match=r"its process \d+ has ended: pass --force"):
        lock.take(fleet, "deploy mine")
    said: list[str] = []
    lock.take(fleet, "deploy mine", force=True, echo=said.append)
    assert fleet.lock_of("h1")["run"] == "deploy mine" == fleet.lock_of("h2")["run"]
    assert sorted(said)[0].startswith("h1: took the deploy lock over from alice@")


def test_a_lock_from_another_machine_is_taken_over_only_when_stale(fleet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in fleet.names:
        _plant(fleet, name, controller="elsewhere")  # its pid cannot be checked from here
    with pytest.raises(FleetError, match="alice@elsewhere"):
        lock.take(fleet, "deploy mine", force=True)
    for name in fleet.names:
        _plant(fleet, name, controller="elsewhere", since=time.time() - lock.STALE_AFTER_S - 60)
    lock.take(fleet, "deploy mine", force=True, echo=lambda _: None)
    assert fleet.lock_of("h1")["run"] == "deploy mine"


def test_two_processes_taking_the_same_hosts_at_once_one_wins_everywhere(fleet, tmp_path, monkeypatch):
    """Two `inv bench` of one controller at once: never each a part of the hosts (both refused)."""
    monkeypatch.chdir(tmp_path)
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]  # two live "controller processes"
    which = threading.local()
    real_me = lock.me
    monkeypatch.setattr(lock, "me", lambda what: dataclasses.replace(real_me(what), pid=which.pid))
    try:
        for _ in range(10):
            for name in fleet.names:
                (fleet[name].home / lock.LOCK).unlink(missing_ok=True)
            outcome: dict[int, str] = {}

            def take(pid: int, outcome: dict[int, str]) -> None:
                which.pid = pid
                try:
                    lock.take(fleet, "bench e2e")
                    outcome[pid] = "won"
                except FleetError as exc:
                    outcome[pid] = str(exc)

            threads = [threading.Thread(target=take, args=(p.pid, outcome)) for p in sleepers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            winners = [pid for pid, said in outcome.items() if said == "won"]
            assert len(winners) == 1, outcome
            assert all(fleet.lock_of(name)["pid"] == winners[0] for name in fleet.names)
            loser = next(said for pid, said in outcome.items() if pid != winners[0])
            assert f"(bench e2e, from {tmp_path}, pid {winners[0]})" in loser
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
