"""bench.spawn.plan: phases, agent jobs and their hosts."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bench.spawn import plan, spec
from bench.wire.job import AgentJob

GOOD = Path(__file__).resolve().parents[2] / "data" / "spawn" / "good"
TARGETS = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]


def spawn_of(*benchmarks: dict[str, Any]) -> spec.Spawn:
    return spec.parse({"hosts": {"servers": ["a", "b", "c"], "agents": ["x", "y"]}, "benchmark": list(benchmarks)})


def bench(name: str, **extra: Any) -> dict[str, Any]:
    """A benchmark table; pass iterations=None to leave iterations out."""
    table = {"name": name, "workload": "set", "iterations": 100} | extra
    return {k: v for k, v in table.items() if v is not None}


def names(phases: list[list[spec.Benchmark]]) -> list[list[str]]:
    return [[b.name for b in phase] for phase in phases]


def test_phases_in_file_order() -> None:
    assert names(plan.phases(spawn_of(bench("a"), bench("b"), bench("c")))) == [["a"], ["b"], ["c"]]


def test_parallel_tag_forms_one_phase_where_its_first_member_appears() -> None:
    s = spawn_of(bench("a"), bench("b", parallel="p"), bench("c"), bench("d", parallel="p"),
                 bench("e", parallel="q"), bench("f", parallel="q"))
    assert names(plan.phases(s)) == [["a"], ["b", "d"], ["c"], ["e", "f"]]


def test_repeats_are_labelled_and_run_in_a_row() -> None:
    s = spawn_of(bench("a", repeat=3), bench("b"))
    phases = plan.phases(s)
    assert names(phases) == [["a#1"], ["a#2"], ["a#3"], ["b"]]
    assert phases[1][0] == dataclasses.replace(s.benchmarks[0], name="a#2")


def test_a_parallel_group_repeats_together() -> None:
    s = spec.load(GOOD / "replicas.toml")
    assert names(plan.phases(s)) == [["writes#1", "reads#1"], ["writes#2", "reads#2"], ["prefill"]]


def test_agent_jobs_split_iterations_and_rate() -> None:
    s = spawn_of(bench("a", agents=3, iterations=10, rate=1000, connections=4, pipeline=8, warmup="1s",
                       params={"keyspace": 50}))
    b = s.benchmarks[0]
    jobs = plan.agent_jobs(s, b, "run-1", TARGETS)
    assert [j.iterations for j in jobs] == [4, 3, 3]
    assert sum(j.iterations for j in jobs) == 10
    assert [j.rate for j in jobs] == pytest.approx([1000 / 3] * 3)
    assert [j.agent_num for j in jobs] == [0, 1, 2]
    assert jobs[1] == AgentJob(
        run_id="run-1", benchmark="a", workload="set", agent_num=1, agents=3, server_kind="redis-cluster",
        targets=TARGETS, iterations=3, duration_s=None, warmup_s=1.0, connections=4, pipeline=8,
        rate=1000 / 3, params=b.params,
    )
    assert AgentJob.from_json(jobs[1].to_json()) == jobs[1]


def test_agent_jobs_with_duration_and_closed_loop() -> None:
    s = spawn_of(bench("a", agents=2, iterations=None, duration="5s"))
    jobs = plan.agent_jobs(s, s.benchmarks[0], "r", TARGETS)
    assert [(j.iterations, j.duration_s, j.rate) for j in jobs] == [(None, 5.0, None)] * 2


def test_agent_jobs_carry_repetition_labels() -> None:
    s = spawn_of(bench("a", agents=2, repeat=2))
    second = plan.phases(s)[1][0]
    assert {j.benchmark for j in plan.agent_jobs(s, second, "r", TARGETS)} == {"a#2"}


def test_agent_jobs_do_not_share_mutable_state() -> None:
    s = spec.load(GOOD / "web.toml")
    b = s.benchmarks[0]
    targets = ["w1:8000"]
    before = copy.deepcopy(b.params)
    jobs = plan.agent_jobs(s, b, "r", targets)
    jobs[0].params["paths"].append("/changed")
    jobs[0].targets.append("other:1")
    assert b.params == before and jobs[1].params == before
    assert targets == ["w1:8000"] and jobs[1].targets == ["w1:8000"]


def test_assign_round_robin() -> None:
    s = spawn_of(bench("a", agents=5))
    jobs = plan.agent_jobs(s, s.benchmarks[0], "r", TARGETS)
    placed = plan.assign(jobs, ["x", "y"])
    assert [(host, job.agent_num) for host, job in placed] == [("x", 0), ("y", 1), ("x", 2), ("y", 3), ("x", 4)]
    with pytest.raises(ValueError, match="no agent hosts"):
        plan.assign(jobs, [])
