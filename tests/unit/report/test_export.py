"""bench.report.export: HdrHistogram logs that hdrh's own reader reads back exactly, and CSV tables."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hdrh.log import HistogramLogReader
from runfactory import T0, agent_result, make_run, spread

from bench.report import export, tables
from bench.report import merge as result
from bench.wire import hist


def read_log(text: str, tmp_path: Path) -> tuple[HistogramLogReader, list]:
    path = tmp_path / "x.hlog"
    path.write_text(text)
    reader = HistogramLogReader(str(path), hist.new())
    intervals = []
    while (h := reader.get_next_interval_histogram()) is not None:
        intervals.append(h)
    return reader, intervals


def test_log_of_one_benchmark_reads_back_as_its_merged_histogram(tmp_path):
    run = make_run("r1", [("set", spread(100, 300))])
    entry = run["benchmarks"][0]
    text = export.hdr_log(entry, run_id="r1")
    assert text.startswith("#fleetbench run r1 benchmark set: latency in microseconds\n")
    assert "#[Histogram log format version 1.2]" in text and f"#[StartTime: {T0:.3f}" in text
    reader, (interval,) = read_log(text, tmp_path)
    assert reader.get_start_time_sec() == pytest.approx(T0)
    merged = hist.decode(entry["histogram"])
    assert interval.get_total_count() == merged.get_total_count() == entry["ops"]
    assert interval.get_value_at_percentile(99) == merged.get_value_at_percentile(99)
    assert interval.get_start_time_stamp() == pytest.approx(T0 * 1000)
    assert interval.get_end_time_stamp() == pytest.approx((T0 + entry["seconds"]) * 1000)
    line = next(line for line in text.splitlines() if line.startswith("0.000"))
    assert line.split(",")[2] == f"{merged.get_max_value():f}"  # interval max in microseconds


def test_repetitions_are_intervals_that_add_up_to_the_benchmark(tmp_path):
    run = make_run("r1", [("set", spread(100, 300))], repeat=3)
    entry = run["benchmarks"][0]
    _, intervals = read_log(export.hdr_log(entry), tmp_path)
    assert len(intervals) == 3
    assert [round(h.get_start_time_stamp() / 1000 - T0, 3) for h in intervals] == [0.0, 3.0, 6.0]
    assert sum(h.get_total_count() for h in intervals) == entry["ops"]


def test_exports_of_a_run(tmp_path):
    service = result.merge_benchmark("rate", [agent_result("rate", 0, 1, spread(300, 50), service=spread(100, 50),
                                                           late_ops=0)], [])
    run = make_run("r1", [("set", spread(100, 50))])
    run["benchmarks"].append(service)
    files = export.exports(run, file_stem=lambda name: name.upper())
    assert set(files) == {"SET.hlog", "RATE.hlog", "RATE.service.hlog", "benchmarks.csv", "agents.csv",
                          "github-action-benchmark.bigger.json", "github-action-benchmark.smaller.json",
                          "bencher.json", "influx.lp"}
    assert "service time in microseconds" in files["RATE.service.hlog"]
    _, (interval,) = read_log(files["RATE.service.hlog"], tmp_path)
    assert interval.get_value_at_percentile(50) == hist.decode(service["service_histogram"]).get_value_at_percentile(50)
    rows = list(csv.reader(io.StringIO(files["benchmarks.csv"])))
    assert rows[0][:2] == ["benchmark", "agents"] and [r[0] for r in rows[1:]] == ["set", "rate"]
    assert files["benchmarks.csv"] == tables.render(run, "csv") + "\n"
    run["hosts"] = {"h1": {"roles": ["agent"], "facts": None, "metrics": None, "benchmarks": {}}}
    assert export.exports(run)["hosts.csv"].startswith("host,role,samples,")
