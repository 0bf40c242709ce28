"""Exports other tools can read: HdrHistogram logs, CSV tables, and the formats CI and dashboards read.

:func:`exports` returns ``{file name: text}``; the controller writes them into
``runs/<run-id>/export/``:

* ``<benchmark>.hlog`` -- the benchmark's latency histogram as a standard HdrHistogram
  interval log (format 1.2, as written by ``hdrh.log.HistogramLogWriter`` and read by
  HistogramLogAnalyzer, ``hdrh.log.HistogramLogReader`` or Java's ``HistogramLogReader``).
  One interval per measured repetition (one for a benchmark without ``repeat``), stamped with
  its measured phase: adding the intervals gives the benchmark's merged histogram. Values, and
  the interval max column, are microseconds.
* ``<benchmark>.service.hlog`` -- the same for service time, for open-loop benchmarks.
* ``benchmarks.csv``, ``hosts.csv``, ``agents.csv`` -- the tables of ``bench.report.tables``.
* ``github-action-benchmark.bigger.json``, ``github-action-benchmark.smaller.json`` -- the
  custom JSON of github-action-benchmark, one file per direction (``bench.report.benchaction``).
* ``bencher.json`` -- the Bencher Metric Format (``bench.report.bencher``).
* ``influx.lp`` -- the per-second series as InfluxDB line protocol (``bench.report.influx``).

(``metrics.prom`` and ``junit.xml`` are written beside them by ``fabfile.runs.gates``.)
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Literal

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from bench.report import benchaction, bencher, influx, tables
from bench.report.document import BenchmarkEntry, RunDoc
from bench.wire import hist

MAX_UNIT_RATIO = 1.0  # the interval max column in the values' own unit (hdrh rounds it down)


def hdr_log(entry: BenchmarkEntry, key: Literal["histogram", "service_histogram"] = "histogram",
            run_id: str = "") -> str:
    """The HdrHistogram log of one merged benchmark entry (``key``: histogram | service_histogram)."""
    parts = [p for p in (entry.get("repeats") or (entry,)) if p.get(key)]
    starts = [float(start) for p in parts if isinstance(start := p.get("started_at"), (int, float))]
    base = min(starts) if starts else 0.0
    out = io.StringIO()
    writer = HistogramLogWriter(out)
    writer.output_comment(f"fleetbench run {run_id} benchmark {entry['name']}: "
                          f"{'service time' if key == 'service_histogram' else 'latency'} in microseconds")
    writer.output_log_format_version()
    # hdrh's output_start_time mis-formats its date; these are the lines Java's writer emits.
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(base))
    writer.output_comment(f"[StartTime: {base:.3f} (seconds since epoch), {stamp}]")
    writer.output_comment(f"[BaseTime: {base:.3f} (seconds since epoch)]")
    writer.output_legend()
    offset = 0.0
    for part in parts:
        histogram: HdrHistogram = hist.decode(part[key])
        started = part.get("started_at")
        start = float(started) - base if isinstance(started, (int, float)) else offset
        length = float(part.get("seconds") or 0.0)
        # The writer takes 0 as "unset" and falls back to the histogram's own stamps (ms).
        histogram.set_start_time_stamp((base + start) * 1000)
        histogram.set_end_time_stamp((base + start + length) * 1000)
        writer.base_time = base * 1000
        writer.output_interval_histogram(histogram, start, start + length, max_value_unit_ratio=MAX_UNIT_RATIO)
        offset = start + length
    return out.getvalue()


def exports(run: RunDoc, file_stem: Callable[[str], str] = lambda name: name) -> dict[str, str]:
    """Every export file of a run: ``{file name: text}``; ``file_stem`` makes a benchmark name
    safe as a file name (the controller passes the run store's)."""
    files: dict[str, str] = {}
    for entry in run.get("benchmarks", ()):
        name = file_stem(str(entry["name"]))
        if entry.get("histogram"):
            files[f"{name}.hlog"] = hdr_log(entry, "histogram", str(run.get("run_id", "")))
        if entry.get("service_histogram"):
            files[f"{name}.service.hlog"] = hdr_log(entry, "service_histogram", str(run.get("run_id", "")))
    files["benchmarks.csv"] = tables.render(run, "csv") + "\n"
    files["agents.csv"] = tables.render(run, "csv", detail=True) + "\n"
    if run.get("hosts"):
        files["hosts.csv"] = tables.render_hosts(run, "csv") + "\n"
    files.update(benchaction.files(run))
    files["bencher.json"] = bencher.render(run)
    files["influx.lp"] = influx.render(run)
    return files
