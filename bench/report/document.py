"""run.json, typed: the merged run (:class:`RunDoc`), its benchmark entries, their agents and
seconds, and its hosts.

These are TypedDicts, not classes, for the reason ``bench.wire.result`` gives: the JSON on disk
is the dict itself, so a run written before these types existed loads as one of them unchanged,
and a run written now is byte for byte what it was. ``bench.report.merge`` builds them (and
keeps run.json's format history, ``schema_version``); every reader in ``bench.report`` takes
them. Keys marked ``NotRequired`` were added within version 1, or belong to one kind of entry
only (a folded benchmark, a repetition, an open-loop run): readers treat a missing one as absent.

The controller runs on Python 3.11+, so ``NotRequired`` is used here; the agent's own types in
``bench.wire`` keep the older required/optional base classes for Python 3.9.
"""

# No ``from __future__ import annotations``: NotRequired must be seen when the classes are made,
# or their __required_keys__ would list every key (tests/unit/report/test_run_document.py reads them).
from typing import Any, NotRequired, TypedDict

from bench.wire.result import Failure

#: ``bench.wire.hist.summary`` of a histogram: count, min, mean, p50, p90, p99, p99.9, max
#: (microseconds). A plain dict: its keys are read by name at run time (``latency_us[metric]``).
LatencySummary = dict[str, float]

#: ``bench.report.hosts.summarise`` of a host's samples (cpu, memory, network, disk, processes).
HostSummary = dict[str, Any]


class AgentRow(TypedDict):
    """One agent's result in its benchmark's ``agent_results`` (figures from its own histogram)."""

    agent_num: int
    host: str | None  # the result's host (the host's own hostname)
    status: str  # "ok" | "fatal" | "interrupted"
    ops: int
    errors: int
    elapsed_s: float
    ops_per_s: float
    count: int  # ops in its latency histogram
    p50: int  # microseconds
    p99: int
    max: int
    repetition: NotRequired[int]  # in a folded entry: which repetition it ran in
    step: NotRequired[int]  # in a capacity search's entry: which step it ran in


# One second of a benchmark, merged over its agents (``timeseries``). Agents that send wall-clock
# seconds with a histogram each give every key (``bench.report.seconds``, exact); older agents'
# seconds are merged by ``t`` and have no ``at``, ``p90``, ``p99.9``, ``max`` or ``mean``.
# Functional form: "p99.9" is not an identifier.
MergedSecond = TypedDict("MergedSecond", {
    "t": float,  # seconds from the benchmark's measured start (the first may be negative)
    "at": NotRequired[int],  # the second, epoch seconds on the run's reference clock
    "agents": int,  # how many agents reported it
    "ops": int,
    "errors": int,
    "p50": int,  # microseconds
    "p90": NotRequired[int],
    "p99": int,
    "p99.9": NotRequired[int],
    "max": NotRequired[int],
    "mean": NotRequired[float],
    "exact": bool,  # from merged histograms; false: p99 an upper bound, p50 an ops-weighted median
})


class RepeatSpread(TypedDict):
    """min, mean, max and sample stdev of a folded benchmark's repetitions' own ops_per_s."""

    min: float
    mean: float
    max: float
    stdev: float


class KeptVerdict(TypedDict):
    """An expectation's verdict as collect keeps it in its entry (``bench.report.expect``)."""

    expect: str  # the expectation as written, "p99 < 5ms"
    passed: bool
    measured: float | None  # in the expectation's unit; None: nothing measured
    measured_text: str


class SearchRow(TypedDict):
    """One step of a capacity search, as judged (``bench.report.search.row``)."""

    step: int
    rate: float  # the step's intended ops/s
    intended_ops: float
    sent_ops: int
    sent_pct: float | None  # of the intended ops; a pass needs 99
    achieved: float  # ops/s completed over the agents' time
    p50_us: float | None
    p99_us: float | None
    late_ops: int
    late_pct: float | None
    passed: bool
    limit: str  # bench.wire.search's PASS, SERVER, GENERATOR or INCOMPLETE
    why: str


