"""The run schema (``run.json``) and the exact merge of agent results into it.

Each agent sends one result (:class:`bench.wire.result.AgentResult`, ``RESULT_SCHEMA``); an
agent without a successful one is described by a :class:`bench.wire.result.Failure`. Both types
and their format history are in ``bench.wire.result``; results read back from disk are still
checked here, key by key, since a run store may hold anything.

:func:`merge_benchmark` turns the results of one benchmark (one repetition of it) into one
entry; :func:`build_run` groups repetitions and wraps the entries with the run's metadata.
Percentiles are only ever read from histograms merged by adding counts (exact); they are never
averaged. Results whose key metadata disagree (benchmark, workload, run id, agent count,
histogram settings) are refused with :class:`ResultError`.

Repetitions: a benchmark with ``repeat = N > 1`` runs N times; repetition k (1-based) is
labelled ``name#k`` (bench.wire.labels.repetition_label) in its jobs, its agents' results and its
merged entry. :func:`build_run` folds the entries ``name#1`` .. ``name#N`` into one entry
``name`` (see :func:`merge_repeats`) holding the combined figures and the repetitions under
``"repeats"``.

Format history (``schema_version`` of run.json):

* 1 -- the first version: run metadata (run_id, name, status, started_at, finished_at,
  spawn, deployment, anything else the controller passes) and ``benchmarks``, one merged
  entry per benchmark as described in :func:`merge_benchmark` and :func:`merge_repeats`.
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
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench.errors import FleetbenchError
from bench.report import seconds as per_second
from bench.wire import hist
from bench.wire.labels import split_label
from bench.wire.result import RESULT_SCHEMA, AgentResult, Failure, TimeseriesPoint

SCHEMA_VERSION = 1
STATUSES = ("ok", "partial", "failed")
MAX_ERROR_SAMPLES = 10
RUN_KEYS = ("run_id", "name", "started_at", "finished_at", "spawn", "deployment")
# late_ops split by cause (bench.wire.result): waited for a busy connection, or the agent's loop was late
LATE_CAUSES = ("late_busy_ops", "late_loop_ops")


class ResultError(FleetbenchError, ValueError):
    """Agent results that cannot be merged, or a run.json that cannot be loaded."""


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
) -> dict[str, Any]:
    """Merge one benchmark's agent results (and its agents that produced none) into an entry.

    ``failures`` are the agents without a result. ``workload`` and ``agents`` (the planned
    count) may be given so that a benchmark whose agents all failed is still described; when
    given they must agree with the results.
    ``clock_offsets``: by agent_num, seconds the clock of the host that ran it is ahead of the
    run's reference clock, where measured.

    The entry::

        {"name", "workload", "agents", "agents_ok", "ops", "errors", "late_ops",
         "late_busy_ops", "late_loop_ops",   # late_ops by cause; only when every open-loop
                               # agent says it (bench.wire.result)
         "seconds",            # the longest agent's elapsed_s
         "ops_per_s",          # ops / seconds
         "started_at", "finished_at",   # epoch seconds: first agent start, last agent end
                                        # (None when the agents give no numeric started_at)
         "latency_us",         # bench.wire.hist.summary of the merged latency histogram
         "histogram",          # the merged latency histogram, encoded
         "service_us", "service_histogram",   # only when agents report service time
         "timeseries",         # per second, see below
         "error_samples",      # up to MAX_ERROR_SAMPLES distinct samples over all agents
         "failures",           # agents without a result, then agents whose result is partial
         "agent_results"}      # one row per result, by agent_num: agent_num, host, status
                               # (ok | fatal | interrupted), ops, errors, elapsed_s, ops_per_s,
                               # count, p50, p99, max (count and latencies from its own histogram)

    An agent counts in ``agents_ok`` when its result has neither ``fatal`` nor
    ``interrupted``; a partial result's data is merged all the same, and it is also listed in
    ``failures`` with ``"partial": true`` (so ``agents - agents_ok == len(failures)``).

    Timeseries: agents that send wall-clock seconds (``at``) with a histogram each are merged
    exactly per second by :func:`bench.report.seconds.merge` (every point ``"exact": true``, with
    p50, p90, p99, p99.9, max and mean). Older agents' points are merged by their ``t``: ops,
    errors and the number of agents reporting are summed. When every agent's point at ``t``
    carries an encoded ``hist``, p50 and p99 come from their exact merge (``"exact": true``). Otherwise they are an
    approximation (``"exact": false``): p99 is the largest agent p99 (an upper bound of the
    true p99) and p50 the ops-weighted median of the agents' p50s.
    """
    results = sorted(agent_results, key=_agent_num_key)
    failed = [_failure(f, name) for f in failures]
    expected = _check_compatible(name, results, failed, workload, agents)

    latency = _Merged()
    service = _Merged()
    rows: list[dict[str, Any]] = []
    samples: list[str] = []
    partial: list[Failure] = []
    ops = errors = late_ops = 0
    late_causes = {key: 0 for key in LATE_CAUSES}
    causes_known = any("late_ops" in r for r in results)
    seconds = 0.0
    for result in results:
        who = _who(name, result)
        histograms = result["histograms"]
        own = _decode(histograms.get("latency_us"), f"{who}: histograms.latency_us")
        latency.add(own)
        if histograms.get("service_us") is not None:
            service.add(_decode(histograms["service_us"], f"{who}: histograms.service_us"))
        r_ops = _count(result, "ops", who)
        r_errors = _count(result, "errors", who)
        elapsed = _seconds(result, who)
        ops += r_ops
        errors += r_errors
        late_ops += _count(result, "late_ops", who, default=0)
        for key in LATE_CAUSES:  # an agent from before the split: the cause is not known
            if "late_ops" in result and key not in result:
                causes_known = False
            late_causes[key] += _count(result, key, who, default=0)
        seconds = max(seconds, elapsed)
        status = _agent_status(result)
        rows.append(_agent_row(result, own, r_ops, r_errors, elapsed, status))
        for sample in result.get("error_samples") or ():
            if len(samples) < MAX_ERROR_SAMPLES and str(sample) not in samples:
                samples.append(str(sample))
        if status != "ok":
            error = f"fatal: {result['fatal']}" if status == "fatal" else "interrupted"
            partial.append({"agent_num": result["agent_num"], "host": result.get("host"), "error": error,
                            "stderr_tail": "", "partial": True})

    entry: dict[str, Any] = {
        "name": name,
        "workload": results[0]["workload"] if results else workload,
        "agents": expected,
        "agents_ok": sum(1 for row in rows if row["status"] == "ok"),
        "ops": ops,
        "errors": errors,
        "late_ops": late_ops,
        **(late_causes if causes_known else {}),
        "seconds": seconds,
        "ops_per_s": _rate(ops, seconds),
        **_measured_window(results),
        "latency_us": hist.summary(latency.histogram),
        "histogram": hist.encode(latency.histogram),
    }
    if service.count_added:
        entry["service_us"] = hist.summary(service.histogram)
        entry["service_histogram"] = hist.encode(service.histogram)
    entry["timeseries"] = _merge_timeseries(name, results, clock_offsets)
    entry["error_samples"] = samples
    entry["failures"] = sorted(failed, key=_agent_num_key) + partial
    entry["agent_results"] = rows
    return entry


def merge_repeats(name: str, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold the entries of repetitions ``name#1`` .. ``name#N`` into one entry ``name``.

    Counts (agents, agents_ok, ops, errors, late_ops) and ``seconds`` are summed over the
    repetitions, ``ops_per_s`` is ops / seconds, latency comes from the exact merge of the
    repetitions' histograms, ``failures`` and ``agent_results`` are concatenated with a
    ``"repetition"`` field added. ``ops_per_s_repeats`` holds min, mean, max and sample stdev
    of the repetitions' own ops_per_s (the noise estimate). ``"repeat"`` is the number of
    repetitions, and ``"repeats"`` holds the repetitions' own entries (each with
    ``"repetition"``), where their timeseries live; the folded entry has no timeseries.
    """
    if not entries:
        raise ResultError(f"benchmark {name!r}: no repetitions to fold")
    numbered = []
    for entry in entries:
        base, k = split_label(str(entry.get("name", "")))
        if base != name or k is None:
            raise ResultError(f"benchmark {name!r}: {entry.get('name')!r} is not a repetition of it")
        numbered.append((k, entry))
    numbered.sort(key=lambda pair: pair[0])
    ks = [k for k, _ in numbered]
    if len(set(ks)) != len(ks):
        raise ResultError(f"benchmark {name!r}: repetition listed twice in {ks}")
    workloads = {str(e["workload"]) for _, e in numbered if e.get("workload") is not None}
    if len(workloads) > 1:
        raise ResultError(f"benchmark {name!r}: repetitions ran different workloads {sorted(workloads)}")

    latency = _Merged()
    service = _Merged()
    has_service = False
    for _, entry in numbered:
        latency.add(_decode(entry.get("histogram"), f"benchmark {entry.get('name')!r}: histogram"))
        if entry.get("service_histogram") is not None:
            has_service = True
            service.add(_decode(entry["service_histogram"], f"benchmark {entry.get('name')!r}: service_histogram"))

    def total(key: str) -> Any:
        return sum(e.get(key, 0) for _, e in numbered)

    rates = [float(e.get("ops_per_s", 0.0)) for _, e in numbered]
    seconds = total("seconds")
    ops = total("ops")
    samples: list[str] = []
    for _, entry in numbered:
        for sample in entry.get("error_samples", ()):
            if len(samples) < MAX_ERROR_SAMPLES and sample not in samples:
                samples.append(sample)
    folded: dict[str, Any] = {
        "name": name,
        "workload": workloads.pop() if workloads else None,
        "repeat": len(numbered),
        "agents": total("agents"),
        "agents_ok": total("agents_ok"),
        "ops": ops,
        "errors": total("errors"),
        "late_ops": total("late_ops"),
        **({key: total(key) for key in LATE_CAUSES} if all(key in e for _, e in numbered for key in LATE_CAUSES)
           else {}),
        "seconds": seconds,
        "ops_per_s": _rate(ops, seconds),
        "ops_per_s_repeats": {
            "min": round(min(rates), 3),
            "mean": round(statistics.fmean(rates), 3),
            "max": round(max(rates), 3),
            "stdev": round(statistics.stdev(rates), 3) if len(rates) > 1 else 0.0,
        },
        **_span([e for _, e in numbered]),
        "latency_us": hist.summary(latency.histogram),
        "histogram": hist.encode(latency.histogram),
    }
    if has_service:
        folded["service_us"] = hist.summary(service.histogram)
        folded["service_histogram"] = hist.encode(service.histogram)
    folded["error_samples"] = samples
    folded["failures"] = [dict(f, repetition=k) for k, e in numbered for f in e.get("failures", ())]
    folded["agent_results"] = [dict(r, repetition=k) for k, e in numbered for r in e.get("agent_results", ())]
    folded["repeats"] = [dict(e, repetition=k) for k, e in numbered]
    return folded


