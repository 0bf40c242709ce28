"""bench.report.tables: the exact text of the tables, against golden files in tests/data/golden/.

Set FLEETBENCH_UPDATE_GOLDEN=1 to rewrite the golden files (then read the diff).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.report import merge as result
from bench.report import tables
from bench.wire import hist, labels
from bench.wire.result import RESULT_SCHEMA

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
UPDATE = os.environ.get("FLEETBENCH_UPDATE_GOLDEN") == "1"


def agent_result(name: str, num: int, agents: int, values: list[int], elapsed: float, **extra: Any) -> dict[str, Any]:
    h = hist.new()
    for v in values:
        h.record_value(v)
    r = {"schema": RESULT_SCHEMA, "run_id": "r1", "benchmark": name, "workload": extra.pop("workload", "set"),
         "agent_num": num, "agents": agents, "host": f"tb{4 + num % 2}", "python": "3.11.2",
         "fleetbench": "0.1.0", "started_at": "2026-11-24T16:00:00Z", "elapsed_s": elapsed, "ops": len(values),
         "errors": extra.pop("errors", 0), "error_samples": [], "histograms": {"latency_us": hist.encode(h)},
         "timeseries": [], "job": {}}
    r.update(extra)
    return r


def spread(base: int, n: int, step: int = 17) -> list[int]:
    """n deterministic latencies from base up to base * step."""
    return [base * (i % step + 1) for i in range(n)]


def sample_run() -> dict[str, Any]:
    entries = [
        result.merge_benchmark("import", [
            agent_result("import", i, 4, spread(40 + i, 25_000), 9.5 + i / 4, workload="setbit", errors=i)
            for i in range(4)], []),
        result.merge_benchmark("query", [
            agent_result("query", 0, 4, spread(900, 3000), 30.0, workload="bitop"),
            agent_result("query", 1, 4, spread(1100, 2500), 30.0, workload="bitop"),
            agent_result("query", 3, 4, spread(1000, 1200), 14.2, workload="bitop", fatal="ConnectionError: reset"),
        ], [{"agent_num": 2, "host": "tb4", "error": "exit status 1:\n  ModuleNotFoundError: redis",
             "stderr_tail": "Traceback ..."}]),
    ]
    for k in (1, 2):
        label = labels.repetition_label("writes", k)
        entries.append(result.merge_benchmark(label, [
            agent_result(label, i, 2, spread(150 * k + 7 * i, 40_000 + 5000 * k), 10.0) for i in range(2)], []))
    entries.append(result.merge_benchmark("cold", [], [
        {"agent_num": 0, "host": "tb4", "error": "timed out after 30s waiting for a result", "stderr_tail": ""}],
        workload="get", agents=1))
    meta = {"run_id": "r1", "name": "sample", "started_at": "2026-11-24T16:00:00Z",
            "finished_at": "2026-11-24T16:05:00Z", "spawn": {}, "deployment": {}}
    return result.build_run(meta, entries)


RUN = sample_run()


@pytest.mark.parametrize("fmt, detail, golden", [
    ("simple", False, "benchmarks.simple.txt"),
    ("github", False, "benchmarks.github.txt"),
    ("simple", True, "agents.simple.txt"),
    ("github", True, "agents.github.txt"),
])
def test_golden_text(fmt: str, detail: bool, golden: str) -> None:
    text = tables.render(RUN, fmt, detail=detail)
    path = GOLDEN / golden
    if UPDATE:
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text()


def test_benchmark_rows_hold_plain_values() -> None:
    headers, rows = tables.benchmark_rows(RUN)
    assert headers == ["benchmark", "agents", "ops", "errors", "seconds", "ops/s", "p50 (ms)", "p90 (ms)",
                       "p99 (ms)", "p99.9 (ms)", "max (ms)"]
    assert [row[0] for row in rows] == ["import", "query", "writes", "writes#1", "writes#2", "cold"]
    assert [row[1] for row in rows] == ["4", "2/4", "4", "2", "2", "0/1"]
    query = next(b for b in RUN["benchmarks"] if b["name"] == "query")
    assert rows[1][2:6] == [query["ops"], 0, round(query["seconds"], 2), round(query["ops_per_s"], 1)]
    assert rows[1][6:] == [query["latency_us"][k] / 1000 for k in ("p50", "p90", "p99", "p99.9", "max")]
    assert rows[5][6:] == [None] * 5


def test_csv_and_json_carry_the_rows() -> None:
    headers, rows = tables.benchmark_rows(RUN)
    parsed = list(csv.reader(io.StringIO(tables.render(RUN, "csv"))))
    assert parsed[0] == headers
    assert parsed[1:] == [["" if v is None else str(v) for v in row] for row in rows]
    assert not tables.render(RUN, "csv").endswith("\n")
    assert json.loads(tables.render(RUN, "json")) == [dict(zip(headers, row, strict=False)) for row in rows]
    agent_headers, agent_rows = tables.agent_rows(RUN)
    assert json.loads(tables.render(RUN, "json", detail=True)) == [dict(zip(agent_headers, r, strict=False))
                                                                     for r in agent_rows]


def test_agent_rows() -> None:
    headers, rows = tables.agent_rows(RUN)
    assert headers[:4] == ["benchmark", "agent", "host", "status"]
    assert [(r[0], r[1], r[3]) for r in rows if r[0] in ("query", "cold")] == [
        ("query", 0, "ok"), ("query", 1, "ok"), ("query", 3, "fatal"), ("query", 2, "failed"), ("cold", 0, "failed")]
    assert [r[0] for r in rows].count("writes#2") == 2


def test_failure_lines() -> None:
    assert tables.failure_lines(RUN) == [
        "query: agent 2 on tb4: exit status 1: ModuleNotFoundError: redis",
        "query: agent 3 on tb5: fatal: ConnectionError: reset",
        "cold: agent 0 on tb4: timed out after 30s waiting for a result",
    ]


def test_no_failure_section_when_all_went_well() -> None:
    run = dict(RUN, benchmarks=RUN["benchmarks"][:1])
    assert "failures" not in tables.render(run)
    assert tables.render(run).count("\n") == 2


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown table format 'html'; one of simple, github, csv, json"):
        tables.render(RUN, "html")
