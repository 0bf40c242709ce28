"""The run schema (``run.json``) and the exact merge of agent results into it.

Each agent sends one result (:class:`bench.wire.result.AgentResult`, ``RESULT_SCHEMA``); an
agent without a successful one is described by a :class:`bench.wire.result.Failure`. Both types
and their format history are in ``bench.wire.result``; results read back from disk are still
checked, key by key, since a run store may hold anything (``bench.report.results``).

:func:`merge_benchmark` turns the results of one benchmark (one repetition of it) into one
entry; :func:`build_run` groups repetitions and wraps the entries with the run's metadata. The
run, its entries and hosts are typed in ``bench.report.document`` (TypedDicts: the JSON is the
dict itself).
Percentiles are only ever read from histograms merged by adding counts (exact); they are never
averaged. Results whose key metadata disagree (benchmark, workload, run id, agent count,
histogram settings) are refused with :class:`ResultError`.

Repetitions: a benchmark with ``repeat = N > 1`` runs N times; repetition k (1-based) is
labelled ``name#k`` (bench.wire.labels.repetition_label) in its jobs, its agents' results and its
merged entry. :func:`build_run` folds the entries ``name#1`` .. ``name#N`` into one entry
``name`` (``bench.report.repeats.merge_repeats``, also importable from here) holding the
combined figures and the repetitions under ``"repeats"``.

Format history (``schema_version`` of run.json):

* 1 -- the first version: run metadata (run_id, name, status, started_at, finished_at,
  spawn, deployment, anything else the controller passes) and ``benchmarks``, one merged
  entry per benchmark (``bench.report.document.BenchmarkEntry``: :func:`merge_benchmark`, merge_repeats).
  Added later within version 1, as optional keys that older readers ignore and newer readers
  treat as absent when missing (so no version bump): ``hosts`` (``bench.report.hosts.host_section``:
  roles, facts and metrics summaries per host, and each host's ``addresses``: ``ssh`` where the
  controller reached it, ``private`` where the other hosts did, ``learned_from``) and each
  entry's ``started_at`` / ``finished_at`` (epoch seconds of its measured phase, from the
  agents' own clocks). ``deployment.addresses`` holds the same per host. Each entry's
  ``late_busy_ops`` and ``late_loop_ops`` (``late_ops`` by cause), when its agents report them.
  A capacity search's entry (bench.report.search folds its steps): ``search`` (what was asked and
  found, one row per step) and ``steps`` (the steps' own entries).

:func:`load_run` upgrades older versions step by step (``_UPGRADES``) and refuses newer ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from bench.report import combine
from bench.report import seconds as per_second
from bench.report.document import AgentRow, BenchmarkEntry, MergedSecond, RunDoc
from bench.report.repeats import merge_repeats
from bench.report.results import (  # ResultError is caught as merge.ResultError too
    AgentFigures,
    ResultError,
    agent_num_key,
    agent_who,
    check_compatible,
    decode,
    failure_record,
    is_number,
    read_agent,
)
from bench.wire import hist
from bench.wire.labels import split_label
from bench.wire.result import AgentResult, Failure, TimeseriesPoint

SCHEMA_VERSION = 1
STATUSES = ("ok", "partial", "failed")
RUN_KEYS = ("run_id", "name", "started_at", "finished_at", "spawn", "deployment")


# ---------------------------------------------------------------------------------------------
# Merging one benchmark


def merge_benchmark(
    name: str,
    agent_results: Sequence[AgentResult],
    failures: Sequence[Failure],
    *,
    workload: str | None = None,
    agents: int | None = None,
    clock_offsets: Mapping[int, float] | None = None,
) -> BenchmarkEntry:
    """Merge one benchmark's agent results (and its agents that produced none) into an entry
    (:class:`bench.report.document.BenchmarkEntry`).

    ``failures`` are the agents without a result. ``workload`` and ``agents`` (the planned
    count) may be given so that a benchmark whose agents all failed is still described; when
    given they must agree with the results.
    ``clock_offsets``: by agent_num, seconds the clock of the host that ran it is ahead of the
    run's reference clock, where measured.

    An agent counts in ``agents_ok`` when its result has neither ``fatal`` nor
    ``interrupted``; a partial result's data is merged all the same, and it is also listed in
    ``failures`` with ``"partial": true`` (so ``agents - agents_ok == len(failures)``).
    ``seconds`` is the longest agent's elapsed_s, ``error_samples`` up to combine.MAX_ERROR_SAMPLES
    distinct samples over all agents, ``agent_results`` one row per result, by agent_num, with
    count and latencies from its own histogram. ``timeseries``: see :func:`_merge_timeseries`.
    """
    results = sorted(agent_results, key=agent_num_key)
    failed = [failure_record(f, name) for f in failures]
    planned = check_compatible(name, results, failed, workload, agents)
    figures = [read_agent(name, result) for result in results]
    ops = sum(f.ops for f in figures)
    seconds = max((f.elapsed for f in figures), default=0.0)
    return {
        "name": name,
        "workload": results[0]["workload"] if results else workload,
        "agents": planned,
        "agents_ok": sum(1 for f in figures if f.status == "ok"),
        "ops": ops,
        "errors": sum(f.errors for f in figures),
        "late_ops": sum(f.late_ops for f in figures),
        **_late_ops_by_cause(figures),
        "seconds": seconds,
        "ops_per_s": combine.rate(ops, seconds),
        **_measured_window(results),
        **combine.latency([f.latency for f in figures]),
        **combine.service([f.service for f in figures if f.service is not None]),
        "timeseries": _merge_timeseries(name, results, clock_offsets),
        "error_samples": combine.error_samples(result.get("error_samples") or () for result in results),
        "failures": sorted(failed, key=agent_num_key) + [_partial(r, f) for r, f in zip(results, figures, strict=True)
                                                         if f.status != "ok"],
        "agent_results": [_agent_row(r, f) for r, f in zip(results, figures, strict=True)],
    }


def _late_ops_by_cause(figures: Sequence[AgentFigures]) -> combine.LateCauses:
    """late_ops by cause, summed, when every agent that reports late_ops splits it (an agent from
    before the split does not: then the cause is not known and the entry does not say it)."""
    late = [f for f in figures if f.says_late]
    if not late or not all(f.says_causes for f in late):
        return {}
    return {"late_busy_ops": sum(f.late_causes["late_busy_ops"] for f in figures),
            "late_loop_ops": sum(f.late_causes["late_loop_ops"] for f in figures)}


def _measured_window(results: Sequence[AgentResult]) -> combine.Window:
    """started_at / finished_at of the agents' measured phases, where they give epoch numbers."""
    spans: list[combine.Window] = [
        {"started_at": float(r["started_at"]), "finished_at": float(r["started_at"]) + float(r["elapsed_s"])}
        for r in results if is_number(r.get("started_at")) and is_number(r.get("elapsed_s"))]
    return combine.span(spans)


