"""Every run's headline figures, one row per run: ``inv runs --format csv``.

The shape change-point detectors read (Apache Otava, formerly Hunter: a time column, attribute
columns and metric columns, one row per run, oldest first)::

    time,run,name,status,<benchmark>.ops_per_s,<benchmark>.p50_ms,<benchmark>.p90_ms,
        <benchmark>.p99_ms,<benchmark>.p99.9_ms,<benchmark>.errors,<next benchmark>...

``time`` is the run's start in ISO 8601 UTC. The figures are bench.report.headline's (a repeated
benchmark's from all its repetitions together), latency in milliseconds. The layout is wide and
stable: each benchmark's columns appear where the benchmark first appears (runs oldest first),
so a new benchmark adds columns at the end and no column moves. A cell is empty where the run
has no such benchmark, was not collected, or the benchmark measured nothing; Otava reads every
cell of a metric column as a number, so point it at runs that share their benchmarks (one spawn
file's runs: the ``name`` column).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.report import headline

ATTRIBUTES = ("time", "run", "name", "status")
FIGURES = (*headline.FIGURES, headline.ERRORS)
_SUFFIXES = {"us": "_ms"}  # latency columns in ms; the others are named by their key alone


def column(benchmark: str, figure: headline.Figure) -> str:
    return f"{benchmark}.{figure.key}{_SUFFIXES.get(figure.unit, '')}"


def rows(runs: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Headers and one row per run. Each run: run_id, started_at (epoch seconds), name, status and
    ``benchmarks`` (run.json's merged entries; none for a run not collected)."""
    benchmarks: list[str] = []
    for run in runs:
        for entry in run.get("benchmarks") or ():
            if str(entry.get("name")) not in benchmarks:
                benchmarks.append(str(entry.get("name")))
    figures = {b: [f for f in FIGURES if f.applies(e for run in runs for e in run.get("benchmarks") or ()
                                                    if str(e.get("name")) == b)] for b in benchmarks}
    headers = [*ATTRIBUTES, *(column(b, f) for b in benchmarks for f in figures[b])]
    out = []
    for run in runs:
        entries = {str(e.get("name")): e for e in run.get("benchmarks") or ()}
        row: list[Any] = [_time(run.get("started_at")), run.get("run_id"), run.get("name"), run.get("status")]
        for name in benchmarks:
            entry = entries.get(name)
            for figure in figures[name]:
                value = figure.read(entry) if entry is not None else None
                row.append(None if value is None else _cell(figure, value))
        out.append(row)
    return headers, out


def render_csv(runs: Sequence[Mapping[str, Any]]) -> str:
    headers, table = rows(runs)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if v is None else v for v in row] for row in table])
    return out.getvalue().rstrip("\n")


def _time(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _cell(figure: headline.Figure, value: float) -> float | int:
    if figure.unit == "us":
        return headline.in_unit(figure, value, "ms")
    return int(value) if figure is headline.ERRORS else value
