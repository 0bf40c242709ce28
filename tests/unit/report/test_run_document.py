"""run.json stays what it was: a run merged and written before the typed run document
(bench.report.document) merges and loads to the same JSON, byte for byte, after it.

``tests/data/runs/run-v1.json`` was written by the merge as it was before the run document was
typed (``json.dumps(run, indent=1, sort_keys=True)``, as the run store writes run.json), from
the inputs :func:`inputs` builds. Never regenerate it to make this test pass: a difference is a
change of run.json's format, which needs a ``schema_version`` step (bench.report.merge).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import document, hosts
from bench.report import merge as result
from bench.wire import labels
from bench.wire.result import Failure
from tests.unit import runfactory as rf

FIXTURE = Path(__file__).parents[2] / "data" / "runs" / "run-v1.json"


def written(run: Any) -> str:
    """run.json's text as the run store writes it (fabfile.runs.store)."""
    return json.dumps(run, indent=1, sort_keys=True) + "\n"


def inputs() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every kind of agent result the merge knows, and the entries merged from them."""
    entries = []
    # today's agents: exact wall-clock seconds, service time, late ops by cause, a partial agent,
    # an agent without a result, a host whose clock is 2 s ahead
    results = [rf.agent_result("open", n, 4, rf.spread(100 + n, 40), per_second=True, service=rf.spread(50, 40),
                               late_ops=6, elapsed=3.0) for n in range(3)]
    for n, res in enumerate(results):
        res.update(late_busy_ops=4, late_loop_ops=2, error_samples=[f"MOVED {n}", "MOVED 0"], errors=n)
    results[2]["fatal"] = "ConnectionError: reset"
    failures = [{"agent_num": 3, "host": "a2", "error": "exit 1", "stderr_tail": "Traceback ..."}]
    entries.append(result.merge_benchmark("open", results, failures, clock_offsets={1: 2.0}))
    # older agents: seconds by t, one with a histogram per point, one interrupted
    old = [rf.agent_result("old", n, 2, rf.spread(300, 30), started_at=rf.T0 + 10 + n, late_ops=1)
           for n in range(2)]
    for point in old[0]["timeseries"]:
        point["hist"] = rf.encoded([point["p50"], point["p99"]])
    old[1]["interrupted"] = True
    entries.append(result.merge_benchmark("old", old, []))
    # the same seconds with a histogram each: exact by t
    exact = [rf.agent_result("exact-t", n, 2, rf.spread(200, 20)) for n in range(2)]
    for res in exact:
        for point in res["timeseries"]:
            point["hist"] = rf.encoded([point["p50"]] * max(1, point["ops"]))
    entries.append(result.merge_benchmark("exact-t", exact, []))
    # a repeated benchmark, its repetitions with and without service time and causes
    for k in (2, 1, 3):  # out of order: folded by k
        label = labels.repetition_label("rep", k)
        reps = [rf.agent_result(label, n, 3 if k == 3 else 2, rf.spread(100 * k, 20 + k), started_at=rf.T0 + 20 * k,
                                per_second=k != 2, late_ops=k, service=rf.spread(10, 5) if k == 3 else None)
                for n in range(2)]
        for res in reps:
            res.update(late_busy_ops=k, late_loop_ops=0, error_samples=[f"ERR {k}"])
        entries.append(result.merge_benchmark(label, reps, [] if k != 3 else [
            {"agent_num": 2, "host": None, "error": "", "stderr_tail": ""}], agents=3 if k == 3 else None))
    # every agent failed
    entries.append(result.merge_benchmark("down", [], [{"agent_num": 0, "host": "a1", "error": "no route",
                                                       "stderr_tail": ""}], workload="get", agents=1))
    meta = {"run_id": "r", "name": "every-kind", "started_at": rf.T0, "finished_at": rf.T0 + 100,
            "spawn": {"name": "every-kind", "benchmarks": 5}, "deployment": {"addresses": {"a1": {"ssh": "a1"}}},
            "status": "partial", "expectations": {"open": ["p99 < 5ms: ok"]},
            "hosts": {"a1": {"roles": ["agent"], "addresses": {"ssh": "a1"}}}}
    return meta, entries


def test_a_run_merges_to_the_json_it_did_before() -> None:
    meta, entries = inputs()
    assert written(result.build_run(meta, entries)) == FIXTURE.read_text(encoding="utf-8")


def test_a_run_written_before_loads_to_the_same_json() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    assert written(result.load_run(FIXTURE)) == text
    assert written(result.load_run(json.loads(text))) == text


def test_a_loaded_run_folds_again_to_itself() -> None:
    """The folded entry from the repetitions written in run.json is the one written beside them."""
    run = result.load_run(FIXTURE)
    folded = next(b for b in run["benchmarks"] if b["name"] == "rep")
    repeats = [{k: v for k, v in rep.items() if k != "repetition"} for rep in folded["repeats"]]
    assert written(result.merge_repeats("rep", repeats)) == written(folded)


def declared(kind: Any, data: Any, *, open_ended: bool = False) -> None:
    """``data`` has every required key of the TypedDict ``kind`` and (unless ``open_ended``) no other."""
    keys = set(data)
    assert kind.__required_keys__ <= keys, f"{kind.__name__} lacks {sorted(kind.__required_keys__ - keys)}"
    if not open_ended:
        unknown = keys - kind.__required_keys__ - kind.__optional_keys__
        assert not unknown, f"{kind.__name__} does not declare {sorted(unknown)}"


def test_the_typed_document_declares_every_key_run_json_holds() -> None:
    run = result.load_run(FIXTURE)
    declared(document.RunDoc, run, open_ended=True)  # meta.json's other keys ride along
    parts = [p for entry in run["benchmarks"] for p in (entry, *entry.get("repeats", ()))]
    assert len(parts) == 8 and any("repeats" in p for p in parts) and any("repetition" in p for p in parts)
    for part in parts:
        declared(document.BenchmarkEntry, part)
        for row in part["agent_results"]:
            declared(document.AgentRow, row)
        for failure in part["failures"]:
            declared(Failure, failure)
        for point in part.get("timeseries", ()):
            declared(document.MergedSecond, point)
        if "ops_per_s_repeats" in part:
            declared(document.RepeatSpread, part["ops_per_s_repeats"])
    assert {p["exact"] for part in parts for p in part.get("timeseries", ())} == {True, False}


def test_the_typed_document_declares_every_key_of_a_host() -> None:
    samples = {"a1": [rf.sample(rf.T0 + s) for s in range(5)]}
    section = hosts.host_section({"a1": ["agent"], "s1": ["server"]}, {"a1": {"cores": 2}, "s1": None}, samples,
                                 {"open": (rf.T0, rf.T0 + 3)}, {"a1": {"ssh": "a1", "private": "10.0.0.1",
                                                                       "learned_from": "route"}})
    assert set(section) == {"a1", "s1"} and "addresses" in section["a1"]
    for host in section.values():
        declared(document.HostEntry, host)