class SearchSection(TypedDict):
    """A capacity search's ``search`` in its entry: what was asked, what was found, every step."""

    range: list[float]  # [low, high] ops/s
    slo: list[str]
    step_s: float
    precision: float
    late_share: float
    found: float | None  # the highest passing rate
    last_pass: float | None
    first_fail: float | None
    status: str  # found | lowest-fails | not-saturated | unfinished
    text: str
    rows: list[SearchRow]


class BenchmarkEntry(TypedDict):
    """One benchmark of the run: its agents' results merged (``bench.report.merge.merge_benchmark``),
    or its repetitions folded (``merge_repeats``: then ``repeat``, ``ops_per_s_repeats`` and
    ``repeats`` are there, and ``timeseries`` is not)."""

    name: str  # the benchmark's name; a repetition's is its label, name#k
    workload: str | None  # None: every agent failed and the plan was not given
    agents: int  # planned (summed over repetitions)
    agents_ok: int  # agents whose result has neither fatal nor interrupted
    ops: int
    errors: int
    late_ops: int  # open loop: ops sent after their intended time
    late_busy_ops: NotRequired[int]  # late_ops by cause, when every agent says it (bench.wire.result)
    late_loop_ops: NotRequired[int]
    seconds: float  # the longest agent's elapsed_s (summed over repetitions)
    ops_per_s: float  # ops / seconds
    started_at: float | None  # epoch seconds: first agent start, last agent end; None: not known
    finished_at: float | None
    latency_us: LatencySummary  # of the merged histogram
    histogram: str  # the merged latency histogram, encoded (bench.wire.hist)
    service_us: NotRequired[LatencySummary]  # open loop: from the actual send
    service_histogram: NotRequired[str]
    timeseries: NotRequired[list[MergedSecond]]  # per second; a folded entry's live in its repeats
    error_samples: list[str]
    failures: list[Failure]  # agents without a result, then agents whose result is partial
    agent_results: list[AgentRow]
    repeat: NotRequired[int]  # folded: how many repetitions
    ops_per_s_repeats: NotRequired[RepeatSpread]  # folded: the noise estimate
    repeats: NotRequired[list["BenchmarkEntry"]]  # folded: each repetition's own entry, with repetition
    repetition: NotRequired[int]  # in repeats: k of name#k
    expectations: NotRequired[list[KeptVerdict]]  # set by collect when the spawn file says expect
    search: NotRequired[SearchSection]  # a capacity search (bench.report.search): its steps judged
    steps: NotRequired[list["BenchmarkEntry"]]  # a capacity search: each step's own entry, with step
    step: NotRequired[int]  # in steps: k of name#sk


class HostEntry(TypedDict):
    """One host in run.json's ``hosts`` (``bench.report.hosts.host_section``)."""

    roles: list[str]  # "server", "agent"
    facts: dict[str, Any] | None  # bench.agent.hostfacts; None: it left none
    metrics: HostSummary | None  # the whole run's; None: its sampler left nothing
    benchmarks: dict[str, HostSummary]  # by benchmark label (repetitions apart), its window's
    addresses: NotRequired[dict[str, Any]]  # ssh, private, learned_from, as the deployment recorded them


class RunDoc(TypedDict):
    """run.json: the run's metadata, its status and its benchmarks. Keys of meta.json that no
    reader here needs (clock, lost_hosts, ...) are carried through undeclared."""

    schema_version: int
    run_id: str
    name: str
    status: str  # "ok" | "partial" | "failed" (bench.report.merge.STATUSES)
    started_at: float  # epoch seconds
    finished_at: float | None  # None: the controller never finished it
    spawn: dict[str, Any]  # the normalised spawn file
    deployment: dict[str, Any]
    benchmarks: list[BenchmarkEntry]
    hosts: NotRequired[dict[str, HostEntry]]
    bench_status: NotRequired[str | None]  # what the controller said when collect found it unfinished
