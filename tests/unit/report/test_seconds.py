"""The exact per-second merge, against a brute-force merge of the raw latencies."""

from __future__ import annotations

import math
import random

import pytest

from bench.agent.stats import Recorder
from bench.report import seconds
from bench.wire import hist

EPOCH = 1_700_000_000.0


def _agent(rng: random.Random, agent_num: int, host: str, raw: dict[int, list[int]], offset: float = 0.0) -> dict:
    """One agent's result as the real Recorder makes it; every latency also lands in ``raw``
    under its controller-clock second (``offset``: how far this host's clock is ahead)."""
    rec = Recorder(open_loop=False)
    perf0, epoch0 = 50.0 + agent_num, EPOCH + offset + rng.random()  # each starts mid-second
    rec.begin(perf0, epoch0)
    done = perf0
    for _ in range(rng.randint(300, 900)):
        done += rng.expovariate(150.0)  # ~6 s of batches
        latency = rng.choice((rng.lognormvariate(-7.5, 0.6), rng.lognormvariate(-4.0, 1.2)))  # bimodal, long tail
        ok, failed = rng.randint(0, 8), rng.choice((0, 0, 0, 1))
        rec.record(done, done - latency, done - latency, ok, failed, [b"ERR"] if failed else None)
        us = int(((done) - (done - latency)) * 1e6)
        raw.setdefault(round(math.floor(done + (epoch0 - perf0)) - offset), []).extend([us] * ok)
    rec.finish()
    return {"agent_num": agent_num, "host": host, "started_at": rec.started_at, "ops": rec.ops,
            "errors": rec.errors, "timeseries": rec.series}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_second_is_the_exact_merge_of_every_agents_ops(seed):
    rng = random.Random(seed)
    raw: dict[int, list[int]] = {}
    offsets = {i: 3.2 for i in range(5) if i % 3 == 2} if seed % 2 else {}  # agents 2 ran on a host 3.2 s ahead
    results = [_agent(rng, i, f"h{i % 3}", raw, offsets.get(i, 0.0)) for i in range(5)]
    assert seconds.has_histograms(results)
    merged = seconds.merge("b", results, offsets)
    assert [p["at"] for p in merged] == sorted(raw)
    assert sum(p["ops"] for p in merged) == sum(r["ops"] for r in results)
    assert sum(p["errors"] for p in merged) == sum(r["errors"] for r in results)
    for point in merged:
        values = sorted(raw[point["at"]])
        assert point["ops"] == len(values) and point["exact"] is True
        brute = hist.new()
        for v in values:
            brute.record_value(v)
        want = hist.percentiles(brute, seconds.PERCENTILES)
        for p in seconds.PERCENTILES:
            assert point[hist.percentile_key(p)] == want[p], (point["at"], p)
            if values:  # and that is the true percentile of the raw values (HdrHistogram's rank), to 0.1%
                true = values[max(1, int(p / 100 * len(values) + 0.5)) - 1]
                assert abs(point[hist.percentile_key(p)] - true) <= max(1, true / 1000), (p, true)
        assert point["max"] == (brute.get_max_value() if values else 0)
    # t counts from the earliest agent's start, on the controller's clock
    start = min(r["started_at"] - offsets.get(r["agent_num"], 0.0) for r in results)
    assert merged[0]["t"] == pytest.approx(merged[0]["at"] - start, abs=1e-6) and -1 < merged[0]["t"] <= 0


def test_a_percentile_of_the_merge_is_not_an_average_of_percentiles():
    fast = {"agent_num": 0, "host": "a", "started_at": EPOCH, "timeseries": [_second(100, [100] * 99)]}
    slow = {"agent_num": 1, "host": "b", "started_at": EPOCH, "timeseries": [_second(100, [50_000])]}
    (point,) = seconds.merge("b", [fast, slow])
    assert point["ops"] == 100 and point["agents"] == 2
    assert point["p50"] == 100 and point["p99"] == 100 and point["max"] == hist.new().get_highest_equivalent_value(
        50_000)


