"""The hosts' phase barrier: its bookkeeping with a fake clock, then the protocol over local sockets."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.agent import barrier
from bench.agent.barrier import BarrierState, Coordinator, Participant, best_offset

TOKEN = "t" * 64
REPO = Path(__file__).resolve().parents[3]


def test_a_phase_is_released_once_every_live_participant_arrived():
    s = BarrierState(["a", "b"], lead_s=2.0, host_timeout_s=30.0, now=0.0)
    s.arrive("a", 0, now=1.0)
    assert s.poll(1.0, wall=1.0) == []
    s.arrive("b", 0, now=1.5)
    assert s.poll(1.5, wall=1.5) == [0]
    assert s.releases[0] == 3.5
    assert s.poll(2.0, wall=2.0) == []  # released once


def test_a_silent_participant_is_dropped_and_stalls_nobody():
    s = BarrierState(["a", "b"], lead_s=1.0, host_timeout_s=10.0, now=0.0)
    s.arrive("a", 0, now=1.0)
    assert s.poll(9.0, wall=9.0) == []
    assert s.poll(10.5, wall=10.5) == [0]
    assert s.dropped == {"b": "silent for 10 s"}
    s.arrive("b", 1, now=20.0)  # it came back: a participant again
    assert "b" not in s.dropped
    s.seen("a", 20.0)
    assert s.poll(20.0, wall=20.0) == []  # phase 1 waits for a now
    s.arrive("a", 1, now=21.0)
    assert s.poll(21.0, wall=21.0) == [1]


def test_one_that_left_is_not_waited_for():
    s = BarrierState(["a", "b"], lead_s=0.0, host_timeout_s=10.0, now=0.0)
    s.leave("b")
    s.arrive("a", 0, now=0.1)
    assert s.poll(0.1, wall=0.1) == [0]


def test_an_unknown_host_counts_for_nothing():
    s = BarrierState(["a"], lead_s=0.0, host_timeout_s=10.0, now=0.0)
    s.arrive("mallory", 0, now=0.1)
    assert "mallory" not in s.arrived and s.poll(0.1, wall=0.1) == []


def test_best_offset_takes_the_shortest_round_trip():
    # ours: sent 10.0, received 10.2 (their clock said 15.1): offset 5.0, rtt 0.2; a slow sample is ignored
    offset, rtt = best_offset([(20.0, 26.0, 21.0), (10.0, 15.1, 10.2)])
    assert offset == pytest.approx(5.0)
    assert rtt == pytest.approx(0.2)


@pytest.fixture
def coordinator():
    c = Coordinator("127.0.0.1", 0, TOKEN, ["a", "b"], lead_s=0.3, host_timeout_s=3.0).start()
    yield c
    c.close()


def _arrive_all(participants, phase):
    out = {}

    def one(p):
        out[p.host] = p.arrive(phase)

    threads = [threading.Thread(target=one, args=(p,)) for p in participants]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_two_hosts_start_each_phase_at_the_same_instant(coordinator):
    host, port = coordinator.address
    parts = [Participant(host, port, TOKEN, name, host_timeout_s=3.0) for name in ("a", "b")]
    for p in parts:
        assert p.connect()
        assert p.offset_s is not None and abs(p.offset_s) < 0.05  # the same clock
    for phase in (0, 1, 2):
        starts = _arrive_all(parts, phase)
        assert set(starts) == {"a", "b"}
        (at_a, dropped_a), (at_b, _) = starts["a"], starts["b"]
        assert abs(at_a - at_b) < 0.05 and dropped_a == []
        assert at_a > time.time() - 0.3  # a start in the (near) future, not a past instant
    for p in parts:
        p.leave()


def test_a_wrong_token_is_refused(coordinator):
    host, port = coordinator.address
    p = Participant(host, port, "x" * 64, "a", host_timeout_s=1.0)
    assert not p.connect(give_up_after=0.2)
    assert "refused" in (p.alone or "")


def test_a_host_that_cannot_reach_the_coordinator_goes_on_alone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    p = Participant("127.0.0.1", port, TOKEN, "a", host_timeout_s=0.5)
    before = time.time()
    at, dropped = p.arrive(0)
    assert p.alone and at >= before and dropped == []


def test_a_frozen_participant_is_given_up_after_the_host_timeout(monkeypatch):
    monkeypatch.setattr(barrier, "BEAT_S", 0.2)
    c = Coordinator("127.0.0.1", 0, TOKEN, ["a", "b"], lead_s=0.0, host_timeout_s=1.0).start()
    try:
        host, port = c.address
        a = Participant(host, port, TOKEN, "a", host_timeout_s=1.0)
        assert a.connect()
        _, dropped = a.arrive(0)  # b never came: dropped after 1 s, a goes on
        assert dropped == ["b"]
        assert set(c.summary()["dropped"]) == {"b"}
    finally:
        c.close()


def test_liveness_is_monotonic_and_start_times_are_wall_clock():
    s = BarrierState(["a", "b"], lead_s=2.0, host_timeout_s=10.0, now=100.0)
    s.arrive("a", 0, now=101.0)
    s.seen("b", 101.0)
    assert s.poll(102.0, wall=1_000_000.0) == [] and s.dropped == {}  # a wall-clock step drops nobody
    s.arrive("b", 0, now=103.0)
    assert s.poll(103.0, wall=1_000_001.0) == [0]
    assert s.releases[0] == 1_000_003.0  # handed out in the wall clock, the hosts' offsets are to it


def test_a_wall_clock_step_on_the_coordinator_releases_no_phase(monkeypatch):
    monkeypatch.setattr(barrier, "BEAT_S", 0.2)
    step = [0.0]
    c = Coordinator("127.0.0.1", 0, TOKEN, ["a", "b"], lead_s=0.0, host_timeout_s=2.0,
                    clock=lambda: time.time() + step[0]).start()
    try:
        host, port = c.address
        a, b = (Participant(host, port, TOKEN, name, host_timeout_s=5.0) for name in ("a", "b"))
        assert a.connect() and b.connect()  # b beats but does not arrive yet
        started = {}
        waiter = threading.Thread(target=lambda: started.update(a=a.arrive(0)))
        waiter.start()
        step[0] = 3600.0  # the coordinator's wall clock jumps an hour ahead
        waiter.join(1.5)  # several of the coordinator's turns
        assert "a" not in started and c.summary() == {"dropped": {}, "left": [], "releases": {}}
        at_b, dropped = b.arrive(0)
        waiter.join(5)
        assert started["a"][1] == [] and dropped == []
        assert abs(started["a"][0] - at_b) < 0.05
        a.leave()
        b.leave()
    finally:
        c.close()


def _hello(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(json.dumps({"op": "hello", "token": TOKEN, "host": name}).encode() + b"\n")
    assert json.loads(sock.makefile().readline())["op"] == "welcome"
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while True:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_only_the_connection_that_said_hello_speaks_for_its_host(coordinator):
    port = coordinator.address[1]
    first = _hello(port, "a")
    second = _hello(port, "a")  # a reconnected: the old connection no longer speaks for it
    assert _closed_by_peer(first)
    with contextlib.suppress(OSError):
        first.sendall(b'{"op": "leave"}\n')
    second.sendall(b'{"op": "leave", "host": "b"}\n')  # a's connection cannot make b leave
    assert _closed_by_peer(second)
    assert coordinator.summary()["left"] == []
    third = _hello(port, "a")
    third.sendall(b'{"op": "leave"}\n')
    third.sendall(b'{"op": "time", "id": 1}\n')
    assert json.loads(third.makefile().readline())["op"] == "time"  # the leave before it is handled
    assert coordinator.summary()["left"] == ["a"]
    for sock in (first, second, third):
        sock.close()


def test_a_stranger_has_a_deadline_for_its_hello_and_only_a_few_wait_at_once(monkeypatch):
    monkeypatch.setattr(barrier, "HELLO_WAIT_S", 0.5)
    monkeypatch.setattr(barrier, "MAX_PENDING", 2)
    c = Coordinator("127.0.0.1", 0, TOKEN, ["a"], lead_s=0.0, host_timeout_s=60.0).start()
    try:
        port = c.address[1]
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert _closed_by_peer(silent)  # long before the host timeout
        oldest, *others = [socket.create_connection(("127.0.0.1", port), timeout=0.2) for _ in range(3)]
        oldest.settimeout(10)
        assert _closed_by_peer(oldest)  # made room for the newer ones
        a = Participant("127.0.0.1", port, TOKEN, "a", host_timeout_s=5.0)
        assert a.connect(give_up_after=5)
        for sock in (silent, oldest, *others):
            sock.close()
        a.leave()
    finally:
        c.close()


# A coordinator in a process of its own, with few file descriptors, driven over its stdin.
COORDINATOR = r'''
import json, os, resource, sys
from bench.agent.barrier import Coordinator
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
c = Coordinator("127.0.0.1", 0, sys.argv[2], ["a", "b"], lead_s=0.2, host_timeout_s=30.0).start()
print(c.address[1], flush=True)
held = []
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    answer = "ok"
    if command == "hog":  # every descriptor this process may have, taken
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            answer = str(len(held))
    elif command == "free":
        for fd in held:
            os.close(fd)
        held.clear()
    elif command == "open":  # what the host run does when it starts a phase's agents
        try:
            held.extend(os.open("/dev/null", os.O_RDONLY) for _ in range(int(arg)))
        except OSError as exc:
            answer = f"cannot open: {exc}"
    elif command == "status":
        answer = json.dumps({"refused": getattr(c, "refused", None), "accept_error": getattr(c, "accept_error", None)})
    print(answer, flush=True)
'''


class _CoordinatorProcess:
    def __init__(self, limit: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(limit), TOKEN], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        self.port = int(self.proc.stdout.readline())

    def ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def coordinator_process():
    processes: list[_CoordinatorProcess] = []
    yield lambda limit: processes.append(_CoordinatorProcess(limit)) or processes[-1]
    for p in processes:
        p.close()


def _idle_connections(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never say a word (those the kernel takes while the coordinator is busy)."""
    out = []
    for _ in range(n):
        try:
            out.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            pass
    return out


