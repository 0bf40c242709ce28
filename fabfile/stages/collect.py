"""Collect: merge a run's agent results and host metrics into run.json and its exports.

``run`` needs no SSH: everything comes from the run directory, which ``bench`` wrote as results
arrived, so a run whose controller died (still "running") or was interrupted is collected too,
as "partial". Before it, ``fetch`` brings from the hosts what a run that lives there finished
and we do not have yet (a controller SIGKILLed, a detached run, a host that was lost): nothing
that ran to the end on a host is lost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.report import export, tables
from bench.report import merge as result
from bench.spawn import plan, spec
from bench.wire.result import AgentResult, Failure
from fabfile.runs import hostrun, observe
from fabfile.runs.store import RunDir, dir_name, resolve
from fabfile.session import Echo, Session, say


def run(runs_dir: Path, run_ref: str | None = None, fmt: str = "simple", detail: bool = False,
        echo: Echo = say) -> dict[str, Any]:
    """Merge the run ``run_ref`` (default: the latest), write it, print its tables; return it."""
    run_dir = resolve(runs_dir, run_ref)
    meta = run_dir.meta()
    if meta.get("status") not in result.STATUSES:  # "interrupted", or "running": the controller died
        meta = {**meta, "status": "partial", "bench_status": meta.get("status"),
                "finished_at": meta.get("finished_at")}  # None: it never finished
    spawn_data = json.loads((run_dir.path / "spawn.json").read_text())
    deployment = json.loads((run_dir.path / "deployment.json").read_text())
    merged = result.build_run({**meta, "spawn": spawn_data, "deployment": deployment},
                              _merge_benchmarks(run_dir, spawn_data))
    hosts = observe.host_section(run_dir, merged)
    if hosts:
        merged["hosts"] = hosts
    path = run_dir.write_run(merged)
    run_dir.write_exports(export.exports(merged, file_stem=dir_name))
    run_dir.point_latest()
    echo(tables.report(merged, fmt, detail=detail))
    echo(f"\nrun {run_dir.run_id}: {merged['status']} -> {path}")
    return merged


def _merge_benchmarks(run_dir: RunDir, spawn_data: dict[str, Any]) -> list[dict[str, Any]]:
    """One merged entry per benchmark that has records, in run order (then any unplanned)."""
    by_bench: dict[str, tuple[list[AgentResult], list[Failure]]] = {}
    for bench_name, record in run_dir.agent_records():
        ok, failed = by_bench.setdefault(bench_name, ([], []))
        agent_result = record.get("result")
        if agent_result:  # a partial (fatal or interrupted) result is merged and flagged
            ok.append(agent_result)
        else:
            failed.append(record["failure"])
    ran = spec.parse(spawn_data, name=spawn_data.get("name", "spawn"))
    planned = {b.name: b for phase in plan.phases(ran) for b in phase}  # labels in run order
    labels = [label for label in planned if label in by_bench] + sorted(set(by_bench) - set(planned))
    return [result.merge_benchmark(label, *by_bench[label],
                                   workload=planned[label].workload if label in planned else None,
                                   agents=planned[label].agents if label in planned else None)
            for label in labels]


def fetch(s: Session, run_ref: str | None = None) -> None:
    """Fetch from the hosts what they finished of a run that lives there (one pass; a host that
    does not answer keeps its results for a later collect)."""
    from fabfile.stages import bench

    run_dir = resolve(s.workspace.runs_dir, run_ref)
    meta = run_dir.meta()
    if not meta.get("host_run") or meta.get("fetched"):
        return
    fleet = bench.run_fleet(s, run_dir)
    f = bench.follower(fleet, run_dir, s.echo, renew=False, reconnect_for=0.0, stream=False)
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
        changes.update(status=bench.bench_status(statuses, []), finished_at=time.time())
    changes["fetched"] = ended and not unreachable
    run_dir.update_meta(**changes)
    bench.record_skews(run_dir)
