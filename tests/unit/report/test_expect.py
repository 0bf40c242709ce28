"""The expectation language: parsing, refusing, checking; and compare's --fail-on."""

from __future__ import annotations

import pytest

from bench.report import expect
from bench.report.compare import Comparison
from bench.spawn import expectations

ENTRY = {"name": "set", "agents": 2, "agents_ok": 2, "ops": 99_000, "errors": 1_000, "ops_per_s": 49_500.0,
         "latency_us": {"count": 99_000, "min": 80, "mean": 812.6, "p50": 700, "p90": 1_500, "p99": 4_990,
                        "p99.9": 9_100, "max": 120_000}}


@pytest.mark.parametrize("text, metric, op, threshold, unit", [
    ("p99 < 5ms", "p99", "<", 5.0, "ms"),
    ("p99.9<=10ms", "p99.9", "<=", 10.0, "ms"),
    ("  mean >= 0.5 s ", "mean", ">=", 0.5, "s"),
    ("max != 120000us", "max", "!=", 120_000.0, "us"),
    ("ops/s > 100000", "ops/s", ">", 100_000.0, ""),
    ("errors == 0", "errors", "==", 0.0, ""),
    ("error% < 0.5%", "error%", "<", 0.5, ""),
    ("error% < 2", "error%", "<", 2.0, ""),
])
def test_parses_every_metric_operator_and_unit(text, metric, op, threshold, unit):
    e = expectations.parse(text)
    assert (e.text, e.metric, e.op, e.threshold, e.unit) == (text, metric, op, threshold, unit)


@pytest.mark.parametrize("text, why", [
    ("p99 < 5", r"'p99 < 5': a latency needs a unit, one of us, ms, s"),
    ("p99 < 5 minutes", r"a latency needs a unit"),
    ("p95 < 5ms", r"unknown metric 'p95'; one of p50, p90, p99, p99.9, max, mean, ops/s, errors, error%"),
    ("ops/s > 10k", r"ops/s takes a plain number, not 'k'"),
    ("errors == 0.5", r"errors is a whole number"),
    ("errors = 0", r"is not METRIC OP NUMBER\[UNIT\]"),
    ("p99 <", r"is not METRIC OP NUMBER"),
    ("p99 < -1ms", r"is not METRIC OP NUMBER"),
    ("", r"is not METRIC OP NUMBER"),
    (5, r"5 is not a string"),
])
def test_refuses_malformed_expectations_naming_them(text, why):
    with pytest.raises(expectations.ExpectError, match=why):
        expectations.parse(text)


def test_parse_all_names_the_index_of_the_bad_one():
    assert len(expectations.parse_all(["p99 < 5ms", "errors == 0"])) == 2
    with pytest.raises(expectations.ExpectError, match=r"^\[1\]: 'p99 < 5': "):
        expectations.parse_all(["errors == 0", "p99 < 5", "nope"])
    with pytest.raises(expectations.ExpectError, match="not a list"):
        expectations.parse_all("p99 < 5ms")


def test_check_gives_each_verdict_with_the_measured_value_in_its_own_unit():
    verdicts = expect.check(ENTRY, expectations.parse_all([
        "p99 < 5ms", "p99 < 4990us", "p99 <= 4990us", "p99.9 < 0.009s", "max > 100ms", "mean < 1ms",
        "ops/s > 100000", "ops/s >= 49500", "errors == 0", "errors < 1001", "error% < 1", "error% <= 1%"]))
    assert [(v.passed, v.measured_text) for v in verdicts] == [
        (True, "p99 = 4.99ms"), (False, "p99 = 4990us"), (True, "p99 = 4990us"), (False, "p99.9 = 0.0091s"),
        (True, "max = 120ms"), (True, "mean = 0.8126ms"), (False, "ops/s = 49,500"), (True, "ops/s = 49,500"),
        (False, "errors = 1000"), (True, "errors = 1000"), (False, "error% = 1%"), (True, "error% = 1%")]
    assert verdicts[0].to_dict() == {"expect": "p99 < 5ms", "passed": True, "measured": 4.99,
                                     "measured_text": "p99 = 4.99ms"}


def test_apply_keeps_the_verdicts_in_the_run_and_renders_them():
    run = {"benchmarks": [dict(ENTRY), {**ENTRY, "name": "other"}]}
    verdicts = expect.apply(run, {"set": expectations.parse_all(["p99 < 5ms", "ops/s > 100000"])})
    assert [v.passed for v in verdicts] == [True, False]
    assert [v["expect"] for v in run["benchmarks"][0]["expectations"]] == ["p99 < 5ms", "ops/s > 100000"]
    assert "expectations" not in run["benchmarks"][1]
    assert expect.failed(run) == [("set", run["benchmarks"][0]["expectations"][1])]
    table = expect.render(run)
    assert table.splitlines()[2].split() == ["set", "p99", "<", "5ms", "p99", "=", "4.99ms", "ok"]
    assert table.splitlines()[3].split()[-1] == "FAILED" and "ops/s = 49,500" in table
    assert expect.render({"benchmarks": [ENTRY]}) == ""


def test_a_benchmark_that_measured_nothing_fails_every_expectation():
    nothing = {"name": "dead", "agents": 2, "agents_ok": 0, "ops": 0, "errors": 0, "ops_per_s": 0.0,
               "latency_us": {"count": 0, "p99": 0, "max": 0}}
    verdicts = expect.check(nothing, expectations.parse_all(["p99 < 5ms", "errors == 0", "ops/s >= 0"]))
    assert [(v.passed, v.measured_text) for v in verdicts] == [(False, "not measured")] * 3


def _cmp(metric: str, change: float, verdict: str) -> Comparison:
    return Comparison("b", metric, (1.0,), (1.0,), 1.0, 1.0, change, 0.01, verdict)


def test_fail_on_catches_significant_throughput_drops_and_p99_rises_beyond_the_limit():
    comparisons = [_cmp("ops/s", -12.0, "worse"), _cmp("ops/s", -3.0, "worse"), _cmp("ops/s", -40.0, "unknown"),
                   _cmp("p99", 8.0, "worse"), _cmp("p99", 30.0, "same"), _cmp("p50", 50.0, "worse"),
                   _cmp("ops/s", 20.0, "better")]
    assert expect.regressions(comparisons, 5.0) == [comparisons[0], comparisons[3]]
    assert expect.regressions(comparisons, 10.0) == [comparisons[0]]
    assert expect.parse_percent("5%") == 5.0 and expect.parse_percent("2.5") == 2.5
    for bad in ("five", "-1%", "%"):
        with pytest.raises(expect.ExpectError, match="is not a percentage"):
            expect.parse_percent(bad)


def test_a_benchmark_some_of_whose_agents_failed_fails_every_expectation():
    """What it measured is not what was asked for (a lost host's agents are missing from it)."""
    half = {"name": "half", "agents": 2, "agents_ok": 1, "ops": 100, "errors": 0, "ops_per_s": 50.0,
            "latency_us": {"count": 100, "p99": 1000, "max": 1000}}
    verdicts = expect.check(half, expectations.parse_all(["errors == 0", "ops/s >= 10"]))
    assert [(v.passed, v.measured_text) for v in verdicts] == [(False, "errors = 0, but 1 of 2 agents failed"),
                                                               (False, "ops/s = 50, but 1 of 2 agents failed")]
    whole = {**half, "agents_ok": 2}
    assert [v.passed for v in expect.check(whole, expectations.parse_all(["errors == 0"]))] == [True]