# ---------------------------------------------------------------------------------------------
# The run


def build_run(meta: Mapping[str, Any], benchmarks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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
    return run


def group_repeats(benchmarks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold ``name#k`` entries into one entry per benchmark, kept in first-appearance order."""
    order: list[tuple[str, bool]] = []
    repeats: dict[str, list[Mapping[str, Any]]] = {}
    plain: dict[str, Mapping[str, Any]] = {}
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
    return [merge_repeats(base, repeats[base]) if folded else dict(plain[base]) for base, folded in order]


def run_status(benchmarks: Sequence[Mapping[str, Any]]) -> str:
    """"ok" when every agent of every benchmark succeeded, "failed" when none did, else "partial"."""
    if not benchmarks:
        return "failed"
    if all(b.get("agents_ok") == b.get("agents") for b in benchmarks):
        return "ok"
    if not any(b.get("agents_ok") for b in benchmarks):
        return "failed"
    return "partial"


def load_run(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
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
    return data


# Upgrade steps: _UPGRADES[v] turns a version-v run into a version v+1 run.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


# ---------------------------------------------------------------------------------------------
# Histograms


class _Merged:
    """A histogram that others are added to; empty ones are skipped.

    (HdrHistogram.add of an empty histogram sets the sum's min to 0, so skipping them is
    needed for a correct min, not only a saving.)
    """

    def __init__(self) -> None:
        self.histogram = hist.new()
        self.count_added = 0

    def add(self, other: HdrHistogram) -> None:
        self.count_added += 1
        if other.get_total_count():
            self.histogram.add(other)


def _decode(text: Any, what: str) -> HdrHistogram:
    if not isinstance(text, str):
        raise ResultError(f"{what}: expected an encoded histogram, got {type(text).__name__}")
    try:
        decoded = hist.decode(text)
    except Exception as e:  # hdrh raises assorted types (binascii, zlib, its own, TypeError)
        raise ResultError(f"{what}: not a valid encoded histogram ({type(e).__name__}: {e})") from None
    settings = (decoded.lowest_trackable_value, decoded.highest_trackable_value, decoded.significant_figures)
    if settings != (hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS):
        raise ResultError(f"{what}: histogram settings (lowest, highest, digits) {settings} differ from "
                          f"bench.wire.hist's {(hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS)}")
    return decoded


# ---------------------------------------------------------------------------------------------
# Pieces of merge_benchmark


def _agent_num_key(item: Mapping[str, Any]) -> tuple[int, Any]:
    num = item.get("agent_num")
    return (0, num) if isinstance(num, int) else (1, str(num))


def _who(name: str, result: AgentResult) -> str:
    return f"benchmark {name!r}: agent {result.get('agent_num')} on {result.get('host')}"


def _failure(failure: Failure, name: str) -> Failure:
    if not isinstance(failure, Mapping) or "agent_num" not in failure:
        raise ResultError(f"benchmark {name!r}: a failure lacks agent_num: {failure!r}")
    return {"agent_num": failure["agent_num"], "host": failure.get("host"),
            "error": str(failure.get("error") or "failed"), "stderr_tail": str(failure.get("stderr_tail") or "")}


_REQUIRED = ("schema", "benchmark", "workload", "agent_num", "agents", "host", "elapsed_s", "ops", "errors",
             "histograms")


def _check_compatible(name: str, results: Sequence[AgentResult], failed: Sequence[Failure],
                      workload: str | None, agents: int | None) -> int:
    """Refuse results that are not one benchmark's; return the number of agents planned."""
    for result in results:
        if not isinstance(result, Mapping):
            raise ResultError(f"benchmark {name!r}: an agent result is not an object")
        who = _who(name, result)
        lacking = [k for k in _REQUIRED if k not in result]
        if lacking:
            raise ResultError(f"{who}: result lacks {', '.join(lacking)}")
        if result["schema"] != RESULT_SCHEMA:
            raise ResultError(f"{who}: result schema {result['schema']!r} is not {RESULT_SCHEMA!r}")
        if result["benchmark"] != name:
            raise ResultError(f"{who}: result is for benchmark {result['benchmark']!r}")
        if not isinstance(result["histograms"], Mapping):
            raise ResultError(f"{who}: histograms is not an object")
    for key, given in (("workload", workload), ("run_id", None), ("agents", agents)):
        seen = {r.get(key) for r in results}
        if given is not None:
            seen.add(given)
        if len(seen) > 1:
            raise ResultError(f"benchmark {name!r}: agents disagree on {key}: "
                              f"{', '.join(sorted(repr(s) for s in seen))}")
    nums = [r["agent_num"] for r in results] + [f["agent_num"] for f in failed]
    odd = [n for n in nums if not isinstance(n, int) or isinstance(n, bool) or n < 0]
    if odd:
        raise ResultError(f"benchmark {name!r}: agent_num {odd[0]!r} is not a non-negative integer")
    duplicated = sorted(n for n, times in Counter(nums).items() if times > 1)
    if duplicated:
        raise ResultError(f"benchmark {name!r}: agent_num {', '.join(map(str, duplicated))} reported more than once")
    planned = agents if agents is not None else (results[0]["agents"] if results else len(failed))
    if not isinstance(planned, int) or planned < len(nums):
        raise ResultError(f"benchmark {name!r}: {len(nums)} agents reported but {planned!r} were planned")
    return planned


def _count(result: Mapping[str, Any], key: str, who: str, default: int | None = None) -> int:
    value = result.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hist.MAX_TOTAL_COUNT:
        raise ResultError(f"{who}: {key} {value!r} is not a count")
    return value


def _seconds(result: Mapping[str, Any], who: str) -> float:
    value = result.get("elapsed_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ResultError(f"{who}: elapsed_s {value!r} is not a duration")
    return float(value)


def _measured_window(results: Sequence[AgentResult]) -> dict[str, float | None]:
    """started_at / finished_at of the agents' measured phases, where they give epoch numbers."""
    spans = [{"started_at": float(r["started_at"]), "finished_at": float(r["started_at"]) + float(r["elapsed_s"])}
             for r in results if _is_number(r.get("started_at")) and _is_number(r.get("elapsed_s"))]
    return _span(spans)


def _span(entries: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    starts = [float(e["started_at"]) for e in entries if _is_number(e.get("started_at"))]
    ends = [float(e["finished_at"]) for e in entries if _is_number(e.get("finished_at"))]
    return {"started_at": round(min(starts), 6) if starts else None,
            "finished_at": round(max(ends), 6) if ends else None}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rate(ops: int, seconds: float) -> float:
    return round(ops / seconds, 3) if seconds > 0 else 0.0


def _agent_status(result: AgentResult) -> str:
    if result.get("fatal"):
        return "fatal"
    if result.get("interrupted"):
        return "interrupted"
    return "ok"


def _agent_row(result: AgentResult, own: HdrHistogram, ops: int, errors: int, elapsed: float,
               status: str) -> dict[str, Any]:
    p = hist.percentiles(own, (50.0, 99.0))
    return {"agent_num": result["agent_num"], "host": result.get("host"), "status": status, "ops": ops,
            "errors": errors, "elapsed_s": elapsed, "ops_per_s": _rate(ops, elapsed),
            "count": own.get_total_count(), "p50": p[50.0], "p99": p[99.0], "max": own.get_max_value()}


def _merge_timeseries(name: str, results: Sequence[AgentResult],
                      offsets: Mapping[int, float] | None = None) -> list[dict[str, Any]]:
    if results and per_second.has_histograms(results):  # wall-clock seconds, each with its histogram
        try:
            return per_second.merge(name, results, offsets)
        except per_second.SecondsError as exc:
            raise ResultError(str(exc)) from None
    by_t: dict[float, list[TimeseriesPoint]] = {}
    for result in results:
        series = result.get("timeseries") or ()
        if not isinstance(series, (list, tuple)):
            raise ResultError(f"{_who(name, result)}: timeseries is not a list")
        for point in series:
            t = point.get("t") if isinstance(point, Mapping) else None
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ResultError(f"{_who(name, result)}: timeseries point {point!r} has no numeric t")
            by_t.setdefault(t, []).append(point)
    merged = []
    for at in sorted(by_t):
        points = by_t[at]
        ops = sum(int(p.get("ops") or 0) for p in points)
        errors = sum(int(p.get("errors") or 0) for p in points)
        exact = all(isinstance(p.get("hist"), str) for p in points)
        if exact:
            second = _Merged()
            for p in points:
                second.add(_decode(p["hist"], f"benchmark {name!r}: timeseries t={at}"))
            q = hist.percentiles(second.histogram, (50.0, 99.0))
            p50, p99 = q[50.0], q[99.0]
        else:
            p99 = max((p.get("p99") or 0 for p in points), default=0)
            p50 = _weighted_median([(p.get("p50") or 0, int(p.get("ops") or 0)) for p in points])
        merged.append({"t": at, "agents": len(points), "ops": ops, "errors": errors, "p50": p50, "p99": p99,
                       "exact": exact})
    return merged


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