def _partial(result: AgentResult, figures: AgentFigures) -> Failure:
    """The failure record of an agent whose result is merged but incomplete (fatal or interrupted)."""
    error = f"fatal: {result['fatal']}" if figures.status == "fatal" else "interrupted"
    return {"agent_num": result["agent_num"], "host": result.get("host"), "error": error, "stderr_tail": "",
            "partial": True}


def _agent_row(result: AgentResult, figures: AgentFigures) -> AgentRow:
    """The agent's line in agent_results: its figures, and count and latencies from its own histogram."""
    own = figures.latency
    p = hist.percentiles(own, (50.0, 99.0))
    return {"agent_num": result["agent_num"], "host": result.get("host"), "status": figures.status,
            "ops": figures.ops, "errors": figures.errors, "elapsed_s": figures.elapsed,
            "ops_per_s": combine.rate(figures.ops, figures.elapsed), "count": own.get_total_count(), "p50": p[50.0],
            "p99": p[99.0], "max": own.get_max_value()}


# ---------------------------------------------------------------------------------------------
# A benchmark's seconds


def _merge_timeseries(name: str, results: Sequence[AgentResult],
                      offsets: Mapping[int, float] | None = None) -> list[MergedSecond]:
    """The benchmark's seconds, merged over its agents.

    Agents that send wall-clock seconds (``at``) with a histogram each are merged exactly per
    second by :func:`bench.report.seconds.merge` (every point ``"exact": true``, with p50, p90,
    p99, p99.9, max and mean). Older agents' points are merged by their ``t``
    (:func:`_merge_by_t`).
    """
    if results and per_second.has_histograms(results):  # wall-clock seconds, each with its histogram
        try:
            return per_second.merge(name, results, offsets)
        except per_second.SecondsError as exc:
            raise ResultError(str(exc)) from None
    return _merge_by_t(name, _points_by_t(name, results))


