"""bench.report.search: a capacity search's steps folded into one entry of run.json, its table,
``expect = ["rate >= N"]`` on what it found, and its figure in the exports."""

from __future__ import annotations

import json

from runfactory import make_run, search_steps

from bench.report import document, expect, headline, tables
from bench.report import merge as result
from bench.report import search as search_report
from bench.spawn.expectations import parse
from bench.wire import search
from bench.wire.result import Failure
from bench.wire.search import SearchSpec, Slo
from tests.unit.report.test_run_document import declared

SPEC = SearchSpec("cap", 1000, 16_000, (Slo("p99 < 5ms", "p99", "<", 5000.0),), 2.0, 0.1, 2)
# capacity 5,000 ops/s: 1 ms up to it, 40 ms beyond
STEPS = [(1000, 1000), (2000, 1000), (4000, 1000), (8000, 40_000), (6000, 40_000), (5000, 1000), (5500, 40_000)]


def rates(entries):
    return {e["name"]: rate for e, (rate, _) in zip(entries, STEPS, strict=True)}


def folded_run():
    plain = make_run("r", [("plain", [500] * 10)])["benchmarks"][0]
    steps = search_steps("cap", STEPS)
    entries = search_report.fold([plain, *steps], {"cap": SPEC}, rates(steps))
    meta = {"run_id": "r", "name": "s", "started_at": 0, "finished_at": 1, "spawn": {}, "deployment": {}}
    return result.build_run(meta, entries)


def test_the_steps_fold_into_one_entry_with_every_step_as_a_row():
    run = folded_run()
    assert [e["name"] for e in run["benchmarks"]] == ["plain", "cap"]
    cap = run["benchmarks"][1]
    found = cap["search"]
    assert found["found"] == 5000 and found["last_pass"] == 5000 and found["first_fail"] == 5500
    assert found["status"] == search.FOUND and found["range"] == [1000, 16_000]
    assert [r["rate"] for r in found["rows"]] == [r for r, _ in STEPS]
    assert [r["passed"] for r in found["rows"]] == [True, True, True, False, False, True, False]
    row = found["rows"][3]
    assert row["achieved"] == 8000 and row["p99_us"] >= 40_000 and row["late_ops"] == 0
    assert row["intended_ops"] == row["sent_ops"] == 16_000 and row["sent_pct"] == 100
    assert row["limit"] == "server" and "p99 40 ms (needs p99 < 5ms)" in row["why"]
    # the entry's figures are the found step's; every step's agents count
    assert cap["ops"] == 5000 * 2 and cap["ops_per_s"] == 5000
    assert cap["agents"] == cap["agents_ok"] == 2 * len(STEPS)
    assert [s["step"] for s in cap["steps"]] == list(range(1, len(STEPS) + 1))
    assert run["status"] == "ok"
    assert json.loads(json.dumps(run)) == run  # run.json carries it as it is


def test_the_replayed_verdicts_are_the_coordinators():
    """What the hosts decided (bench.wire.search over the agents' summaries) is what the report says."""
    steps = search_steps("cap", STEPS)
    decided = []
    for rate, latency in STEPS:
        parts = [search.agent_summary({"ops": int(rate), "errors": 0, "late_ops": 0, "elapsed_s": 2.0,
                                       "histograms": {"latency_us": _encoded([latency] * int(rate))},
                                       "job": {"rate": rate / 2, "duration_s": 2.0}}) for _ in range(2)]
        decided.append(search.judge(SPEC, search.measure(rate, search.combine(parts))))
    rows = search_report.fold(steps, {"cap": SPEC}, rates(steps))[0]["search"]["rows"]
    assert [(r["passed"], r["limit"], r["why"]) for r in rows] == [(v.passed, v.limit, v.why) for v in decided]


def _encoded(values):
    from bench.wire import hist

    h = hist.recorder()
    for v in values:
        h.record_value(v)
    return hist.encode(h)


