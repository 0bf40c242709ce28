"""Tables of a run (a run.json dict, see bench.result) for the terminal, Markdown, CSV or JSON.

Rows hold plain values (ints, floats rounded to their displayed precision, None when there is
nothing to show); only the text formats add thousands separators and fixed decimals.
Latencies are shown in milliseconds with three decimals (microsecond resolution, as recorded).
A benchmark run with ``repeat > 1`` gives its folded row (``name``) followed by one row per
repetition (``name#1`` ...).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from tabulate import tabulate

FORMATS = ("simple", "github", "csv", "json")

# (header, format spec for the text tables, alignment)
_BENCHMARK_COLUMNS = (
    ("benchmark", "", "left"), ("agents", "", "right"), ("ops", ",", "right"), ("errors", ",", "right"),
    ("seconds", ".2f", "right"), ("ops/s", ",.1f", "right"), ("p50 (ms)", ".3f", "right"),
    ("p90 (ms)", ".3f", "right"), ("p99 (ms)", ".3f", "right"), ("p99.9 (ms)", ".3f", "right"),
    ("max (ms)", ".3f", "right"),
)
_AGENT_COLUMNS = (
    ("benchmark", "", "left"), ("agent", "", "right"), ("host", "", "left"), ("status", "", "left"),
    ("ops", ",", "right"), ("errors", ",", "right"), ("seconds", ".2f", "right"), ("ops/s", ",.1f", "right"),
    ("p50 (ms)", ".3f", "right"), ("p99 (ms)", ".3f", "right"), ("max (ms)", ".3f", "right"),
)
BENCHMARK_HEADERS = tuple(c[0] for c in _BENCHMARK_COLUMNS)
AGENT_HEADERS = tuple(c[0] for c in _AGENT_COLUMNS)

Rows = list[list[Any]]


def benchmark_rows(run: Mapping[str, Any]) -> tuple[list[str], Rows]:
    """One row per benchmark (and per repetition of a repeated one)."""
    rows = [_benchmark_row(entry) for entry in _entries(run)]
    return list(BENCHMARK_HEADERS), rows


def agent_rows(run: Mapping[str, Any]) -> tuple[list[str], Rows]:
    """One row per agent: those with a result (status ok, fatal or interrupted), then failed ones."""
    rows: Rows = []
    for entry in run.get("benchmarks", ()):
        for part in entry.get("repeats") or (entry,):
            name = part["name"]
            for r in part.get("agent_results", ()):
                count = r.get("count", r["ops"])
                rows.append([name, r["agent_num"], r.get("host"), r.get("status", "ok"), r["ops"], r["errors"],
                             round(r["elapsed_s"], 2), round(r["ops_per_s"], 1), _ms(r["p50"], count),
                             _ms(r["p99"], count), _ms(r["max"], count)])
            for f in part.get("failures", ()):
                if not f.get("partial"):
                    rows.append([name, f["agent_num"], f.get("host"), "failed"] + [None] * 7)
    return list(AGENT_HEADERS), rows


def failure_lines(run: Mapping[str, Any]) -> list[str]:
    """``"<benchmark>: agent <n> on <host>: <error>"`` for every agent that failed or stopped early."""
    lines = []
    for entry in run.get("benchmarks", ()):
        for part in entry.get("repeats") or (entry,):
            for f in part.get("failures", ()):
                error = " ".join(str(f.get("error", "")).split())
                lines.append(f"{part['name']}: agent {f['agent_num']} on {f.get('host')}: {error}")
    return lines


def render(run: Mapping[str, Any], fmt: str = "simple", *, detail: bool = False) -> str:
    """The benchmark table (or with ``detail`` the agent table) of a run, without a final newline.

    ``simple`` and ``github`` are followed by the failure lines, if any; ``csv`` and ``json``
    hold only the rows (json: a list of objects keyed by the headers).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")
    headers, rows = agent_rows(run) if detail else benchmark_rows(run)
    if fmt == "json":
        return json.dumps([dict(zip(headers, row)) for row in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    columns = _AGENT_COLUMNS if detail else _BENCHMARK_COLUMNS
    text = tabulate(
        [[_format(value, spec) for value, (_, spec, _) in zip(row, columns)] for row in rows],
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=[align for _, _, align in columns],
    )
    failures = failure_lines(run)
    if failures:
        bullet = "- " if fmt == "github" else "  "
        text += "\n\nfailures:\n" + "\n".join(bullet + line for line in failures)
    return text


def _entries(run: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for entry in run.get("benchmarks", ()):
        yield entry
        yield from entry.get("repeats", ())


def _benchmark_row(entry: Mapping[str, Any]) -> list[Any]:
    agents, ok = entry["agents"], entry["agents_ok"]
    latency = entry.get("latency_us") or {}
    count = latency.get("count", 0)
    return [
        entry["name"],
        str(agents) if ok == agents else f"{ok}/{agents}",
        entry["ops"],
        entry["errors"],
        round(entry["seconds"], 2),
        round(entry["ops_per_s"], 1),
        *(_ms(latency.get(key, 0), count) for key in ("p50", "p90", "p99", "p99.9", "max")),
    ]


def _ms(microseconds: Any, count: int) -> float | None:
    return microseconds / 1000 if count else None


def _format(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if not spec:
        return str(value)
    return format(value, spec)
