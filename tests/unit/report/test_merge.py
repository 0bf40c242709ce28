"""bench.report.merge: the exact merge of agent results and the run.json schema."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.report import merge as result
from bench.report.merge import ResultError
from bench.wire import hist, labels
from bench.wire.result import RESULT_SCHEMA

META = {"run_id": "20261124-160000-ab12", "name": "bitmaps", "started_at": "2026-11-24T16:00:00Z",
        "finished_at": "2026-11-24T16:05:00Z", "spawn": {"name": "bitmaps"}, "deployment": {"pex": "abc"}}


def histogram_of(values: list[int]) -> Any:
    h = hist.new()
    for v in values:
        h.record_value(v)
    return h


def agent_result(name: str, num: int, agents: int, values: list[int], *, workload: str = "set",
                 elapsed: float = 10.0, errors: int = 0, host: str | None = None, run_id: str = "r1",
                 **extra: Any) -> dict[str, Any]:
    r = {"schema": RESULT_SCHEMA, "run_id": run_id, "benchmark": name, "workload": workload, "agent_num": num,
         "agents": agents, "host": host or f"tb{4 + num % 2}", "python": "3.11.2", "fleetbench": "0.1.0",
         "started_at": "2026-11-24T16:00:00Z", "elapsed_s": elapsed, "ops": len(values), "errors": errors,
         "error_samples": [], "histograms": {"latency_us": hist.encode(histogram_of(values))},
         "timeseries": [], "job": {"agent_num": num}}
    r.update(extra)
    return r


def counts(h: Any) -> list[int]:
    return list(h.counts)


def random_values(seed: int, n: int) -> list[int]:
    rs = random.Random(seed)
    return [int(rs.lognormvariate(6, 1.2)) + 1 for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Labels


def test_labels() -> None:
    assert labels.repetition_label("import", 2) == "import#2"
    assert labels.split_label("import#2") == ("import", 2)
    assert labels.split_label("import") == ("import", None)
    assert labels.split_label("a#0") == ("a#0", None)
    assert labels.split_label("#3") == ("#3", None)


# ---------------------------------------------------------------------------------------------
# merge_benchmark


def test_merge_is_exact_against_the_union_of_values() -> None:
    per_agent = [random_values(seed, 500 + 100 * seed) for seed in range(5)]
    results = [agent_result("set", i, 5, values) for i, values in enumerate(per_agent)]
    entry = result.merge_benchmark("set", results, [])
    union = histogram_of([v for values in per_agent for v in values])
    merged = hist.decode(entry["histogram"])
    assert counts(merged) == counts(union)
    assert entry["latency_us"] == hist.summary(union)
    assert entry["latency_us"]["count"] == sum(len(v) for v in per_agent)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=hist.HIGHEST), max_size=40), min_size=1, max_size=6))
def test_merge_equals_union_for_any_values(per_agent: list[list[int]]) -> None:
    results = [agent_result("b", i, len(per_agent), values) for i, values in enumerate(per_agent)]
    entry = result.merge_benchmark("b", results, [])
    union = histogram_of([v for values in per_agent for v in values])
    assert counts(hist.decode(entry["histogram"])) == counts(union)
    assert entry["latency_us"] == hist.summary(union)
    assert entry["ops"] == sum(map(len, per_agent))


def test_an_empty_agent_histogram_does_not_spoil_the_minimum() -> None:
    results = [agent_result("b", 0, 2, [500, 700]), agent_result("b", 1, 2, [])]
    entry = result.merge_benchmark("b", results, [])
    assert entry["latency_us"]["min"] == 500
    assert entry["latency_us"] == hist.summary(histogram_of([500, 700]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=0, max_size=300),
       st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=6))
def test_fast_percentiles_equal_hdrh(values: list[int], wanted: list[float]) -> None:
    h = hist.decode(hist.encode(histogram_of(values)))
    assert hist.percentiles(h, wanted) == {p: h.get_value_at_percentile(p) for p in wanted}
    fresh = histogram_of(values)  # not decoded: exact min/max rather than bucket bounds
    assert hist.percentiles(fresh, wanted) == {p: fresh.get_value_at_percentile(p) for p in wanted}


def test_totals_and_agent_rows() -> None:
    results = [
        agent_result("set", 1, 3, [100] * 30 + [900] * 10, elapsed=8.0, errors=2, late_ops=5,
                     error_samples=["MOVED 1 x", "timeout"]),
        agent_result("set", 0, 3, [200] * 50, elapsed=10.0, error_samples=["timeout"]),
        agent_result("set", 2, 3, [300] * 20, elapsed=4.0, errors=1),
    ]
    entry = result.merge_benchmark("set", results, [])
    assert list(entry) == ["name", "workload", "agents", "agents_ok", "ops", "errors", "late_ops", "seconds",
                           "ops_per_s", "started_at", "finished_at", "latency_us", "histogram", "timeseries",
                           "error_samples", "failures", "agent_results"]
    assert entry["started_at"] is None  # these agents give an ISO string, not epoch seconds
    assert (entry["name"], entry["workload"], entry["agents"], entry["agents_ok"]) == ("set", "set", 3, 3)
    assert (entry["ops"], entry["errors"], entry["late_ops"]) == (110, 3, 5)
    assert entry["seconds"] == 10.0 and entry["ops_per_s"] == 11.0
    assert entry["error_samples"] == ["timeout", "MOVED 1 x"]
    assert entry["failures"] == []
    assert entry["agent_results"] == [
        {"agent_num": 0, "host": "tb4", "status": "ok", "ops": 50, "errors": 0, "elapsed_s": 10.0,
         "ops_per_s": 5.0, "count": 50, "p50": 200, "p99": 200, "max": 200},
        {"agent_num": 1, "host": "tb5", "status": "ok", "ops": 40, "errors": 2, "elapsed_s": 8.0,
         "ops_per_s": 5.0, "count": 40, "p50": 100, "p99": 900, "max": 900},
        {"agent_num": 2, "host": "tb4", "status": "ok", "ops": 20, "errors": 1, "elapsed_s": 4.0,
         "ops_per_s": 5.0, "count": 20, "p50": 300, "p99": 300, "max": 300},
    ]
    json.dumps(entry)


def test_failures_and_partial_results() -> None:
    results = [agent_result("get", 0, 4, [100] * 10),
               agent_result("get", 2, 4, [300] * 10, fatal="ConnectionError: reset"),
               agent_result("get", 3, 4, [400] * 10, interrupted=True)]
    failures = [{"agent_num": 1, "host": "tb5", "error": "exit status 1", "stderr_tail": "Traceback ..."}]
    entry = result.merge_benchmark("get", results, failures)
    assert (entry["agents"], entry["agents_ok"], entry["ops"]) == (4, 1, 30)
    assert entry["failures"] == [
        {"agent_num": 1, "host": "tb5", "error": "exit status 1", "stderr_tail": "Traceback ..."},
        {"agent_num": 2, "host": "tb4", "error": "fatal: ConnectionError: reset", "stderr_tail": "", "partial": True},
        {"agent_num": 3, "host": "tb5", "error": "interrupted", "stderr_tail": "", "partial": True},
    ]
    assert entry["agents"] - entry["agents_ok"] == len(entry["failures"])
    assert [r["status"] for r in entry["agent_results"]] == ["ok", "fatal", "interrupted"]


def test_every_agent_failed() -> None:
    failures = [{"agent_num": n, "host": "tb4", "error": "no python3", "stderr_tail": ""} for n in (1, 0)]
    entry = result.merge_benchmark("set", [], failures, workload="set", agents=2)
    assert (entry["workload"], entry["agents"], entry["agents_ok"], entry["ops"]) == ("set", 2, 0, 0)
    assert (entry["seconds"], entry["ops_per_s"]) == (0.0, 0.0)
    assert entry["latency_us"]["count"] == 0
    assert [f["agent_num"] for f in entry["failures"]] == [0, 1]
    assert entry["agent_results"] == [] and entry["timeseries"] == []


def test_service_time_is_merged_when_reported() -> None:
    a = agent_result("s", 0, 2, [1000, 2000])
    b = agent_result("s", 1, 2, [3000])
    a["histograms"]["service_us"] = hist.encode(histogram_of([10, 20]))
    b["histograms"]["service_us"] = hist.encode(histogram_of([30]))
    entry = result.merge_benchmark("s", [a, b], [])
    assert entry["service_us"] == hist.summary(histogram_of([10, 20, 30]))
    assert counts(hist.decode(entry["service_histogram"])) == counts(histogram_of([10, 20, 30]))
    assert "service_us" not in result.merge_benchmark("s", [agent_result("s", 0, 1, [5])], [])


def point(t: int, ops: int, p50: int, p99: int, values: list[int] | None = None) -> dict[str, Any]:
    p = {"t": t, "ops": ops, "errors": 0, "p50": p50, "p99": p99}
    if values is not None:
        p["hist"] = hist.encode(histogram_of(values))
    return p


def test_timeseries_exact_when_every_point_carries_a_histogram() -> None:
    a0, b0, a1 = [100] * 90 + [5000] * 10, [300] * 50, [200] * 10
    results = [agent_result("t", 0, 2, a0 + a1, timeseries=[point(0, 100, 100, 5000, a0), point(1, 10, 200, 200, a1)]),
               agent_result("t", 1, 2, b0, timeseries=[point(0, 50, 300, 300, b0)])]
    series = result.merge_benchmark("t", results, [])["timeseries"]
    union = histogram_of(a0 + b0)
    assert series == [
        {"t": 0, "agents": 2, "ops": 150, "errors": 0, "p50": union.get_value_at_percentile(50),
         "p99": union.get_value_at_percentile(99), "exact": True},
        {"t": 1, "agents": 1, "ops": 10, "errors": 0, "p50": 200, "p99": 200, "exact": True},
    ]


def test_timeseries_approximate_without_histograms() -> None:
    results = [agent_result("t", 0, 3, [1], timeseries=[point(0, 100, 100, 900), point(1, 5, 1, 2)]),
               agent_result("t", 1, 3, [1], timeseries=[point(0, 10, 500, 700)]),
               agent_result("t", 2, 3, [1], timeseries=[point(0, 30, 300, 1200, [300] * 30)])]
    series = result.merge_benchmark("t", results, [])["timeseries"]
    assert series[0] == {"t": 0, "agents": 3, "ops": 140, "errors": 0, "p50": 100, "p99": 1200, "exact": False}
    assert series[1] == {"t": 1, "agents": 1, "ops": 5, "errors": 0, "p50": 1, "p99": 2, "exact": False}


@pytest.mark.parametrize("pairs, median", [
    ([(100, 100), (500, 10), (300, 30)], 100),
    ([(100, 10), (500, 100), (300, 30)], 500),
    ([(100, 1), (200, 1)], 100),
    ([(100, 0), (200, 0), (300, 0)], 200),
    ([], 0),
])
def test_weighted_median(pairs: list[tuple[int, int]], median: int) -> None:
    assert result._weighted_median(pairs) == median


@pytest.mark.parametrize("change, message", [
    (lambda rs, fs: rs[1].update(schema="fleetbench.agent-result/2"), "result schema 'fleetbench.agent-result/2'"),
    (lambda rs, fs: rs[1].update(benchmark="other"), "agent 1 on tb5: result is for benchmark 'other'"),
    (lambda rs, fs: rs[1].update(workload="get"), "agents disagree on workload: 'get', 'set'"),
    (lambda rs, fs: rs[1].update(run_id="r2"), "agents disagree on run_id"),
    (lambda rs, fs: rs[1].update(agents=3), "agents disagree on agents"),
    (lambda rs, fs: rs[1].update(agent_num=0), "agent_num 0 reported more than once"),
    (lambda rs, fs: fs.append({"agent_num": 1, "host": "tb5", "error": "x"}), "agent_num 1 reported more than once"),
    (lambda rs, fs: fs.append({"agent_num": 2, "error": "x"}), "3 agents reported but 2 were planned"),
    (lambda rs, fs: fs.append({"host": "tb5"}), "a failure lacks agent_num"),
    (lambda rs, fs: rs[1].update(agent_num="1"), "agent_num '1' is not a non-negative integer"),
    (lambda rs, fs: rs[1].pop("ops"), "agent 1 on tb5: result lacks ops"),
    (lambda rs, fs: rs[1].update(ops=-1), "agent 1 on tb5: ops -1 is not a count"),
    (lambda rs, fs: rs[1].update(elapsed_s="10"), "elapsed_s '10' is not a duration"),
    (lambda rs, fs: rs[1]["histograms"].update(latency_us="bm90IGEgaGlzdG9ncmFt"),
     "agent 1 on tb5: histograms.latency_us: not a valid encoded histogram"),
    (lambda rs, fs: rs[1]["histograms"].pop("latency_us"),
     "histograms.latency_us: expected an encoded histogram, got NoneType"),
    (lambda rs, fs: rs[1]["histograms"].update(latency_us=_foreign()),
     "histogram settings (lowest, highest, digits) (1, 60000000, 2) differ"),
    (lambda rs, fs: rs[1].update(timeseries=[{"ops": 1}]), "timeseries point {'ops': 1} has no numeric t"),
])
def test_incompatible_results_are_refused(change: Any, message: str) -> None:
    results = [agent_result("set", 0, 2, [10, 20]), agent_result("set", 1, 2, [30])]
    failures: list[dict[str, Any]] = []
    change(results, failures)
    with pytest.raises(ResultError) as caught:
        result.merge_benchmark("set", results, failures)
    assert message in str(caught.value)
    assert str(caught.value).startswith("benchmark 'set': ")


def _foreign() -> str:
    from hdrh.histogram import HdrHistogram
    h = HdrHistogram(1, 60_000_000, 2)
    h.record_value(5)
    return h.encode().decode("ascii")


def test_planned_agents_must_agree() -> None:
    with pytest.raises(ResultError, match="agents disagree on agents: 2, 5"):
        result.merge_benchmark("set", [agent_result("set", 0, 2, [1])], [], agents=5)
    with pytest.raises(ResultError, match="agents disagree on workload"):
        result.merge_benchmark("set", [agent_result("set", 0, 1, [1])], [], workload="get")


# ---------------------------------------------------------------------------------------------
# Repetitions and the run


def repeated(name: str, per_rep: list[list[list[int]]]) -> list[dict[str, Any]]:
    entries = []
    for k, per_agent in enumerate(per_rep, start=1):
        label = labels.repetition_label(name, k)
        results = [agent_result(label, i, len(per_agent), values, elapsed=2.0 * k)
                   for i, values in enumerate(per_agent)]
        entries.append(result.merge_benchmark(label, results, []))
    return entries


def test_merge_repeats() -> None:
    reps = [[[100] * 40, [200] * 40], [[300] * 10, [400] * 10], [[500] * 30, [600] * 30]]
    entries = repeated("mix", reps)
    folded = result.merge_repeats("mix", list(reversed(entries)))
    everything = [v for rep in reps for values in rep for v in values]
    assert folded["name"] == "mix" and folded["repeat"] == 3
    assert (folded["agents"], folded["agents_ok"], folded["ops"]) == (6, 6, 160)
    assert folded["seconds"] == 2.0 + 4.0 + 6.0
    assert folded["ops_per_s"] == round(160 / 12, 3)
    # repetitions: 80 ops in 2 s, 20 in 4 s, 60 in 6 s
    assert folded["ops_per_s_repeats"] == {"min": 5.0, "mean": 18.333, "max": 40.0, "stdev": 18.93}
    assert counts(hist.decode(folded["histogram"])) == counts(histogram_of(everything))
    assert folded["latency_us"] == hist.summary(histogram_of(everything))
    assert [e["name"] for e in folded["repeats"]] == ["mix#1", "mix#2", "mix#3"]
    assert [e["repetition"] for e in folded["repeats"]] == [1, 2, 3]
    assert [(r["repetition"], r["agent_num"]) for r in folded["agent_results"]] == [
        (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert "timeseries" not in folded and "timeseries" in folded["repeats"][0]
    with pytest.raises(ResultError, match="'other#1' is not a repetition of it"):
        result.merge_repeats("mix", repeated("other", reps[:1]))
    with pytest.raises(ResultError, match="repetition listed twice"):
        result.merge_repeats("mix", entries + entries[:1])


def test_build_run() -> None:
    plain = result.merge_benchmark("set", [agent_result("set", 0, 1, [10])], [])
    entries = [plain] + repeated("mix", [[[1]], [[2]]])
    run = result.build_run(META | {"controller": {"host": "laptop"}}, entries)
    assert list(run) == ["schema_version", "run_id", "name", "status", "started_at", "finished_at", "spawn",
                         "deployment", "controller", "benchmarks"]
    assert run["schema_version"] == result.SCHEMA_VERSION == 1
    assert run["status"] == "ok"
    assert run["controller"] == {"host": "laptop"}
    assert [b["name"] for b in run["benchmarks"]] == ["set", "mix"]
    assert run["benchmarks"][1]["repeat"] == 2
    assert result.load_run(json.loads(json.dumps(run))) == run


def test_repetitions_fold_in_the_place_of_the_first() -> None:
    a1, a2 = repeated("a", [[[1]], [[2]]])
    b = result.merge_benchmark("b", [agent_result("b", 0, 1, [3])], [])
    run = result.build_run(META, [a1, b, a2])
    assert [x["name"] for x in run["benchmarks"]] == ["a", "b"]
    with pytest.raises(ResultError, match="'b' appears twice"):
        result.build_run(META, [b, b])
    with pytest.raises(ResultError, match="'a' appears both with and without repetitions"):
        result.build_run(META, [a1, dict(b, name="a")])


def test_run_status() -> None:
    ok = {"agents": 2, "agents_ok": 2}
    some = {"agents": 2, "agents_ok": 1}
    none = {"agents": 2, "agents_ok": 0}
    assert result.run_status([ok, ok]) == "ok"
    assert result.run_status([ok, some]) == "partial"
    assert result.run_status([ok, none]) == "partial"
    assert result.run_status([none, none]) == "failed"
    assert result.run_status([]) == "failed"


def test_meta_status_can_only_make_it_worse() -> None:
    entry = result.merge_benchmark("set", [agent_result("set", 0, 1, [10])], [])
    assert result.build_run(META | {"status": "partial"}, [entry])["status"] == "partial"
    failed = result.merge_benchmark("set", [], [{"agent_num": 0, "host": "h", "error": "x"}], workload="set")
    assert result.build_run(META | {"status": "ok"}, [failed])["status"] == "failed"
    with pytest.raises(ResultError, match="run status 'done' is not one of ok, partial, failed"):
        result.build_run(META | {"status": "done"}, [entry])
    with pytest.raises(ResultError, match="run metadata lacks finished_at, deployment"):
        result.build_run({k: v for k, v in META.items() if k not in ("finished_at", "deployment")}, [entry])


def test_load_run_from_a_file_and_errors(tmp_path: Path) -> None:
    run = result.build_run(META, [result.merge_benchmark("set", [agent_result("set", 0, 1, [10])], [])])
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert result.load_run(path) == run
    assert result.load_run(str(path)) == run
    loaded = result.load_run(run)
    loaded["benchmarks"].clear()
    assert run["benchmarks"]  # the input is never mutated
    newer = dict(run, schema_version=2)
    with pytest.raises(ResultError, match=r"schema_version 2 is newer than this fleetbench understands \(1\)"):
        result.load_run(newer)
    for version in (None, 0, "1", True):
        with pytest.raises(ResultError, match="is not a fleetbench run schema version"):
            result.load_run(dict(run, schema_version=version))
    with pytest.raises(ResultError, match="benchmarks is missing"):
        result.load_run({"schema_version": 1})
    path.write_text("{")
    with pytest.raises(ResultError, match="run.json: not JSON"):
        result.load_run(path)
    with pytest.raises(ResultError, match="missing.json: cannot read"):
        result.load_run(tmp_path / "missing.json")
    path.write_text("[]")
    with pytest.raises(ResultError, match="expected a JSON object"):
        result.load_run(path)


def test_load_run_upgrades_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(result, "_UPGRADES", {
        1: lambda run: dict(run, added_in_2=True),
        2: lambda run: dict(run, added_in_3=run["added_in_2"]),
    })
    upgraded = result.load_run({"schema_version": 1, "benchmarks": []})
    assert upgraded == {"schema_version": 3, "benchmarks": [], "added_in_2": True, "added_in_3": True}


def test_late_ops_by_cause_are_summed_when_every_agent_says_them() -> None:
    told = [agent_result("set", n, 2, [100] * 10, late_ops=5, late_busy_ops=4, late_loop_ops=1) for n in (0, 1)]
    entry = result.merge_benchmark("set", told, [])
    assert (entry["late_ops"], entry["late_busy_ops"], entry["late_loop_ops"]) == (10, 8, 2)
    older = [told[0], agent_result("set", 1, 2, [100] * 10, late_ops=5)]  # an agent from before the split
    entry = result.merge_benchmark("set", older, [])
    assert entry["late_ops"] == 10 and "late_busy_ops" not in entry and "late_loop_ops" not in entry
    closed = result.merge_benchmark("set", [agent_result("set", 0, 1, [100])], [])
    assert "late_busy_ops" not in closed  # closed loop: nothing is ever late
    with pytest.raises(ResultError, match="late_busy_ops -1 is not a count"):
        result.merge_benchmark("set", [agent_result("set", 0, 1, [1], late_ops=0, late_busy_ops=-1,
                                                    late_loop_ops=0)], [])


def test_repetitions_fold_late_ops_by_cause() -> None:
    entries = [result.merge_benchmark(f"set#{k}", [agent_result(f"set#{k}", 0, 1, [100] * 10, late_ops=3,
                                                                late_busy_ops=k, late_loop_ops=3 - k)], [])
               for k in (1, 2)]
    folded = result.merge_repeats("set", entries)
    assert (folded["late_ops"], folded["late_busy_ops"], folded["late_loop_ops"]) == (6, 3, 3)
