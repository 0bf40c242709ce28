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
    assert rec.series[0] == {"t": 0, "ops": 20, "errors": 2, "p50": 100000, "p99": 100000}
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
