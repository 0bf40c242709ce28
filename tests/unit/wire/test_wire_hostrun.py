"""The host-run contract's checks (bench.wire.hostrun): whatever bytes a host sends back as a poll
answer or a state file, the answer is a checked value or a WireError naming what is wrong, in
bounded time (issue 20, item 1)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wire import hostrun as wire


def bounded(fn, *args, seconds: float = 5.0):
    """``fn(*args)``'s answer or exception, failing the test if it takes more than ``seconds``
    (a parser that loops forever must fail, not hang the suite)."""
    out: dict = {}

    def call() -> None:
        try:
            out["value"] = fn(*args)
        except Exception as exc:
            out["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__}{args!r:.80} still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def frame(path: str, start: int, body: bytes) -> bytes:
    return wire.FRAME + f"{path} {start} {len(body)}\n".encode() + body + b"\n"


@pytest.mark.parametrize("data, named", [
    (b"@@fleetbench a 0 -22\n", "is not <path> <start> <length>"),  # looped forever at 100% CPU
    (b"@@fleetbench a 0 22\nshort\n", "22 bytes announced, 6 sent"),
    (b"@@fleetbench a 0 1\nxy", "1 bytes announced"),
    (b"@@fleetbench a b c d\n", "is not <path> <start> <length>"),
    (b"@@fleetbench a 0 1", "no end to its header"),
    (b"@@fleetbench ../../etc/passwd 0 1\nx\n", "not a plain relative path"),
    (b"@@fleetbench /etc/passwd 0 1\nx\n", "not a plain relative path"),
    (b"@@fleetbench \xff 0 1\nx\n", "is not ascii"),
    (b"@@fleetbench a 0 1\nx\n@@fleetbench a 0 1\ny\n", "a sent twice"),
    (b"@@fleetbench a 0 \xd9\xa3\nx\n", "is not <path> <start> <length>"),  # a unicode digit is no digit
    (b"garbage", "expected b'@@fleetbench '"),
])
def test_a_malformed_poll_answer_is_a_named_error_never_a_hang(data, named):
    with pytest.raises(wire.WireError, match=named):
        bounded(wire.parse_poll, data)


def test_poll_frames_round_trip():
    body = b"@@fleetbench x 0 3\nline\n"
    data = frame("a/agent-0.stderr", 5, body) + frame(wire.ALIVE, 0, b"1")
    assert wire.parse_poll(data) == {"a/agent-0.stderr": (5, body), wire.ALIVE: (0, b"1")}
    assert wire.parse_poll(wire.MISSING + b"\n") is None
    assert wire.parse_poll(b"") == {}


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda a, b: wire.FRAME + a + b, st.binary(max_size=40),
                                           st.binary(max_size=60)))
def test_any_bytes_give_frames_or_a_named_error_in_bounded_time(data):
    try:
        files = bounded(wire.parse_poll, data, seconds=2.0)
    except wire.WireError as exc:
        assert str(exc).startswith("poll answer")
        return
    assert files is None or all(isinstance(k, str) and isinstance(v, tuple) for k, v in files.items())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a/agent-0.stderr", "_run/state.json", "b/agent-12.json"]),
                          st.integers(0, 1 << 40), st.binary(max_size=80)), max_size=3, unique_by=lambda t: t[0]))
def test_well_formed_frames_parse_to_what_was_sent(frames):
    data = b"".join(frame(p, o, b) for p, o, b in frames)
    assert wire.parse_poll(data) == {p: (o, b) for p, o, b in frames}


def good_state(**extra) -> dict:
    return {"schema": wire.STATE_SCHEMA, "status": "running", "pid": 7, "started_at": 1.0, "updated_at": 2.0,
            "phase": 0, "agents": {"set/agent-0": {"benchmark": "set", "agent_num": 0, "phase": 0,
                                                   "state": "running"}}, **extra}


def test_a_repetitions_agents_are_taken():  # their directory is the label: "fast#2"
    state = good_state(agents={"fast#2/agent-1": {"benchmark": "fast#2", "agent_num": 1, "phase": 1,
                                                  "state": "running"}})
    assert wire.check_state(json.dumps(state).encode(), "h1").status == "running"
    data = frame("fast#2/agent-1.stderr", 0, b"x") + frame(wire.ALIVE, 0, b"1")
    assert wire.parse_poll(data) == {"fast#2/agent-1.stderr": (0, b"x"), wire.ALIVE: (0, b"1")}


def test_a_good_state_is_taken_and_typed():
    state = wire.check_state(json.dumps(good_state(clock={"offset_s": 0.25})).encode(), "h1")
    assert state.status == "running" and state.updated_at == 2.0 and state.clock_offset == 0.25
    assert state.notes == () and state.alone is None
    alone = wire.check_state(json.dumps(good_state(barrier={"alone": "no word"})).encode(), "h1")
    assert alone.alone == "no word"


@pytest.mark.parametrize("offset", ["NaN", "Infinity", "-Infinity"])
def test_a_clock_offset_that_is_not_a_finite_number_is_ignored_and_said(offset):
    text = json.dumps(good_state(clock={"offset_s": 0.0})).replace('"offset_s": 0.0', f'"offset_s": {offset}')
    state = wire.check_state(text.encode(), "h1")
    assert state.clock_offset is None and state.data["clock"] is None
    assert state.notes == (f"h1's clock offset {float(offset)!r} is not a finite number: ignored "
                           "(its seconds are taken as they are)",)
    assert wire.finite_offset(float(offset)) is None and wire.finite_offset(1) == 1.0


@pytest.mark.parametrize("change, named", [
    ({"status": "weird"}, "status 'weird' is none of"),
    ({"updated_at": "soon"}, "updated_at 'soon' is not a time"),
    ({"pid": -1}, "pid is not a process id"),
    ({"agents": []}, "agents is not an object"),
    ({"agents": {"../x/agent-0": {}}}, "not <benchmark dir>/agent-<n>"),
    ({"agents": {"set/agent-0": {"benchmark": "set", "agent_num": "0", "phase": 0, "state": "done"}}},
     "benchmark, agent_num or phase"),
    ({"agents": {"set/agent-0": {"benchmark": "set", "agent_num": 0, "phase": 0, "state": "odd"}}}, "state 'odd'"),
    ({"schema": "other"}, "is not a fleetbench.host-run/1 state"),
])
def test_a_bad_state_is_a_named_error(change, named):
    with pytest.raises(wire.WireError, match=named):
        wire.check_state(json.dumps(good_state(**change)).encode(), "h1")
    with pytest.raises(wire.WireError, match="its state.json is not JSON"):
        wire.check_state(b'{"schema": "fleet', "h1")  # a cut copy


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                                              lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20)
       .map(lambda v: json.dumps({**good_state(), "agents": v} if isinstance(v, dict) else v).encode()))
def test_any_state_bytes_give_a_checked_state_or_a_named_error(data):
    try:
        state = bounded(wire.check_state, data, "h1", seconds=2.0)
    except wire.WireError as exc:
        assert str(exc).startswith("its state.json")
        return
    assert state.status in wire.RUN_STATUSES and isinstance(state.agents, dict)


def test_the_plan_check_names_a_job_without_an_agent_number():
    plan = {"schema": wire.PLAN_SCHEMA, "run_id": "r", "host": "h", "agent_pex": "p", "lease_s": 1,
            "host_timeout_s": 1, "agent_timeout_s": 1, "phases": [{"jobs": [{"dir": "set", "job": {}}]}]}
    with pytest.raises(wire.PlanError, match="phase 0: a job needs 'job' \\(with its agent_num\\)"):
        wire.load_plan(json.dumps(plan))


def test_a_polls_memory_does_not_grow_with_the_agents_of_a_host():
    one = wire.POLL_MAX_BYTES
    assert one < wire.POLL_FILE_BYTES + wire.POLL_BUDGET_BYTES + (2 << 20)
    assert wire.POLL_BUDGET_BYTES >= wire.POLL_RESULT_BYTES  # the largest result still fits one poll
