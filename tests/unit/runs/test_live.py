"""The live view, fed per-second records as agents would send them."""

from __future__ import annotations

import io
from types import SimpleNamespace

from bench.wire import hist
from fabfile.runs.live import LiveView, Planned, _ms, planned

T0 = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(at: int, values: list[int], errors: int = 0, late: int | None = None) -> dict:
    h = hist.new()
    for v in values:
        h.record_value(v)
    record = {"at": at, "t": at - T0, "ops": len(values), "errors": errors, "hist": hist.encode(h)}
    if late is not None:
        record["late"] = late
    return record


def _view(**kw) -> tuple[LiveView, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    view = LiveView(out, tty=False, clock=clock, redraw_s=None, **kw)
    view.start_phase([Planned("set", 2, duration_s=30.0), Planned("get", 1, iterations=1000)])
    return view, out, clock


def test_planned_from_a_phases_jobs():
    jobs = [SimpleNamespace(benchmark="a", duration_s=5.0, iterations=None),
            SimpleNamespace(benchmark="b", duration_s=None, iterations=300),
            SimpleNamespace(benchmark="b", duration_s=None, iterations=200)]
    assert planned(jobs) == [Planned("a", 1, 5.0, None), Planned("b", 2, None, 500)]


def test_log_lines_every_10_s_show_the_last_second_every_agent_completed_merged_exactly():
    view, out, clock = _view()
    view.feed(("set", 0), "h4", _record(T0, [100] * 99))
    view.feed(("set", 1), "h5", _record(T0, [50_000]))
    view.feed(("set", 0), "h4", _record(T0 + 1, [200] * 10))  # agent 1 has not sent T0+1 yet
    view.feed(("get", 0), "h4", _record(T0, [300] * 400, errors=2))
    view.agent_line(("set", 0), "h4", "fleetbench-agent[0/2@h4] measuring 30 s")
    clock.now += 9.0
    view.tick()
    assert out.getvalue() == ""  # not yet 10 s
    clock.now += 1.0
    view.tick()
    lines = out.getvalue().splitlines()
    assert lines == [
        "[live] set: 1 s of 30 s, 29 s left; agents 2 running, 0 done, 0 failed; "
        "100 ops/s, p50 0.1 ms, p99 0.1 ms over the last 1 s, worst second p99 0.1 ms; "
        "0 errors in them (0 errors in all)",
        "[live] get: 402 of 1,000 ops (10 s); agents 1 running, 0 done, 0 failed; "
        "400 ops/s, p50 0.3 ms, p99 0.3 ms over the last 1 s, worst second p99 0.3 ms; "
        "2 errors in them (2 errors in all)"]
    view.feed(("set", 1), "h5", _record(T0 + 1, [7000] * 90))  # now T0+1 is complete: 100 ops
    clock.now += 10.0
    view.tick()
    set_line = out.getvalue().splitlines()[2]
    assert "2 s of 30 s, 28 s left" in set_line  # the next line covers the seconds after the last one's
    assert "100 ops/s, p50 7 ms, p99 7 ms over the last 1 s" in set_line
    assert "measuring 30 s" not in out.getvalue()  # per-agent lines only with --verbose


def test_a_failed_agent_shows_its_error_and_last_lines_and_stops_being_waited_for():
    view, out, clock = _view()
    view.feed(("set", 0), "h4", _record(T0, [100]))
    view.feed(("set", 1), "h5", _record(T0, [100]))
    view.feed(("set", 0), "h4", _record(T0 + 1, [100, 100]))
    view.agent_line(("set", 1), "h5", "fleetbench-agent[1/2@h5] fatal: connection reset")
    view.agent_state(("set", 1), "failed", "exit status 1")
    assert out.getvalue().splitlines() == [
        "agent set#1 on h5 failed: exit status 1",
        "  [h5 set#1] fleetbench-agent[1/2@h5] fatal: connection reset"]
    view.agent_state(("set", 0), "done")
    view.agent_state(("get", 0), "done")
    view.end_phase()
    final = out.getvalue().splitlines()[2:]
    assert final[0].startswith("[live] set: ended (0 s)") and "0 running, 1 done, 1 failed" in final[0]
    assert "2 ops/s" in final[0]  # T0, both agents: the last second (T0+1) was cut short by the end
    assert final[1] == ("[live] get: 0 of 1,000 ops (0 s); agents 0 running, 1 done, 0 failed; "
                        "no complete second yet, 0 errors")


def test_verbose_prints_every_agent_line():
    view, out, _ = _view(verbose=True)
    view.agent_line(("set", 0), "h4", "measuring 30 s (closed loop, pipeline 1)")
    assert out.getvalue() == "[h4 set#0] measuring 30 s (closed loop, pipeline 1)\n"


def test_on_a_terminal_it_redraws_a_table_in_place():
    out, clock = io.StringIO(), Clock()
    view = LiveView(out, tty=True, clock=clock, redraw_s=None)
    view.start_phase([Planned("set", 1, duration_s=10.0)])
    view.feed(("set", 0), "h4", _record(T0, [2000] * 5))
    view.tick()
    view.agent_state(("set", 0), "done")
    view.end_phase()
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movement / styles: drawn by rich, in place
    assert "set" in text and "2 ms" in text and "0/1/0" in text


def test_clock_offsets_put_hosts_seconds_together():
    out, clock = io.StringIO(), Clock()
    view = LiveView(out, tty=False, clock=clock, redraw_s=None, offsets={"h5": 1.0})
    view.start_phase([Planned("set", 2, duration_s=5.0)])
    view.feed(("set", 0), "h4", _record(T0, [100]))
    view.feed(("set", 1), "h5", _record(T0 + 1, [100] * 3))  # h5's clock runs 1 s ahead: the same second
    assert "4 ops/s" in view.lines()[0]


def test_a_line_merges_every_second_since_the_last_one_so_a_stall_shows():
    """A server that stalls for 1 s in every 5 s at 200 ops/s (field notes, "Latency truth"): the
    second after each stall completes the stalled ops, 0 to 1 s late. One second picked every
    10 s misses it; the merge of all ten seconds (and its worst second) does not."""
    view, out, clock = _view()
    view.start_phase([Planned("set", 2, duration_s=30.0)])
    for at in range(T0, T0 + 11):  # T0+10 is not complete: agent 1 has not sent it
        stalled = (at - T0) % 5 == 1
        for agent in (0, 1):  # the stall's second: nothing completes; the next one completes it all
            quick = [] if stalled else [2000] * 80
            slow = [i * 50_000 for i in range(1, 21)] if (at - T0) % 5 == 2 else []  # 50 ms .. 1 s
            if at < T0 + 10 or agent == 0:
                view.feed(("set", agent), f"h{4 + agent}", _record(at, quick + slow, late=len(slow)))
    clock.now += 10.0
    view.tick()
    (line,) = out.getvalue().splitlines()
    # 10 seconds: 2 stalled (no ops), 8 with 160 quick ones, 2 of which also complete 40 slow ones:
    # 1,360 ops, the 1,347th (p99) is the 67th of the 80 slow; the worst second's is its 38th of 40
    assert ("136 ops/s, p50 2 ms, p99 850 ms over the last 10 s, "
            "worst second p99 950 ms; 0 errors, 80 late in them") in line, line
    # the last second alone says nothing is wrong
    assert view._benches["set"].shown["p99"] == 2000

    for agent in (0, 1):  # the next window starts after the last: T0+10 (agent 1) and T0+11
        if agent == 1:
            view.feed(("set", 1), "h5", _record(T0 + 10, [2000] * 80, late=0))
        view.feed(("set", agent), f"h{4 + agent}", _record(T0 + 11, [3000] * 100, late=0))
    clock.now += 10.0
    view.tick()
    second = out.getvalue().splitlines()[1]
    assert "180 ops/s, p50 3 ms, p99 3 ms over the last 2 s, worst second p99 3 ms; 0 errors, 0 late" in second


def test_a_window_is_the_exact_merge_not_an_average_of_seconds():
    view, out, clock = _view()
    view.feed(("set", 0), "h4", _record(T0, [100] * 97 + [900_000] * 3))
    view.feed(("set", 1), "h5", _record(T0, [100] * 100))
    for at in (T0 + 1, T0 + 2):
        view.feed(("set", 0), "h4", _record(at, [100] * 100))
        view.feed(("set", 1), "h5", _record(at, [100] * 100))
    line = view.lines()[0]
    # 3 slow of 600: the merged p99 is 0.1 ms; the worst second's (3 of 200) is 900 ms
    assert "200 ops/s, p50 0.1 ms, p99 0.1 ms over the last 3 s, worst second p99 900 ms" in line, line
    assert "late" not in line  # closed loop: no late counts, none claimed


def test_durations_just_under_a_second_read_as_seconds():
    assert (_ms(999_400), _ms(999_700), _ms(1_500_000), _ms(None)) == ("999 ms", "1 s", "1.5 s", "-")


def test_the_last_line_of_a_phase_shows_its_last_cut_short_second_too():
    """A counted benchmark shorter than a second spans two wall-clock seconds, most of its ops in
    the second one (cut short by its end): the phase's last line shows every op since the line
    before, not only the first sliver."""
    out, clock = io.StringIO(), Clock()
    view = LiveView(out, tty=False, clock=clock, redraw_s=None)
    view.start_phase([Planned("set", 1, iterations=1000)])
    view.feed(("set", 0), "h4", _record(T0, [100] * 40))
    view.feed(("set", 0), "h4", _record(T0 + 1, [100] * 960))
    view.agent_state(("set", 0), "done")
    view.end_phase()
    (line,) = out.getvalue().splitlines()
    assert "1,000 of 1,000 ops" in line and "500 ops/s" in line and "over the last 2 s" in line, line
