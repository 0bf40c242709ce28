"""Recording: per-batch counts into per-second series and mergeable HdrHistograms."""

from __future__ import annotations

from bench.agent.stats import Recorder, percentiles
from bench.wire import hist


def test_percentiles_are_exact_and_weighted():
    counts = {10: 50, 20: 49, 1000: 1}
    assert percentiles(counts, 100, [50, 99, 99.5, 100]) == [10, 20, 1000, 1000]
    assert percentiles({}, 0, [50]) == [0]
    assert percentiles({7: 1}, 1, [1, 50, 100]) == [7, 7, 7]


def test_closed_loop_recording_and_series():
    rec = Recorder(open_loop=False)
    rec.begin(100.0, 1_700_000_000.0)
    rec.record(100.2, 100.1, 100.1, ok=16, failed=0, messages=None)  # 100 ms for 16 ops
    rec.record(100.9, 100.899, 100.899, ok=4, failed=2, messages=[b"ERR a", b"ERR a"])
    rec.record(103.5, 103.4995, 103.4995, ok=1, failed=0, messages=None)  # seconds 1, 2 empty
    rec.finish()
    assert rec.ops == 21 and rec.errors == 2 and rec.error_samples == ["ERR a"]
    assert [s["t"] for s in rec.series] == [0, 1, 2, 3]
    first = dict(rec.series[0])
    assert hist.decode(first.pop("hist")).get_total_count() == 20
    assert first == {"t": 0, "at": 1_700_000_000, "ops": 20, "errors": 2, "p50": 100000, "p99": 100000}
    assert rec.series[1]["ops"] == 0 and rec.series[3]["ops"] == 1 and rec.series[3]["p50"] == 500
    h = hist.decode(rec.histograms()["latency_us"])
    assert h.get_total_count() == 21
    assert "service_us" not in rec.histograms()
    assert abs(rec.elapsed() - 3.5) < 1e-9 and rec.started_at == 1_700_000_000.0


def test_open_loop_separates_latency_from_service_time_and_counts_late_ops():
    rec = Recorder(open_loop=True)
    rec.begin(0.0, 0.0)
    rec.record(0.010, 0.0, 0.005, ok=2, failed=0, messages=None)  # sent 5 ms late
    rec.record(0.0205, 0.020, 0.0202, ok=1, failed=1, messages=[b"ERR x"])  # on time
    rec.finish()
    assert rec.late_ops == 2
    lat = hist.decode(rec.histograms()["latency_us"])
    svc = hist.decode(rec.histograms()["service_us"])
    assert lat.get_total_count() == svc.get_total_count() == 3
    assert lat.get_max_value() >= 9990 and svc.get_max_value() < 5100


def test_error_samples_are_distinct_and_capped():
    rec = Recorder(open_loop=False)
    rec.begin(0.0, 0.0)
    for i in range(10):
        rec.record(0.1, 0.0, 0.0, ok=0, failed=1, messages=[b"ERR %d" % (i % 7)])
    assert rec.error_samples == ["ERR 0", "ERR 1", "ERR 2", "ERR 3", "ERR 4"]
    assert rec.errors == 10 and rec.ops == 0


def test_no_measurement_gives_an_empty_but_valid_result():
    rec = Recorder(open_loop=False)
    rec.finish()
    assert rec.series == [] and rec.elapsed() == 0.0
    assert hist.decode(rec.histograms()["latency_us"]).get_total_count() == 0


def test_seconds_are_wall_clock_seconds_each_with_its_own_histogram():
    """The measured window starts mid-second: its seconds are the host's epoch seconds, so the
    same second of every agent can be added up; each closed second goes to on_second at once."""
    heard: list[dict] = []
    rec = Recorder(open_loop=False, on_second=heard.append)
    rec.begin(10.0, 1_700_000_000.75)  # perf 10.25 is epoch second ...001
    rec.record(10.1, 10.09, 10.09, ok=3, failed=0, messages=None)  # epoch ...000.85: 10 ms
    assert heard == []
    rec.record(10.3, 10.28, 10.28, ok=2, failed=0, messages=None)  # ...001.05: 20 ms
    assert [h["at"] for h in heard] == [1_700_000_000]
    rec.tick(12.4)  # ...003.15: seconds 001 and 002 close although nothing completed in 002
    assert [(h["at"], h["t"], h["ops"]) for h in heard] == [(1_700_000_000, 0, 3), (1_700_000_001, 1, 2),
                                                          (1_700_000_002, 2, 0)]
    assert "hist" not in heard[2]
    rec.record(12.5, 12.45, 12.45, ok=1, failed=1, messages=[b"ERR"])
    rec.finish()
    assert heard == rec.series and [h["at"] for h in heard][-1] == 1_700_000_003
    per_second = [hist.decode(h["hist"]) for h in rec.series if "hist" in h]
    assert [h.get_total_count() for h in per_second] == [3, 2, 1]
    assert abs(per_second[0].get_max_value() - 10_000) <= 10 and abs(per_second[1].get_max_value() - 20_000) <= 20
    assert hist.decode(rec.histograms()["latency_us"]).get_total_count() == 6 == rec.ops


def test_late_ops_are_split_by_cause_and_counted_per_second():
    rec = Recorder(open_loop=True)
    rec.begin(0.0, 1_700_000_000.0)
    rec.record(0.010, 0.0, 0.005, ok=2, failed=0, messages=None, waited=True)  # waited for a connection
    rec.record(0.020, 0.012, 0.018, ok=1, failed=1, messages=[b"ERR"])  # a connection was free; sent late
    rec.record(0.030, 0.025, 0.0252, ok=3, failed=0, messages=None, waited=True)  # waited, but on time
    rec.record(1.5, 1.0, 1.4, ok=4, failed=0, messages=None, waited=True)  # the next second
    rec.finish()
    assert (rec.late_ops, rec.late_busy_ops, rec.late_loop_ops) == (8, 6, 2)
    assert [(p["at"] - 1_700_000_000, p["late"]) for p in rec.series] == [(0, 4), (1, 4)]


def test_closed_loop_seconds_say_nothing_of_late_ops():
    rec = Recorder(open_loop=False)
    rec.begin(0.0, 0.0)
    rec.record(0.5, 0.0, 0.0, ok=1, failed=0, messages=None)
    rec.record(2.5, 2.0, 2.0, ok=1, failed=0, messages=None)  # second 1 is empty
    rec.finish()
    assert all("late" not in p for p in rec.series) and len(rec.series) == 3