def _points_by_t(name: str, results: Sequence[AgentResult]) -> dict[float, list[TimeseriesPoint]]:
    """Every agent's timeseries points, by their ``t`` (checked: a list of points with a numeric t)."""
    by_t: dict[float, list[TimeseriesPoint]] = {}
    for result in results:
        series = result.get("timeseries") or ()
        if not isinstance(series, (list, tuple)):
            raise ResultError(f"{agent_who(name, result)}: timeseries is not a list")
        for point in series:
            t = point.get("t") if isinstance(point, Mapping) else None
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ResultError(f"{agent_who(name, result)}: timeseries point {point!r} has no numeric t")
            by_t.setdefault(t, []).append(point)
    return by_t


def _merge_by_t(name: str, by_t: Mapping[float, Sequence[TimeseriesPoint]]) -> list[MergedSecond]:
    """Points of older agents, merged by ``t``: ops, errors and the number of agents reporting are
    summed. When every agent's point at ``t`` carries an encoded ``hist``, p50 and p99 come from
    their exact merge (``"exact": true``). Otherwise they are an approximation (``"exact": false``):
    p99 is the largest agent p99 (an upper bound of the true p99) and p50 the ops-weighted median
    of the agents' p50s."""
    merged: list[MergedSecond] = []
    for at in sorted(by_t):
        points = by_t[at]
        ops = sum(int(p.get("ops") or 0) for p in points)
        errors = sum(int(p.get("errors") or 0) for p in points)
        exact = all(isinstance(p.get("hist"), str) for p in points)
        p50, p99 = _exact_p50_p99(name, at, points) if exact else _approximate_p50_p99(points)
        merged.append({"t": at, "agents": len(points), "ops": ops, "errors": errors, "p50": p50, "p99": p99,
                       "exact": exact})
    return merged


def _exact_p50_p99(name: str, at: float, points: Sequence[TimeseriesPoint]) -> tuple[int, int]:
    """p50 and p99 of the points' histograms added up (every point carries one)."""
    second = combine.Merged()
    for p in points:
        second.add(decode(p.get("hist"), f"benchmark {name!r}: timeseries t={at}"))
    q = hist.percentiles(second.histogram, (50.0, 99.0))
    return q[50.0], q[99.0]


def _approximate_p50_p99(points: Sequence[TimeseriesPoint]) -> tuple[Any, Any]:
    """The ops-weighted median of the agents' p50s, and the largest p99 (an upper bound)."""
    p99 = max((p.get("p99") or 0 for p in points), default=0)
    p50 = _weighted_median([(p.get("p50") or 0, int(p.get("ops") or 0)) for p in points])
    return p50, p99


