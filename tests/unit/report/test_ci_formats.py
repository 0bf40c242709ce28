"""The exports CI and dashboards read, each checked by its format's own schema or parser:
github-action-benchmark's two JSON files and the Bencher Metric Format against JSON Schemas in
tests/data/schemas (BMF's as Bencher publishes it), InfluxDB line protocol read back by
line-protocol-parser, and golden files of each (tests/data/golden/exports; set
FLEETBENCH_UPDATE_GOLDEN=1 to rewrite them, then read the diff)."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path

import jsonschema
import line_protocol_parser
import pytest
from runfactory import agent_result, make_run, spread

from bench.report import benchaction, bencher, export, headline, influx
from bench.report import merge as result

DATA = Path(__file__).resolve().parents[2] / "data"
GOLDEN = DATA / "golden" / "exports"
UPDATE = os.environ.get("FLEETBENCH_UPDATE_GOLDEN") == "1"
RUN_ID = "20260921-141320-demo-6920"


def schema(name: str) -> jsonschema.Draft7Validator:
    doc = json.loads((DATA / "schemas" / name).read_text())
    jsonschema.Draft7Validator.check_schema(doc)
    return jsonschema.Draft7Validator(doc)


def demo_run() -> dict:
    """Two benchmarks, one repeated three times (its repetitions a little apart), and one whose
    only agent failed: what CI sees from a real spawn file (a copy: tests may change it)."""
    return copy.deepcopy(_demo_run())


@functools.cache
def _demo_run() -> dict:
    run = make_run(RUN_ID, [("set", spread(100, 400))], repeat=3, scale={"set": 1.1}, per_second=True)
    once = make_run(RUN_ID, [("get", spread(60, 500))], per_second=True)["benchmarks"]
    failed = result.merge_benchmark("cold", [], [{"agent_num": 0, "host": "a1", "error": "timed out"}],
                                    workload="get", agents=1)
    run["benchmarks"] += [*once, failed]
    return run


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


# ---------------------------------------------------------------------------------------------
# github-action-benchmark


def test_github_action_benchmark_files_match_the_action_input_schema():
    run = demo_run()
    validator = schema("github-action-benchmark.json")
    files = benchaction.files(run)
    for text in files.values():
        validator.validate(json.loads(text))
    bigger = json.loads(files["github-action-benchmark.bigger.json"])
    smaller = json.loads(files["github-action-benchmark.smaller.json"])
    assert [(b["name"], b["unit"]) for b in bigger] == [("set throughput", "ops/s"), ("get throughput", "ops/s")]
    assert [b["name"] for b in smaller] == [f"{n} {p}" for n in ("set", "get") for p in ("p50", "p90", "p99", "p99.9")]
    assert {b["unit"] for b in smaller} == {"ms"}
    for listed in (bigger, smaller):  # the action tells entries apart by name
        assert len({b["name"] for b in listed}) == len(listed)
    by_name = {e["name"]: e for e in run["benchmarks"]}
    assert bigger[0]["value"] == by_name["set"]["ops_per_s"]
    assert smaller[6]["value"] == by_name["get"]["latency_us"]["p99"] / 1000


def test_github_action_benchmark_range_is_read_back_as_the_action_does():
    run = demo_run()
    bigger = benchaction.entries(run, benchaction.BIGGER)
    rates = [r["ops_per_s"] for r in run["benchmarks"][0]["repeats"]]
    # github-action-benchmark's extractRangeInfo: an optional "±" or "+-", then a number
    match = re.match(r"(?P<prefix>(\+-|±)\s*)(?P<value>\d.+)", bigger[0]["range"])
    assert match and float(match["value"]) == pytest.approx((max(rates) - min(rates)) / 2, abs=1e-3)
    assert "range" not in bigger[1]  # get ran once
    folded = run["benchmarks"][0]
    assert bigger[0]["extra"].splitlines() == [f"run {RUN_ID}", f"6/6 agents, {folded['ops']} ops, 0 errors in 6.0 s",
                                               "3 repetitions"]
    with pytest.raises(ValueError, match="customSomething"):
        benchaction.entries(run, "customSomething")


def test_a_run_that_measured_nothing_gives_what_the_action_refuses():
    run = demo_run()
    run["benchmarks"] = run["benchmarks"][2:]  # only the failed one
    assert benchaction.entries(run, benchaction.BIGGER) == []
    assert not schema("github-action-benchmark.json").is_valid([])
    assert bencher.metrics(run) == {}


def test_a_new_bigger_is_better_figure_reaches_both_formats(monkeypatch):
    """The seam a capacity search's found rate takes: one Figure in headline.FIGURES."""
    found = headline.Figure("capacity", "ops/s", True, lambda entry: entry.get("found_rate"))
    monkeypatch.setattr(headline, "FIGURES", (*headline.FIGURES, found))
    run = demo_run()
    run["benchmarks"][1]["found_rate"] = 1234.5
    bigger = benchaction.entries(run, benchaction.BIGGER)
    assert {"name": "get capacity", "unit": "ops/s", "value": 1234.5} == {
        k: v for k, v in bigger[-1].items() if k != "extra"}
    assert all(b["name"] != "get capacity" for b in benchaction.entries(run, benchaction.SMALLER))
    assert bencher.metrics(run)["get"]["capacity"] == {"value": 1234.5}
    assert "capacity" not in bencher.metrics(run)["set"]