def test_the_table_shows_each_step_and_what_was_found():
    text = tables.report(folded_run())
    assert "capacity search cap (SLO p99 < 5ms): 5,000 ops/s meets the SLO; 5,500 does not" in text
    lines = [line for line in text.splitlines() if line.strip().startswith(("4 ", "6 "))]
    assert lines[0].split()[:4] == ["4", "8,000", "100.0", "8,000"] and "FAIL (server)" in lines[0]
    assert lines[1].split()[:2] == ["6", "5,000"] and "pass" in lines[1]
    data = json.loads(tables.report(folded_run(), "json"))
    (title,) = [k for k in data if k.startswith("capacity search cap")]
    assert [r["rate"] for r in data[title]] == [r for r, _ in STEPS]


def test_expect_judges_the_found_rate():
    cap = folded_run()["benchmarks"][1]
    (ok,) = expect.check(cap, [parse("rate >= 4000")])
    (low,) = expect.check(cap, [parse("rate >= 100000")])
    assert ok.passed and ok.measured == 5000 and ok.measured_text == "found rate = 5,000 ops/s"
    assert not low.passed


def test_a_search_whose_lowest_rate_fails_found_nothing_and_says_where():
    steps = search_steps("cap", [(1000, 40_000)])
    cap = search_report.fold(steps, {"cap": SPEC}, {steps[0]["name"]: 1000})[0]
    assert cap["search"]["found"] is None and cap["search"]["status"] == search.LOWEST_FAILS
    assert "the lowest rate already fails: at 1,000 ops/s" in cap["search"]["text"]
    (verdict,) = expect.check(cap, [parse("rate >= 1")])
    assert not verdict.passed and verdict.measured is None
    assert headline.CAPACITY.read(cap) is None


def test_a_search_whose_highest_rate_passes_says_the_server_was_not_saturated():
    spec = SearchSpec("cap", 1000, 2000, SPEC.slo, 2.0, 0.1, 2)
    steps = search_steps("cap", [(1000, 900), (2000, 900)])
    cap = search_report.fold(steps, {"cap": spec}, {s["name"]: r for s, r in zip(steps, (1000, 2000), strict=True)})[0]
    assert cap["search"]["status"] == search.NOT_SATURATED and cap["search"]["found"] == 2000
    assert "server was not saturated; the load generator reached 2,000 ops/s" in cap["search"]["text"]


def test_the_found_rate_is_a_headline_figure():
    run = folded_run()
    assert headline.CAPACITY in headline.FIGURES and headline.CAPACITY.bigger_is_better
    assert headline.CAPACITY.read(run["benchmarks"][1]) == 5000
    assert headline.CAPACITY.read(run["benchmarks"][0]) is None


def test_the_capacity_picture_is_drawn_and_shown_in_the_html_report(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    from bench.report import html, plots

    run = folded_run()
    written = plots.write_all(run, {}, tmp_path)
    picture = tmp_path / "capacity-cap.png"
    assert picture in written and picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not (tmp_path / "capacity-plain.png").exists()  # no search, no picture
    assert plots._slo_ms("p99 < 5ms") == 5.0 and plots._slo_ms("errors == 0") is None
    page = html.page(run, {p.name: p.read_bytes() for p in written})
    assert 'alt="capacity search of cap"' in page and "5,000 ops/s meets the SLO" in page
    assert "<h2>Capacity search cap" in page  # its steps' table


def test_the_typed_document_declares_every_key_of_a_search() -> None:
    cap = next(e for e in folded_run()["benchmarks"] if e["name"] == "cap")
    declared(document.BenchmarkEntry, cap)
    declared(document.SearchSection, cap["search"])
    for row in cap["search"]["rows"]:
        declared(document.SearchRow, row)
    for step in cap["steps"]:
        declared(document.BenchmarkEntry, step)
    for agent in cap["agent_results"]:
        declared(document.AgentRow, agent)
    for failure in cap["failures"]:
        declared(Failure, failure)