def _weighted_median(pairs: list[tuple[Any, int]]) -> Any:
    """The value at which the cumulative weight reaches half of the total (lower median)."""
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    if not pairs:
        return 0
    if total <= 0:
        return pairs[(len(pairs) - 1) // 2][0]
    running = 0
    for value, weight in pairs:
        running += weight
        if running * 2 >= total:
            return value
    return pairs[-1][0]


# ---------------------------------------------------------------------------------------------
# The run


def build_run(meta: Mapping[str, Any], benchmarks: Sequence[BenchmarkEntry]) -> RunDoc:
    """run.json: the run's metadata, its status and its merged benchmark entries.

    ``meta`` must hold run_id, name, started_at, finished_at, spawn and deployment; any other
    keys are carried through. Entries labelled ``name#k`` are folded with
    :func:`merge_repeats`, in the place of the first of them. ``status`` is computed
    (:func:`run_status`); a ``status`` in ``meta`` can only make it worse (an aborted run).
    """
    missing = [k for k in RUN_KEYS if k not in meta]
    if missing:
        raise ResultError(f"run metadata lacks {', '.join(missing)}")
    entries = group_repeats(benchmarks)
    status = run_status(entries)
    claimed = meta.get("status")
    if claimed is not None:
        if claimed not in STATUSES:
            raise ResultError(f"run status {claimed!r} is not one of {', '.join(STATUSES)}")
        status = max(status, claimed, key=STATUSES.index)
    run: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_id": meta["run_id"], "name": meta["name"],
                           "status": status}
    for key in RUN_KEYS[2:]:
        run[key] = meta[key]
    for key, value in meta.items():
        if key not in run and key not in ("schema_version", "benchmarks"):
            run[key] = value
    run["benchmarks"] = entries
    return cast(RunDoc, run)  # meta.json's other keys ride along undeclared (bench.report.document)


def group_repeats(benchmarks: Sequence[BenchmarkEntry]) -> list[BenchmarkEntry]:
    """Fold ``name#k`` entries into one entry per benchmark, kept in first-appearance order."""
    order: list[tuple[str, bool]] = []
    repeats: dict[str, list[BenchmarkEntry]] = {}
    plain: dict[str, BenchmarkEntry] = {}
    for entry in benchmarks:
        base, k = split_label(str(entry.get("name", "")))
        if k is None:
            if base in repeats:
                raise ResultError(f"benchmark {base!r} appears both with and without repetitions")
            if base in plain:
                raise ResultError(f"benchmark {base!r} appears twice")
            plain[base] = entry
            order.append((base, False))
        else:
            if base in plain:
                raise ResultError(f"benchmark {base!r} appears both with and without repetitions")
            if base not in repeats:
                repeats[base] = []
                order.append((base, True))
            repeats[base].append(entry)
    return [merge_repeats(base, repeats[base]) if folded else plain[base].copy() for base, folded in order]


def run_status(benchmarks: Sequence[BenchmarkEntry]) -> str:
    """"ok" when every agent of every benchmark succeeded, "failed" when none did, else "partial"."""
    if not benchmarks:
        return "failed"
    if all(b.get("agents_ok") == b.get("agents") for b in benchmarks):
        return "ok"
    if not any(b.get("agents_ok") for b in benchmarks):
        return "failed"
    return "partial"


def load_run(source: str | Path | Mapping[str, Any]) -> RunDoc:
    """A run.json (a path, or the decoded dict) upgraded to SCHEMA_VERSION; never mutates input."""
    where = "run"
    if isinstance(source, Mapping):
        data: Any = copy.deepcopy(dict(source))
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as e:
            raise ResultError(f"{where}: cannot read: {e.strerror or e}") from None
        except (ValueError, RecursionError) as e:
            raise ResultError(f"{where}: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ResultError(f"{where}: expected a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ResultError(f"{where}: schema_version {version!r} is not a fleetbench run schema version")
    if version > SCHEMA_VERSION:
        raise ResultError(f"{where}: schema_version {version} is newer than this fleetbench understands "
                          f"({SCHEMA_VERSION}); upgrade fleetbench to read it")
    while version < SCHEMA_VERSION:
        data = _UPGRADES[version](data)
        version += 1
        data["schema_version"] = version
    if not isinstance(data.get("benchmarks"), list):
        raise ResultError(f"{where}: benchmarks is missing or not a list")
    return cast(RunDoc, data)


# Upgrade steps: _UPGRADES[v] turns a version-v run into a version v+1 run.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