def test_offsets_move_whole_seconds_and_bad_records_are_named():
    a = {"agent_num": 0, "host": "a", "started_at": EPOCH, "timeseries": [_second(0, [10])]}
    b = {"agent_num": 1, "host": "b", "started_at": EPOCH + 2, "timeseries": [_second(2, [10])]}
    (point,) = seconds.merge("x", [a, b], {1: 2.004})  # b's clock is 2 s ahead: the same second
    assert point["agents"] == 2 and point["t"] == pytest.approx(0, abs=0.01)
    assert len(seconds.merge("x", [a, b], {1: 0.004})) == 2
    with pytest.raises(seconds.SecondsError, match=r"benchmark 'x' agent 1: second 1700000002: undecodable"):
        seconds.merge("x", [a, {**b, "timeseries": [{"at": int(EPOCH) + 2, "ops": 1, "hist": "nope"}]}])
    with pytest.raises(seconds.SecondsError, match=r"agent 0: timeseries point .* no whole second 'at'"):
        seconds.merge("x", [{**a, "timeseries": [{"t": 0, "ops": 1}]}])
    assert not seconds.has_histograms([{"timeseries": [{"t": 0, "ops": 5, "p50": 1, "p99": 2}]}])


def _second(t: int, values: list[int]) -> dict:
    h = hist.new()
    for v in values:
        h.record_value(v)
    return {"t": t, "at": int(EPOCH) + t, "ops": len(values), "errors": 0, "hist": hist.encode(h)}


def _merged_second(at: int, values: list[int], late: int | None = None, errors: int = 0) -> seconds.Second:
    h = hist.new()
    for v in values:
        h.record_value(v)
    out = seconds.Second(at)
    record = {"ops": len(values), "errors": errors, "hist": hist.encode(h)}
    if late is not None:
        record["late"] = late
    out.add(record)
    return out


def test_a_window_merges_its_seconds_exactly_and_names_the_worst():
    rng = random.Random(7)
    per_second = {at: [int(rng.lognormvariate(7, 1)) + 1 for _ in range(rng.randint(50, 400))] for at in range(10)}
    per_second[6] = []  # a stall: nothing completed in it
    per_second[7] += [900_000] * 30  # ... the next second completes what it held
    merged = {at: _merged_second(at, values, late=at) for at, values in per_second.items() if values}
    w = seconds.window(0, 9, merged)
    every = hist.new()
    for values in per_second.values():
        for v in values:
            every.record_value(v)
    assert {k: w[k] for k in ("p50", "p90", "p99", "p99.9", "max")} == {
        "p50": every.get_value_at_percentile(50), "p90": every.get_value_at_percentile(90),
        "p99": every.get_value_at_percentile(99), "p99.9": every.get_value_at_percentile(99.9),
        "max": every.get_max_value()}
    assert w["ops"] == sum(len(v) for v in per_second.values()) and w["ops_per_s"] == w["ops"] / 10
    assert (w["first"], w["last"], w["seconds"], w["late"]) == (0, 9, 10, sum(range(10)) - 6)
    assert w["worst_at"] == 7 and w["worst_p99"] >= 800_000  # the stall shows, a second after it


def test_a_window_without_late_counts_or_ops_says_so():
    w = seconds.window(3, 4, {3: _merged_second(3, [100] * 10)})  # closed loop: no "late" in its records
    assert (w["late"], w["ops"], w["ops_per_s"], w["worst_at"]) == (None, 10, 5.0, 3)
    empty = seconds.window(5, 6, {})
    assert (empty["ops"], empty["worst_at"], empty["worst_p99"], empty["p99"]) == (0, None, None, 0)


def test_a_torn_late_count_is_refused():
    with pytest.raises(seconds.SecondsError, match="late -1 is not a count"):
        seconds.Second(5).add({"ops": 1, "errors": 0, "late": -1}, "agent 0")
