"""Following hosts that answer, but not as a running host run should (issue 20): a run directory
that is gone, a host run that never wrote its state, a heartbeat that stopped, a state caught
mid-replace, a clock offset that is not a number, a host that went on alone, escape sequences.
The poll's transport is faked (its answers scripted); everything after it is the real code."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator

from bench.wire import hostrun as wire
from fabfile.runs import follow, hostrun
from fabfile.runs.follow import Follower
from fabfile.runs.recorded import bench_status
from tests.unit.runs.test_follow import follower, host_state, state


def frame(path: str, body: bytes, start: int = 0) -> bytes:
    return wire.FRAME + f"{path} {start} {len(body)}\n".encode() + body + b"\n"


def answering(monkeypatch, f: Follower, answers: Callable[[], bytes], host_timeout: float = 0.3) -> None:
    """The hosts answer each poll with ``answers()``; no SSH."""
    f.host_timeout = host_timeout
    f.poll_s = 0.02
    monkeypatch.setattr(f, "_connect", lambda name: None)
    monkeypatch.setattr(f, "_drop", lambda name: None)
    monkeypatch.setattr(follow.hostrun, "exec_with_stdin", lambda c, command, data, timeout, limit=0: answers())
    f.fleet = {"a1": None, "a2": None}  # type: ignore[assignment]


def follow_a1(f: Follower, seconds: float = 10.0) -> None:
    """Follow host a1 until its thread ends, at most ``seconds`` (then halted: the test fails on
    what it finds, rather than hanging)."""
    t = threading.Thread(target=f._follow_host, args=(f.hosts["a1"],), daemon=True)
    t.start()
    t.join(seconds)
    f.halt.set()
    t.join(5)


def cycle(*answers: bytes) -> Callable[[], bytes]:
    it: Iterator[bytes] = iter(answers)
    last = [answers[-1]]

    def next_answer() -> bytes:
        last[0] = next(it, last[0])
        return last[0]
    return next_answer


def record(f: Follower) -> dict:
    return json.loads(f.run_dir.agent_path("set", 0).read_text())


def test_a_run_directory_that_vanished_is_a_lost_host_not_a_finished_one(tmp_path, monkeypatch):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    running = state("running", {"state": "running"})
    answering(monkeypatch, f, cycle(frame(wire.STATE, running) + frame(wire.ALIVE, b"1"), wire.MISSING + b"\n"))
    follow_a1(f)
    h = f.hosts["a1"]
    assert h.gave_up is not None and "its run directory ~/.fleetbench/runs/r1 is gone" in h.gave_up
    assert any(line.startswith("gave up on a1: its run directory") for line in echoed), echoed
    failure = record(f)["failure"]
    assert failure["host"] == "a1" and "run directory" in failure["error"]
    assert bench_status(f.statuses(), f.lost()) == "partial"


def test_a_host_run_that_died_before_its_first_state_is_given_up_with_its_log(tmp_path, monkeypatch):
    f = follower(tmp_path, [])
    answer = frame(wire.ALIVE, b"0") + frame(wire.LOG, b"Traceback ...\nOSError: no space left on device\n")
    answering(monkeypatch, f, lambda: answer)
    follow_a1(f)
    h = f.hosts["a1"]
    assert h.gave_up is not None and h.gave_up.startswith("its host run wrote no state in"), h.gave_up
    assert "its log ends: Traceback ...\nOSError: no space left on device" in h.gave_up
    assert "wrote no state" in record(f)["failure"]["error"]
    assert bench_status(f.statuses(), f.lost()) == "partial"


def test_a_frozen_host_run_is_stalled_once_its_heartbeat_stands_still_for_host_timeout(tmp_path, monkeypatch):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    answer = frame(wire.STATE, state("running", {"state": "running"})) + frame(wire.ALIVE, b"1")
    answering(monkeypatch, f, lambda: answer)  # sshd answers, pid and cwd are there: SIGSTOPped
    follow_a1(f)
    h = f.hosts["a1"]
    assert h.gave_up is not None and h.gave_up.startswith("stalled: its host run's heartbeat stopped"), h.gave_up
    assert "gave up on a1" in echoed[-1] and "--host-timeout 0.3 s" in echoed[-1]
    assert "stalled" in record(f)["failure"]["error"]


def test_a_beating_host_is_followed_and_a_state_caught_mid_replace_is_read_again(tmp_path, monkeypatch):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    beats = iter(range(1, 10_000))

    def answer() -> bytes:
        n = next(beats)
        body = b'{"schema": "fleetbench.ho' if n % 3 == 0 else \
            host_state("running", {"set/agent-0": {"benchmark": "set", "agent_num": 0, "phase": 0,
                                                   "state": "running"}}, updated_at=float(n))
        return frame(wire.STATE, body) + frame(wire.ALIVE, b"1")
    answering(monkeypatch, f, answer, host_timeout=0.5)
    follow_a1(f, seconds=1.5)  # three times host_timeout, a cut copy every third poll
    h = f.hosts["a1"]
    assert h.gave_up is None and not any(line.startswith("lost a1") for line in echoed), (h.gave_up, echoed)
    assert h.state is not None and h.state["status"] == "running"


def test_a_malformed_answer_is_the_hosts_error_named_in_the_lost_message(tmp_path, monkeypatch):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    f.reconnect_for = 0.2
    answering(monkeypatch, f, lambda: b"@@fleetbench a 0 -22\n")  # looped forever
    follow_a1(f)
    assert echoed[0].startswith("lost a1, retrying for up to 0 s ... (poll answer, frame 1: header"), echoed
    assert f.hosts["a1"].gave_up is not None and "is not <path> <start> <length>" in f.hosts["a1"].gave_up


def test_a_clock_offset_that_is_not_a_number_is_ignored_and_said_once(tmp_path):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    h = f.hosts["a1"]
    text = state("running", {"state": "running"}).decode()[:-1] + ', "clock": {"offset_s": NaN}}'
    for _ in range(2):
        f._take(h, {hostrun.STATE: (0, text.encode())})
    warnings = [line for line in echoed if line.startswith("warning")]
    assert warnings == ["warning: a1's clock offset nan is not a finite number: ignored "
                        "(its seconds are taken as they are)"]
    assert f.clock() == {} and h.state is not None and h.state["clock"] is None


def test_a_host_that_went_on_alone_is_said_and_recorded_per_phase(tmp_path):
    echoed: list[str] = []
    f = follower(tmp_path, echoed)
    h = f.hosts["a1"]
    alone = json.loads(state("running", {"state": "running"}))
    alone.update(barrier={"alone": "no word from the coordinator for 5 s"}, alone_phases={"0": "no word"},
                 clock={"offset_s": 0.0, "coordinator": "a2"})
    f._take(h, {hostrun.STATE: (0, json.dumps(alone).encode())})
    assert echoed[0].startswith("a1 went on without the barrier coordinator (no word from the coordinator for 5 s)")
    assert f.alone() == {"a1": {"0": "no word"}}
    # the coordinator (a2) its hosts went on without: given up once they are done
    h.finished = True
    assert f._given_up_by_the_fleet(f.hosts["a2"], 6)


def test_an_agent_that_never_started_is_failed_in_the_live_view_too(tmp_path):
    shown = io.StringIO()
    f = follower(tmp_path, [], shown)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"}))})  # the view is on phase 0
    f._take(h, {hostrun.STATE: (0, state("failed", {"state": "pending"})), "set/agent-0.json": (0, b"")})
    f._end_view()
    assert "failed: never started: the run ended before its phase" in shown.getvalue()
    assert "0 done, 1 failed" in shown.getvalue().splitlines()[-1]


def test_no_escape_byte_from_a_host_reaches_the_live_view(tmp_path):
    shown = io.StringIO()
    f = follower(tmp_path, [], shown)
    h = f.hosts["a1"]
    f._take(h, {hostrun.STATE: (0, state("running", {"state": "running"})),
                "set/agent-0.stderr": (0, b"\x1b]0;pwned\x07 title\n")})
    result = json.dumps({"fatal": "boom \x1b[2J cleared", "ops": 0}).encode()
    f._take(h, {hostrun.STATE: (0, state("done", {"state": "done", "exit_code": 1})), "set/agent-0.json": (0, result)})
    f._end_view()
    out = shown.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07 title" in out and "boom \\x1b[2J cleared" in out


def test_every_agent_of_a_host_comes_first_in_turn_so_a_polls_budget_is_shared(tmp_path, monkeypatch):
    f = follower(tmp_path, [])
    h = f.hosts["a1"]
    agents = {f"set/agent-{n}": {"benchmark": "set", "agent_num": n, "phase": 0, "state": "running"} for n in range(3)}
    answer = frame(wire.STATE, host_state("running", agents)) + frame(wire.ALIVE, b"1")
    commands: list[str] = []
    monkeypatch.setattr(follow.hostrun, "exec_with_stdin",
                        lambda c, command, data, timeout, limit=0: commands.append(command) or answer)
    f.fleet = {"a1": None}  # type: ignore[assignment]
    for _ in range(4):
        f._poll(h)
    firsts = [c[c.index("emit set/agent-"):].split()[1] for c in commands[1:]]  # results are sent first
    assert sorted(firsts) == ["set/agent-0.json", "set/agent-1.json", "set/agent-2.json"], firsts