def _members_pass_two_phases(port: int) -> None:
    parts = [Participant("127.0.0.1", port, TOKEN, name, host_timeout_s=10.0) for name in ("a", "b")]
    for p in parts:
        assert p.connect(give_up_after=10), p.alone
    for phase in (0, 1):
        starts = _arrive_all(parts, phase)
        assert set(starts) == {"a", "b"} and starts["a"][1] == [] and starts["b"][1] == []
    for p in parts:
        p.leave()


def test_a_flood_of_idle_connections_neither_ends_the_barrier_nor_starves_its_process(coordinator_process):
    limit = barrier.MAX_PENDING + 48  # what the coordinator may hold, and room for the host run's own files
    c = coordinator_process(limit)
    flood = _idle_connections(c.port, 4 * limit)
    try:
        _members_pass_two_phases(c.port)
        assert c.ask("open 20") == "ok"  # the host run can still start its agents
        assert json.loads(c.ask("status"))["refused"] >= len(flood) - barrier.MAX_PENDING
    finally:
        for sock in flood:
            sock.close()


def test_the_coordinator_accepts_again_once_descriptors_are_back(coordinator_process):
    c = coordinator_process(64)
    assert int(c.ask("hog")) > 0
    stranger = socket.create_connection(("127.0.0.1", c.port), timeout=5)  # queued: accept fails with EMFILE
    deadline = time.monotonic() + 10
    while json.loads(c.ask("status"))["accept_error"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Too many open files" in json.loads(c.ask("status"))["accept_error"]
    assert c.ask("free") == "ok"
    _members_pass_two_phases(c.port)
    stranger.close()


def test_a_search_step_release_carries_the_coordinators_decision_to_every_host():
    seen: list[tuple[int, dict]] = []

    def decide(step, parts):
        seen.append((step, parts))
        return {"next": sum(p["ops"] for p in parts.values())}

    c = Coordinator("127.0.0.1", 0, TOKEN, ["a", "b"], lead_s=0.1, host_timeout_s=3.0, decide=decide).start()
    try:
        host, port = c.address
        parts = [Participant(host, port, TOKEN, name, host_timeout_s=3.0) for name in ("a", "b")]
        out = {}

        def one(p, ops):
            p.connect()
            p.arrive(0)  # a plain step carries nothing and is decided nothing
            out[(p.host, 0)] = p.decision
            p.arrive(1, search={"ops": ops})
            out[(p.host, 1)] = p.decision

        threads = [threading.Thread(target=one, args=(p, ops)) for p, ops in zip(parts, (3, 4), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert out == {("a", 0): None, ("b", 0): None, ("a", 1): {"next": 7}, ("b", 1): {"next": 7}}
        assert seen == [(1, {"a": {"ops": 3}, "b": {"ops": 4}})]  # decided once, from every host's part
        for p in parts:
            p.leave()
    finally:
        c.close()


def test_a_decision_that_fails_ends_the_search_with_why():
    def decide(step, parts):
        raise ValueError("garbage histogram")

    c = Coordinator("127.0.0.1", 0, TOKEN, ["a"], lead_s=0.0, host_timeout_s=3.0, decide=decide).start()
    try:
        p = Participant(*c.address, TOKEN, "a", host_timeout_s=3.0)
        assert p.connect()
        p.arrive(0, search={"ops": 1})
        assert p.decision == {"next": None, "error": "ValueError: garbage histogram"}
        p.leave()
    finally:
        c.close()
