"""Collect: merge a run's agent results and host metrics into run.json and its exports.

``run`` needs no SSH: everything comes from the run directory, which ``bench`` wrote as results
arrived, so a run whose controller died (still "running") or was interrupted is collected too,
as "partial". Before it, ``fetch`` brings from the hosts what a run that lives there finished
and we do not have yet (a controller SIGKILLed, a detached run, a host that was lost): nothing
that ran to the end on a host is lost.

Each benchmark's expectations are checked and kept in run.json (fabfile.runs.gates decides the
exit status); export/ gets metrics.prom and junit.xml beside the HdrHistogram logs and CSVs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.report import export, tables
from bench.report import merge as result
from bench.report import search as search_report
from bench.report.document import BenchmarkEntry, RunDoc
from bench.report.screen import screen
from bench.spawn import plan, spec
from bench.wire.hostrun import finite_offset
from bench.wire.labels import split_step
from bench.wire.result import Failure
from fabfile.runs import gates, hostrun, observe, recorded
from fabfile.runs.store import RunDir, dir_name, resolve
from fabfile.session import Echo, Session, say


def run(runs_dir: Path, run_ref: str | None = None, fmt: str = "simple", detail: bool = False,
        echo: Echo = say) -> RunDoc:
    """Merge the run ``run_ref`` (default: the latest), write it, print its tables; return it."""
    run_dir = resolve(runs_dir, run_ref)
    meta = run_dir.meta()
    if meta.get("status") not in result.STATUSES:  # "interrupted", or "running": the controller died
        meta = {**meta, "status": "partial", "bench_status": meta.get("status"),
                "finished_at": meta.get("finished_at")}  # None: it never finished
    spawn_data = json.loads((run_dir.path / "spawn.json").read_text())
    deployment = json.loads((run_dir.path / "deployment.json").read_text())
    merged = result.build_run({**meta, "spawn": spawn_data, "deployment": deployment},
                              _merge_benchmarks(run_dir, spawn_data, str(meta.get("run_id") or run_dir.run_id),
                                                _clock_offsets(meta, echo)))
    hosts = observe.host_section(run_dir, merged, warn=echo)
    if hosts:
        merged["hosts"] = hosts
    verdicts: list[str] = []  # printed after the tables; kept in run.json and junit.xml
    gates.judge(merged, spec.parse(spawn_data, name=spawn_data.get("name", "spawn")).benchmarks, verdicts.append)
    path = run_dir.write_run(merged)
    run_dir.write_exports({**export.exports(merged, file_stem=dir_name), **gates.exports(merged, run_dir, echo)})
    run_dir.point_latest()
    echo(tables.report(merged, fmt, detail=detail))
    if fmt in ("simple", "github"):  # csv and json stay machine-readable
        for text in verdicts:
            echo(text)
    echo(f"\nrun {run_dir.run_id}: {merged['status']} -> {path}")
    return merged


def _clock_offsets(meta: dict[str, Any], echo: Echo = say) -> dict[str, float]:
    """``{host: seconds its clock is ahead of the run's reference clock}`` where the bench that ran
    measured them (meta.json's ``clock_offsets``, a run that lived on the hosts): the per-second
    merge puts each agent's seconds on the reference clock by the offset of the host it ran on."""
    offsets = meta.get("clock_offsets")
    if not isinstance(offsets, dict):
        return {}
    out = {}
    for host, value in offsets.items():
        offset = finite_offset(value)
        if offset is None:  # NaN, Infinity, not a number: that host's seconds are taken as they are
            echo(f"warning: {host}: its clock offset {value!r} is not a finite number: ignored")
        else:
            out[str(host)] = offset
    return out


def _merge_benchmarks(run_dir: RunDir, spawn_data: dict[str, Any], run_id: str,
                      clock_offsets: dict[str, float]) -> list[BenchmarkEntry]:
    """One merged entry per benchmark that has records, in run order (then any unplanned).

    Every result is screened first (bench.report.screen): one that is malformed, too large or
    claims to be another agent's is that agent's failure, and the others are merged."""
    by_bench: dict[str, tuple[list[tuple[int, str | None, Any]], list[Failure]]] = {}
    for bench_name, agent_num, record in run_dir.agent_files():
        results, failed = by_bench.setdefault(bench_name, ([], []))
        agent_result = record.get("result")
        if agent_result:  # a partial (fatal or interrupted) result is merged and flagged
            results.append((agent_num, _host_of(record), agent_result))
        else:
            failed.append(record.get("failure") or {"agent_num": agent_num, "host": None, "stderr_tail": "",
                                                    "error": "its record holds neither a result nor a failure"})
    ran = spec.parse(spawn_data, name=spawn_data.get("name", "spawn"))
    planned = {b.name: b for phase in plan.phases(ran) for b in phase}  # labels in run order
    steps = _search_steps(by_bench)  # a capacity search's records are its steps'
    for label, b in planned.items():  # none of its agents left a record: it failed, it is not absent
        if label not in by_bench and label not in steps:
            by_bench[label] = ([], [{"agent_num": n, "host": None, "stderr_tail": "",
                                     "error": "no record of this agent: no host reported it"} for n in range(b.agents)])
    labels = [step for label in planned for step in ([label] if label in by_bench else steps.get(label, []))]
    labels += sorted(set(by_bench) - set(labels))
    entries = []
    for label in labels:
        results, failed = by_bench[label]
        of = planned.get(label) or planned.get(split_step(label)[0])  # a search step: its search's
        workload = of.workload if of is not None else None
        agents = of.agents if of is not None else None
        good, refused = screen(label, results, run_id=run_id, workload=workload, agents=agents)
        offsets = {num: clock_offsets[host] for num, host, _ in results if host in clock_offsets}
        entries.append(result.merge_benchmark(label, good, failed + refused, workload=workload, agents=agents,
                                              clock_offsets=offsets))
    searches = {b.name: searched for b in ran.benchmarks if (searched := plan.search_spec(b)) is not None}
    return search_report.fold(entries, searches, _step_rates(by_bench)) if searches else entries


def _search_steps(by_bench: Mapping[str, Any]) -> dict[str, list[str]]:
    """search benchmark -> its step labels that left records, in step order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for label in by_bench:
        name, k = split_step(label)
        if k is not None:
            out.setdefault(name, []).append((k, label))
    return {name: [label for _, label in sorted(found)] for name, found in out.items()}


def _step_rates(by_bench: Mapping[str, tuple[list[tuple[int, str | None, Any]], list[Failure]]]) -> dict[str, float]:
    """step label -> the whole step's rate, as its agents' jobs said (each ran rate / agents)."""
    rates = {}
    for label, (results, _) in by_bench.items():
        for _, _, agent_result in results:
            job = agent_result.get("job") if isinstance(agent_result, Mapping) else None
            if isinstance(job, Mapping) and isinstance(job.get("rate"), (int, float)) \
                    and isinstance(job.get("agents"), int):
                rates[label] = float(job["rate"]) * job["agents"]
                break
    return rates


def _host_of(record: Mapping[str, Any]) -> str | None:
    """The host (its fleet name) the agent ran on, when the record says (a failure always does)."""
    host = record.get("host") or (record.get("failure") or {}).get("host")
    return host if isinstance(host, str) else None


def fetch(s: Session, run_ref: str | None = None) -> None:
    """Fetch from the hosts what they finished of a run that lives there (one pass; a host that
    does not answer keeps its results for a later collect)."""
    run_dir = resolve(s.workspace.runs_dir, run_ref)
    meta = run_dir.meta()
    if not meta.get("host_run") or meta.get("fetched"):
        return
    recorded.hide_secrets(s, run_dir)
    fleet = recorded.run_fleet(s, run_dir)
    f = recorded.follower(fleet, run_dir, s.echo, renew=False, reconnect_for=0.0, stream=False)
    try:
        f.fetch_once()
    finally:
        fleet.close()
    statuses = f.statuses()
    running = [h for h, status in statuses.items() if status == "running"]
    unreachable = f.lost()
    if running:
        s.echo(f"still running on {', '.join(running)}: collecting what has finished "
               f"(`inv attach --run {run_dir.run_id}` follows it to the end)")
    for name in unreachable:
        s.echo(f"warning: {name}: {f.hosts[name].gave_up}; what it finished stays there for a later `inv collect`")
    changes: dict[str, Any] = {"clock": {**meta.get("clock", {}), **f.clock()}, "lost_hosts": unreachable,
                               "host_statuses": {**meta.get("host_statuses", {}),
                                                 **{h: v for h, v in statuses.items() if v is not None}}}
    ended = all(status in hostrun.TERMINAL for status in statuses.values())
    if meta.get("status") == "running" and ended:  # its controller died: the hosts know how it ended
        changes.update(status=recorded.bench_status(statuses, []), finished_at=time.time())
    changes["fetched"] = ended and not unreachable
    run_dir.update_meta(**changes)
    recorded.record_skews(run_dir)
