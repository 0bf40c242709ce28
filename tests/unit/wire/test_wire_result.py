"""The result and the failure record: what the agent and the controller write is what the types say."""

from __future__ import annotations

import json

from bench.agent import result as agent_result
from bench.agent.stats import Recorder
from bench.report import merge
from bench.wire import hist
from bench.wire.job import AgentJob
from bench.wire.result import RESULT_SCHEMA, AgentRecord, AgentResult, Failure, Histograms, TimeseriesPoint
from fabfile.runs.follow import agent_record

JOB = AgentJob.from_dict({"run_id": "r", "benchmark": "b", "workload": "set", "agent_num": 1, "agents": 2,
                          "server_kind": "redis", "targets": ["127.0.0.1:1"], "duration_s": 1.0, "rate": 50.0})


def keys(typed: type) -> tuple[frozenset[str], frozenset[str]]:
    return typed.__required_keys__, typed.__optional_keys__  # type: ignore[attr-defined]


def recorded() -> Recorder:
    rec = Recorder(open_loop=True)
    rec.begin(100.0, 1_700_000_000.0)
    rec.record(100.2, 100.1, 100.1005, 3, 1, [b"ERR x"])
    rec.record(101.5, 101.0, 101.2, 2, 0, None)
    rec.finish()
    return rec


def test_the_agent_builds_exactly_an_agent_result():
    out = agent_result.build(JOB, recorded(), fatal="lost it", interrupted=True, event_loop="uvloop")
    required, optional = keys(AgentResult)
    assert required <= set(out) <= required | optional
    assert {"late_ops", "fatal", "interrupted"} <= set(out)
    assert out["schema"] == RESULT_SCHEMA and out["job"] == JOB.to_dict()
    assert set(out["histograms"]) == {"latency_us", "service_us"} == set().union(*keys(Histograms))
    point_required, point_optional = keys(TimeseriesPoint)
    assert out["timeseries"] and all(point_required <= set(p) <= point_required | point_optional
                                     for p in out["timeseries"])
    # The job inside parses back to the job (the result says what was run).
    assert AgentJob.from_dict(out["job"]) == JOB


def test_a_closed_loop_result_has_no_open_loop_keys():
    closed = AgentJob.from_dict({**JOB.to_dict(), "rate": None})
    out = agent_result.build(closed, Recorder(open_loop=False))
    required, _ = keys(AgentResult)
    assert set(out) == required
    assert set(out["histograms"]) == {"latency_us"}


def test_what_the_agent_prints_the_merge_reads(capsys):
    out = agent_result.build(JOB, recorded())
    assert agent_result.emit(out, None)
    line = capsys.readouterr().out
    assert line.endswith("\n") and line.count("\n") == 1
    assert line == json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n"
    entry = merge.merge_benchmark("b", [json.loads(line)], [{"agent_num": 0, "host": "h0", "error": "exit status 1",
                                                             "stderr_tail": "boom"}], agents=2)
    assert entry["ops"] == 5 and entry["errors"] == 1 and entry["agents_ok"] == 1
    assert entry["failures"] == [{"agent_num": 0, "host": "h0", "error": "exit status 1", "stderr_tail": "boom"}]
    assert hist.decode(entry["histogram"]).get_total_count() == 5


def test_the_controller_records_a_failure_the_merge_reads():
    agent = {"benchmark": "b", "agent_num": 1}
    result = agent_result.build(JOB, recorded())
    ok = agent_record("h1", {**agent, "state": "done", "exit_code": 0}, result, "")
    assert ok == {"benchmark": "b", "host": "h1", "result": result}
    lost = agent_record("h2", {**agent, "state": "running"}, None, "a\nb")
    record: AgentRecord = lost
    failure: Failure = record["failure"]
    required, optional = keys(Failure)
    assert set(failure) == required
    assert failure == {"agent_num": 1, "host": "h2", "error": "lost: the host run ended while it ran",
                       "stderr_tail": "a\nb"}
    assert record["result"] is None
    fatal = agent_record("h3", {**agent, "state": "failed", "exit_code": 1},
                         agent_result.build(JOB, recorded(), fatal="refused"), "")
    assert fatal["failure"]["error"] == "refused"
    entry = merge.merge_benchmark("b", [], [failure], workload="set", agents=2)
    assert entry["agents_ok"] == 0 and entry["failures"] == [failure]
    assert {k for f in entry["failures"] for k in f} <= required | optional
