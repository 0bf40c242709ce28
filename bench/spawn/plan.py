"""Planning a spawn: which benchmarks run together, and what every agent process is told.

Pure functions of a :class:`bench.spawn.schema.Spawn`; the controller executes what they return.

Order (:func:`phases`): benchmarks run in file order, one phase at a time. Benchmarks that
share a ``parallel`` tag form one phase, placed where the first of them appears in the file.
A benchmark with ``repeat = N > 1`` runs N times in a row, as N phases; the spec guarantees
that benchmarks sharing a tag have the same ``repeat``, so a tagged group runs N times
together. Each repetition is the same Benchmark with its ``name`` replaced by the label
``name#k`` (k = 1..N, :func:`bench.wire.labels.repetition_label`); with ``repeat = 1`` the name is
kept as it is. Agent jobs, agent results and merged entries all carry that label, and
:func:`bench.report.merge.build_run` folds the repetitions back into one benchmark.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from bench.spawn import expectations
from bench.spawn.schema import Benchmark, Spawn
from bench.wire.job import AgentJob, split_evenly
from bench.wire.labels import repetition_label
from bench.wire.search import SearchSpec, Slo, planned_steps

T = TypeVar("T")


def phases(spawn: Spawn) -> list[list[Benchmark]]:
    """The benchmarks grouped into phases, in the order they run (see the module docstring)."""
    groups: list[list[Benchmark]] = []
    tagged: dict[str, list[Benchmark]] = {}
    for benchmark in spawn.benchmarks:
        if benchmark.parallel is None:
            groups.append([benchmark])
        elif benchmark.parallel in tagged:
            tagged[benchmark.parallel].append(benchmark)
        else:
            tagged[benchmark.parallel] = [benchmark]
            groups.append(tagged[benchmark.parallel])
    out: list[list[Benchmark]] = []
    for group in groups:
        repeat = group[0].repeat
        if repeat == 1:
            out.append(list(group))
            continue
        for k in range(1, repeat + 1):
            out.append([dataclasses.replace(b, name=repetition_label(b.name, k)) for b in group])
    return out


def agent_jobs(spawn: Spawn, benchmark: Benchmark, run_id: str, targets: Sequence[str]) -> list[AgentJob]:
    """One job per agent of ``benchmark``; ``targets`` are the server nodes' ``host:port``.

    Iterations are split with :func:`bench.wire.job.split_evenly` (shares differ by at most one);
    a rate is divided equally (``rate / agents`` ops/s each). Duration, warmup, connections
    and pipeline are per agent as written. Every job gets its own copy of the params.

    A capacity search's jobs are its steps' templates: each runs for the step time, at the
    search's lowest rate until the host run gives each step its own (bench.agent.hostrun).
    """
    n = benchmark.agents
    duration = benchmark.duration_s if benchmark.search is None else benchmark.search.step_s
    rate = benchmark.rate if benchmark.search is None else benchmark.search.low
    return [
        AgentJob(
            run_id=run_id,
            benchmark=benchmark.name,
            workload=benchmark.workload,
            agent_num=i,
            agents=n,
            server_kind=spawn.server.kind,
            targets=list(targets),
            iterations=None if benchmark.iterations is None else split_evenly(benchmark.iterations, n, i),
            duration_s=duration,
            warmup_s=benchmark.warmup_s,
            connections=benchmark.connections,
            pipeline=benchmark.pipeline,
            rate=None if rate is None else rate / n,
            params=copy.deepcopy(benchmark.params),
        )
        for i in range(n)
    ]


def assign(jobs: Sequence[T], agent_hosts: Sequence[str]) -> list[tuple[str, T]]:
    """Round-robin: job i runs on ``agent_hosts[i % len(agent_hosts)]``.

    Pass all the jobs of a phase at once to spread a parallel phase evenly over the hosts.
    """
    if not agent_hosts:
        raise ValueError("no agent hosts to assign jobs to")
    return [(agent_hosts[i % len(agent_hosts)], job) for i, job in enumerate(jobs)]


def search_spec(benchmark: Benchmark) -> SearchSpec | None:
    """What the hosts are told of ``benchmark``'s capacity search (its SLO in microseconds and
    plain counts, so they need no parser), or None without one."""
    if benchmark.search is None:
        return None
    slo = []
    for text in benchmark.search.slo:
        e = expectations.parse(text)
        scale = expectations.UNITS[e.unit] if e.metric in expectations.LATENCY else 1.0
        slo.append(Slo(e.text, e.metric, e.op, e.threshold * scale))
    s = benchmark.search
    return SearchSpec(benchmark.name, s.low, s.high, tuple(slo), s.step_s, s.precision, benchmark.agents,
                      planned_steps(s.low, s.high, s.precision), s.late)