# ---------------------------------------------------------------------------------------------
# Bencher Metric Format


def test_bmf_matches_the_published_schema_with_bounds_from_repetitions():
    run = demo_run()
    doc = json.loads(bencher.render(run))
    validator = schema("bmf.json")
    validator.validate(doc)
    assert not validator.is_valid({"set": {"throughput": {"value": "fast"}}})  # the schema does check
    assert not validator.is_valid({"set": {"throughput": {"lower_value": 1.0}}})
    assert list(doc) == ["set", "get"]  # cold measured nothing
    assert list(doc["set"]) == ["throughput", "latency-p50", "latency-p90", "latency-p99", "latency-p99.9"]
    repeats = run["benchmarks"][0]["repeats"]
    throughput = doc["set"]["throughput"]
    assert throughput == {"value": run["benchmarks"][0]["ops_per_s"],
                          "lower_value": min(r["ops_per_s"] for r in repeats),
                          "upper_value": max(r["ops_per_s"] for r in repeats)}
    p99 = doc["set"]["latency-p99"]
    assert p99["value"] == run["benchmarks"][0]["latency_us"]["p99"] * 1000  # ns, Bencher's latency unit
    assert p99["lower_value"] == min(r["latency_us"]["p99"] for r in repeats) * 1000
    for measures in doc.values():
        for metric in measures.values():
            assert metric.get("lower_value", metric["value"]) <= metric["value"] <= metric.get("upper_value",
                                                                                             metric["value"])
    assert set(doc["get"]["throughput"]) == {"value"}  # once: no bounds
    assert all(len(m) <= 64 for measures in doc.values() for m in measures)  # Bencher's measure name limit


# ---------------------------------------------------------------------------------------------
# InfluxDB line protocol


def test_line_protocol_reads_back_every_second_with_its_tags_and_types():
    run = demo_run()
    text = influx.render(run)
    points = [line_protocol_parser.parse_line(line) for line in text.splitlines()]
    expected = [(name, part, point) for name, part in
                [(e["name"], p) for e in run["benchmarks"] for p in (e.get("repeats") or (e,))]
                for point in part["timeseries"]]
    assert len(points) == len(expected) > 0
    for parsed, (name, _, point) in zip(points, expected, strict=True):
        assert parsed["measurement"] == "fleetbench"
        assert parsed["tags"] == {"benchmark": name, "run": RUN_ID}
        assert parsed["time"] == point["at"] * 1_000_000_000
        fields = parsed["fields"]
        assert (fields["ops"], fields["errors"], fields["agents"]) == (point["ops"], point["errors"], point["agents"])
        assert all(isinstance(fields[k], int) for k in ("ops", "errors", "agents"))
        if point["ops"]:
            assert fields["p99_us"] == point["p99"] and fields["p99_9_us"] == point["p99.9"]
            assert all(isinstance(fields[k], float) for k in ("p50_us", "p99_us", "max_us", "mean_us"))
        else:
            assert "p50_us" not in fields
    assert {p["tags"]["benchmark"] for p in points} == {"set", "get"}  # cold has no seconds


@pytest.mark.parametrize("name, read_back", [
    ("plain", "plain"),
    ("with space, comma=equals", "with space, comma=equals"),
    ('quote " and ünïcode', 'quote " and ünïcode'),
    ("back\\slash", "back\\slash"),
    ("ends with \\", "ends with /"),           # the protocol has no escape for a backslash:
    ("before\\,comma", "before/,comma"),       # one that would swallow what follows becomes /
    ("line\nbreak", "line break"),
])
def test_tag_values_are_escaped_as_the_protocol_reads_them(name, read_back):
    entry = make_run("r", [("x", spread(100, 20))], per_second=True)["benchmarks"][0]
    run = {"run_id": "run one", "benchmarks": [{**entry, "name": name}]}
    parsed = line_protocol_parser.parse_line(influx.render(run).splitlines()[0])
    assert parsed["tags"] == {"benchmark": read_back, "run": "run one"}


def test_field_keys_and_measurement_are_escaped():
    line = f"{influx.escape_measurement('a b,c')},{influx.escape_key('k=1')}=v {influx.escape_key('f k,y=z')}=1i 5"
    assert line_protocol_parser.parse_line(line) == {"measurement": "a b,c", "tags": {"k=1": "v"},
                                                     "fields": {"f k,y=z": 1}, "time": 5}


def test_seconds_of_older_agents_are_placed_from_the_benchmark_start():
    old = result.merge_benchmark("old", [agent_result("old", 0, 1, spread(100, 30), started_at=1_790_000_000.25)], [])
    lines = influx.render({"run_id": "r", "benchmarks": [old]}).splitlines()
    times = [line_protocol_parser.parse_line(line)["time"] for line in lines]
    assert times == [1_790_000_000_250_000_000 + s * 1_000_000_000 for s in range(len(lines))]


# ---------------------------------------------------------------------------------------------
# Golden files, and the files `inv collect` writes


@pytest.mark.parametrize("name", ["github-action-benchmark.bigger.json", "github-action-benchmark.smaller.json",
                                  "bencher.json", "influx.lp"])
def test_golden(name):
    golden(name, export.exports(demo_run())[name])
