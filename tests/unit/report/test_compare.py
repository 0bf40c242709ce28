"""bench.report.compare: the Mann-Whitney p-values against known values, verdicts, and the tables."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import random

import pytest
from runfactory import make_run, spread

from bench.report import compare

BENCHES = [("set", spread(100, 100)), ("get", spread(60, 100))]
# Built once: merging histograms is the slow part.
A5 = make_run("a", BENCHES, repeat=5)
SAME5 = make_run("b", BENCHES, repeat=5)
SET_SLOWER5 = make_run("c", BENCHES, repeat=5, scale={"set": 1.5})
GET_SLOWER5 = make_run("d", BENCHES, repeat=5, scale={"get": 2.0})


# ----- the test itself -----


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 2 / 252),  # fully separated 5+5: the smallest p there is
    ([1, 2, 3], [4, 5, 6], 0.1),  # ... and for 3+3 it is 0.1: never significant
    ([1, 3, 5, 7, 9], [2, 4, 6, 8, 10], 0.6905),  # R's wilcox.test: p-value = 0.6905
    ([1.1, 2.2, 3.3, 4.4], [5.5, 6.6, 7.7, 8.8], 2 / 70),
    ([5, 5, 5], [5, 5, 5], 1.0),  # all equal
])
def test_exact_p_values(a, b, expected):
    assert compare.mann_whitney_p(a, b) == pytest.approx(expected, abs=5e-5)
    assert compare.mann_whitney_p(b, a) == pytest.approx(expected, abs=5e-5)  # two-sided: symmetric


def test_ties_are_counted_exactly_by_enumeration():
    a, b = [1, 2, 2, 3], [2, 3, 3, 4]
    # Brute force: every way of picking which 4 of the 8 pooled values are "a".
    import itertools
    pooled = a + b
    ranks = compare._mid_ranks(pooled)
    mean = 4 * sum(ranks) / 8
    observed = abs(sum(ranks[:4]) - mean)
    combos = list(itertools.combinations(range(8), 4))
    extreme = sum(1 for c in combos if abs(sum(ranks[i] for i in c) - mean) >= observed - 1e-9)
    assert compare.mann_whitney_p(a, b) == pytest.approx(extreme / len(combos))


def test_normal_approximation_agrees_with_exact_for_large_samples(monkeypatch):
    rng = random.Random(7)
    a = [round(rng.gauss(0, 1), 1) for _ in range(25)]
    b = [round(rng.gauss(0.6, 1), 1) for _ in range(25)]
    exact = compare.mann_whitney_p(a, b)
    monkeypatch.setattr(compare, "EXACT_MAX_SAMPLES", 10)
    approx = compare.mann_whitney_p(a, b)
    assert exact != approx and approx == pytest.approx(exact, rel=0.05)


def test_min_p():
    assert compare.min_p(3, 3) == pytest.approx(0.1)
    assert compare.min_p(4, 4) < compare.ALPHA < compare.min_p(3, 3)
    assert compare.min_p(1, 1) == 1.0


def test_mid_ranks():
    assert compare._mid_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]


# ----- comparing runs -----


def by_key(comparisons):
    return {(c.benchmark, c.metric): c for c in comparisons}


def test_same_spawn_twice_is_within_the_noise_and_a_slower_one_is_not():
    assert {c.verdict for c in compare.compare([A5], [SAME5])} == {"same"}
    got = by_key(compare.compare([A5], [SET_SLOWER5]))
    assert got["set", "ops/s"].verdict == "worse" and got["set", "ops/s"].p_value == pytest.approx(2 / 252, abs=1e-4)
    assert got["set", "ops/s"].change_pct == pytest.approx(-33.3, abs=1.5)
    assert got["set", "p50"].verdict == "worse" and got["set", "p50"].change_pct > 40
    assert got["get", "ops/s"].verdict == "same"


def test_faster_is_better_and_latency_direction_is_respected():
    got = by_key(compare.compare([GET_SLOWER5], [SAME5]))
    assert got["get", "ops/s"].verdict == "better" and got["get", "ops/s"].change_pct > 0
    assert got["get", "p99"].verdict == "better" and got["get", "p99"].change_pct < 0


def test_several_runs_per_side_are_pooled():
    a1, a2 = make_run("a1", BENCHES), make_run("a2", BENCHES, scale={"set": 1.01})
    b1, b2 = make_run("b1", BENCHES, scale={"set": 3}), make_run("b2", BENCHES, scale={"set": 3.1})
    c = by_key(compare.compare([a1, a2], [b1, b2]))["set", "ops/s"]
    assert (len(c.base), len(c.new)) == (2, 2)
    assert c.verdict == "unknown"  # 2+2 samples can never reach p < 0.05: said, not hidden as ~
    assert c.p_value == pytest.approx(1 / 3, abs=1e-4)


def test_single_runs_give_a_change_without_a_verdict():
    c = by_key(compare.compare([make_run("a", BENCHES)], [make_run("b", BENCHES, scale={"set": 2})]))["set", "ops/s"]
    assert c.verdict == "unknown" and c.p_value is None and c.change_pct == pytest.approx(-50, abs=2)


def test_a_benchmark_on_one_side_only_is_missing():
    got = by_key(compare.compare([make_run("a", BENCHES)], [make_run("b", BENCHES[:1])]))
    assert got["get", "ops/s"].verdict == "missing" and got["get", "ops/s"].new_median is None


def test_repetitions_without_any_result_are_not_samples():
    run = copy.deepcopy(A5)
    run["benchmarks"][0]["repeats"][2]["agents_ok"] = 0
    assert len(compare.samples([run])["set"]["ops/s"]) == 4


def test_no_runs_is_an_error():
    with pytest.raises(compare.CompareError):
        compare.compare([], [make_run("b", BENCHES)])


# ----- tables -----


def test_text_table_is_benchstat_like():
    text = compare.render(compare.compare([A5], [SET_SLOWER5]), "simple", ("a (spawn)", "b (spawn)"))
    lines = text.splitlines()
    assert lines[:2] == ["A: a (spawn)", "B: b (spawn)"]
    set_row = next(line for line in lines if line.startswith("set ") and "%" in line)
    assert "-34.00%" in set_row and "(p=0.008 n=5+5)" in set_row
    get_row = next(line for line in lines if line.startswith("get "))
    assert "~ (p=" in get_row
    assert "throughput (ops/s)" in text and "latency p50 (ms)" in text and "latency p99 (ms)" in text
    assert "Mann-Whitney" in text


def test_too_few_samples_are_marked_with_a_question_mark_and_advice():
    text = compare.render(compare.compare([make_run("a", BENCHES)], [make_run("b", BENCHES, scale={"set": 2})]))
    assert "? (n=1+1)" in text and "repeat = 5" in text


def test_csv_and_json_are_plain_numbers():
    comparisons = compare.compare([A5], [SAME5])
    rows = list(csv.DictReader(io.StringIO(compare.render(comparisons, "csv"))))
    assert len(rows) == 6 and rows[0]["benchmark"] == "set" and rows[0]["metric"] == "ops/s"
    assert float(rows[0]["base_median"]) > 0 and rows[0]["base_n"] == "5" and rows[0]["verdict"] == "same"
    data = json.loads(compare.render(comparisons, "json", ("x", "y")))
    assert data["base"] == "x" and data["alpha"] == compare.ALPHA
    assert len(data["comparisons"][0]["base"]) == 5 and not math.isnan(data["comparisons"][0]["p_value"])


def test_unknown_format():
    with pytest.raises(compare.CompareError):
        compare.render([], "html")
