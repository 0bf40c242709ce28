"""bench.wire.search: judging a step, choosing the next rate, saying what was found.

A simulated fleet answers each rate with a step summary built the way the hosts build one
(agent results -> agent_summary -> combine), so the whole decision loop is exercised as the
coordinator runs it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hdrh.histogram import HdrHistogram

from bench.wire import hist, search
from bench.wire.search import (
    FOUND,
    GENERATOR,
    INCOMPLETE,
    LOWEST_FAILS,
    NOT_SATURATED,
    SERVER,
    SearchSpec,
    Slo,
    Verdict,
)

P99_5MS = Slo("p99 < 5ms", "p99", "<", 5000.0)
NO_ERRORS = Slo("errors == 0", "errors", "==", 0.0)


def spec(low: float = 1000, high: float = 400_000, precision: float = 0.05, agents: int = 2,
         slo: tuple[Slo, ...] = (P99_5MS, NO_ERRORS), max_steps: int = search.MAX_STEPS) -> SearchSpec:
    return SearchSpec("max-set", low, high, slo, 2.0, precision, agents, max_steps)


def agent_result(rate: float, duration: float, ops: int, latency_us: int, *, errors: int = 0, late: int = 0,
                 late_busy: int = 0, late_loop: int = 0, fatal: str | None = None) -> dict[str, object]:
    h = hist.recorder()
    if ops:
        h.record_value(latency_us, ops)
    result: dict[str, object] = {"ops": ops, "errors": errors, "late_ops": late, "late_busy_ops": late_busy,
                                 "late_loop_ops": late_loop, "elapsed_s": duration,
                                 "histograms": {"latency_us": hist.encode(h)},
                                 "job": {"rate": rate, "duration_s": duration}}
    if fatal:
        result["fatal"] = fatal
    return result


Fleet = Callable[[float], search.Measured]


def server(capacity: float, *, agents: int = 2, duration: float = 2.0, noise: float = 0.0,
           generator_max: float | None = None, seed: int = 7) -> Fleet:
    """A server that meets p99 < 5 ms up to ``capacity`` ops/s (1 ms), beyond it 50 ms; with
    ``noise`` its capacity wobbles by that share each step; agents that cannot send more than
    ``generator_max`` ops/s in all (their loops late)."""
    rng = random.Random(seed)

    def run(rate: float) -> search.Measured:
        cap = capacity * (1 + rng.uniform(-noise, noise))
        sent = rate if generator_max is None else min(rate, generator_max)
        late_loop = int(max(0.0, rate - sent) * duration / agents)
        parts = [search.agent_summary(agent_result(rate / agents, duration, int(sent * duration / agents),
                                                   1000 if rate <= cap else 50_000, late=late_loop,
                                                   late_loop=late_loop))
                 for _ in range(agents)]
        return search.measure(rate, search.combine(parts))

    return run


def run_search(s: SearchSpec, fleet: Fleet) -> tuple[list[Verdict], search.Outcome]:
    steps: list[Verdict] = []
    rate = search.next_rate(s, steps)
    while rate is not None:
        steps.append(search.judge(s, fleet(rate)))
        rate = search.next_rate(s, steps)
    return steps, search.outcome(s, steps)


# -- the loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1500.0, 37_000.0, 123_456.0, 399_000.0])
def test_a_monotone_slo_is_found_within_the_precision(capacity: float) -> None:
    s = spec()
    steps, found = run_search(s, server(capacity))
    assert found.status == FOUND
    assert found.last_pass is not None and found.first_fail is not None
    assert found.last_pass <= capacity < found.first_fail
    assert (found.first_fail - found.last_pass) / found.last_pass <= s.precision
    assert found.rate == found.last_pass
    rates = [v.rate for v in steps]
    assert rates[0] == s.low and len(set(rates)) == len(rates)  # never the same rate twice
    assert len(steps) <= search.planned_steps(s.low, s.high, s.precision)


def test_the_ramp_doubles_then_bisects() -> None:
    steps, _ = run_search(spec(low=1000, high=100_000, precision=0.1), server(5000))
    assert [v.rate for v in steps][:4] == [1000, 2000, 4000, 8000]
    assert [v.passed for v in steps][:4] == [True, True, True, False]
    assert steps[4].rate == 6000  # half way between the last pass and the first fail


def test_noisy_steps_still_end_with_a_consistent_interval() -> None:
    for seed in range(20):
        s = spec(precision=0.02)
        steps, found = run_search(s, server(50_000, noise=0.1, seed=seed))
        assert found.status == FOUND
        assert found.last_pass is not None and found.first_fail is not None
        assert found.last_pass < found.first_fail
        # every pass below the first fail, the interval within the precision, the found rate a pass
        assert any(v.passed and v.rate == found.rate for v in steps)
        assert min(v.rate for v in steps if not v.passed) == found.first_fail
        assert (found.first_fail - found.last_pass) / found.last_pass <= s.precision
        assert 50_000 * 0.9 <= found.last_pass and found.first_fail <= 50_000 * 1.1


def test_a_pass_above_a_failure_does_not_move_the_interval_up() -> None:
    s = spec(low=1000, high=64_000)
    steps = [Verdict(1000, True, "pass", "", 1000), Verdict(2000, False, SERVER, "p99", 2000),
             Verdict(8000, True, "pass", "", 8000)]  # a noisy history: a pass above the first fail
    assert search.next_rate(s, steps) == 1500
    assert search.outcome(s, steps).first_fail == 2000


def test_a_step_where_the_agents_could_not_reach_the_rate_blames_the_generator() -> None:
    s = spec()
    steps, found = run_search(s, server(1_000_000, generator_max=30_000))
    short = [v for v in steps if not v.passed]
    assert short and all(v.limit == GENERATOR for v in short)
    assert "load generator was the limit, not the server" in short[0].why
    assert found.status == FOUND and found.last_pass is not None
    assert found.last_pass <= 30_000 / search.ACHIEVED_SHARE
    assert "capacity is at least" in found.text


def test_the_lowest_rate_failing_says_so_and_where() -> None:
    steps, found = run_search(spec(low=1000), server(500))
    assert len(steps) == 1
    assert found.status == LOWEST_FAILS and found.rate is None
    assert "the lowest rate already fails" in found.text and "1,000 ops/s" in found.text and "p99" in found.text


def test_the_highest_rate_passing_says_the_server_was_not_saturated() -> None:
    steps, found = run_search(spec(low=1000, high=10_000), server(1_000_000))
    assert [v.rate for v in steps] == [1000, 2000, 4000, 8000, 10_000]
    assert found.status == NOT_SATURATED and found.rate == 10_000
    assert "not saturated" in found.text and "load generator reached 10,000 ops/s" in found.text


def test_an_incomplete_step_ends_the_search_and_says_why() -> None:
    s = spec(agents=3)
    summary = search.combine([search.agent_summary(agent_result(500, 2, 1000, 800)) for _ in range(2)])
    verdict = search.judge(s, search.measure(1000, summary))
    assert verdict.limit == INCOMPLETE and "1 of 3 agents did not report" in verdict.why
    steps = [Verdict(1000, True, "pass", "", 1000), verdict]
    assert search.next_rate(s, steps) is None
    assert "stopped at" in search.outcome(s, steps).text


def test_max_steps_bounds_the_search() -> None:
    s = spec(max_steps=3)
    steps, found = run_search(s, server(300_000))
    assert len(steps) == 3 and found.status != FOUND


# -- a step's verdict ---------------------------------------------------------------------------


def test_judge_names_the_broken_slo_with_its_value() -> None:
    s = spec(agents=1)
    m = search.measure(1000, search.combine([search.agent_summary(agent_result(1000, 2, 2000, 12_000, errors=3))]))
    v = search.judge(s, m)
    assert not v.passed and v.limit == SERVER
    assert "p99 12 ms (needs p99 < 5ms)" in v.why and "errors 3 (needs errors == 0)" in v.why


def test_late_ops_waiting_on_busy_connections_blame_the_server() -> None:
    s = spec(agents=1, slo=(Slo("p99 < 1s", "p99", "<", 1e6),))
    result = agent_result(1000, 2, 2000, 900, late=500, late_busy=500)
    v = search.judge(s, search.measure(1000, search.combine([search.agent_summary(result)])))
    assert not v.passed and v.limit == SERVER and "every connection busy" in v.why


def test_a_step_just_under_the_thresholds_passes() -> None:
    s = spec(agents=1)
    result = agent_result(1000, 2, 1981, 900, late=19, late_loop=19)  # 99.05% sent, 0.95% late
    assert search.judge(s, search.measure(1000, search.combine([search.agent_summary(result)]))).passed
    result = agent_result(1000, 2, 1979, 900)  # 98.95% sent
    assert not search.judge(s, search.measure(1000, search.combine([search.agent_summary(result)]))).passed


def test_combine_adds_histograms_exactly() -> None:
    rng = random.Random(3)
    reference = HdrHistogram(hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS)
    parts = []
    for _ in range(5):
        h = hist.recorder()
        for _ in range(400):
            value = int(rng.lognormvariate(7, 1.5)) + 1
            h.record_value(value)
            reference.record_value(value)
        parts.append({**search.empty_summary(), "agents": 1, "ops": 400, "hist": hist.encode(h)})
    combined = search.combine([search.combine(parts[:2]), search.combine(parts[2:])])  # hosts, then fleet
    assert combined["ops"] == 2000 and combined["agents"] == 5
    m = search.measure(100, combined)
    assert m.latency_us["p99"] == reference.get_value_at_percentile(99)
    assert m.latency_us["p50"] == reference.get_value_at_percentile(50)
    assert hist.decode(combined["hist"]).get_total_count() == 2000


def test_a_bad_summary_is_a_search_error() -> None:
    with pytest.raises(search.SearchError, match="ops"):
        search.combine([{**search.empty_summary(), "ops": -1}])
    with pytest.raises(search.SearchError, match="histogram"):
        search.combine([{**search.empty_summary(), "hist": "garbage"}])


def test_spec_round_trips_and_refuses_nonsense() -> None:
    s = spec()
    assert SearchSpec.from_dict(s.to_dict()) == s
    with pytest.raises(search.SearchError):
        SearchSpec.from_dict({**s.to_dict(), "low": 500_000})
    with pytest.raises(search.SearchError):
        SearchSpec.from_dict({**s.to_dict(), "slo": [{"text": "x", "metric": "p42", "op": "<", "threshold": 1}]})


def test_a_search_may_allow_more_late_ops():
    result = agent_result(1000, 2, 2000, 900, late=200, late_loop=200)  # 10% late
    m = search.measure(1000, search.combine([search.agent_summary(result)]))
    assert not search.judge(spec(agents=1), m).passed
    assert search.judge(SearchSpec("x", 1000, 2000, (P99_5MS,), 2.0, 0.05, 1, late_share=0.2), m).passed
