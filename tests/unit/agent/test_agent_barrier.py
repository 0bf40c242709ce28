"""The hosts' phase barrier: its bookkeeping with a fake clock, then the protocol over local sockets."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bench.agent import barrier
from bench.agent.barrier import BarrierState, Coordinator, Participant, best_offset

TOKEN = "t" * 64


def test_a_phase_is_released_once_every_live_participant_arrived():
    s = BarrierState(["a", "b"], lead_s=2.0, host_timeout_s=30.0, now=0.0)
    s.arrive("a", 0, now=1.0)
    assert s.poll(1.0) == []
    s.arrive("b", 0, now=1.5)
    assert s.poll(1.5) == [0]
    assert s.releases[0] == 3.5
    assert s.poll(2.0) == []  # released once


def test_a_silent_participant_is_dropped_and_stalls_nobody():
    s = BarrierState(["a", "b"], lead_s=1.0, host_timeout_s=10.0, now=0.0)
    s.arrive("a", 0, now=1.0)
    assert s.poll(9.0) == []
    assert s.poll(10.5) == [0]
    assert s.dropped == {"b": "silent for 10 s"}
    s.arrive("b", 1, now=20.0)  # it came back: a participant again
    assert "b" not in s.dropped
    s.seen("a", 20.0)
    assert s.poll(20.0) == []  # phase 1 waits for a now
    s.arrive("a", 1, now=21.0)
    assert s.poll(21.0) == [1]


def test_one_that_left_is_not_waited_for():
    s = BarrierState(["a", "b"], lead_s=0.0, host_timeout_s=10.0, now=0.0)
    s.leave("b")
    s.arrive("a", 0, now=0.1)
    assert s.poll(0.1) == [0]


def test_an_unknown_host_counts_for_nothing():
    s = BarrierState(["a"], lead_s=0.0, host_timeout_s=10.0, now=0.0)
    s.arrive("mallory", 0, now=0.1)
    assert "mallory" not in s.arrived and s.poll(0.1) == []


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
