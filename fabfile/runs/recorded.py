"""A run recorded here that lives on the hosts: its fleet, its follower, how it ends.

What ``bench`` (start and follow), ``attach``/``status`` (a run started earlier) and
``collect`` (fetch what finished) share: the follower of a recorded run (fabfile.runs.follow)
set up from its meta.json, the run's status from its hosts', and the clock offsets and
phase-start skews recorded when it ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.spawn import secrets, spec
from bench.wire.hostrun import finite_offset
from fabfile.errors import PipelineError
from fabfile.remote.fleet import Fleet
from fabfile.runs import hostrun
from fabfile.runs.follow import Follower
from fabfile.runs.live import LiveView, Planned
from fabfile.runs.store import RunDir, resolve
from fabfile.session import Echo, Session
from fabfile.terminal import hide

STOP_WAIT_S = 30.0  # after Ctrl-C: how long the stopped hosts get to report what they measured


def follower(fleet: Fleet, run_dir: RunDir, echo: Echo, *, renew: bool, reconnect_for: float,
             stream: bool = True, write: bool = True, verbose: bool = False,
             hosts: Sequence[str] | None = None, host_timeout: float | None = None) -> Follower:
    """The follower of a recorded run (of ``hosts`` of it, default all); ``stream``: shown live
    (a LiveView), else silent; ``host_timeout`` None: the run's own."""
    meta = run_dir.meta()["host_run"]
    shown = [[Planned(**p) for p in phase] for phase in meta.get("planned", [])]
    hosts = meta["hosts"] if hosts is None else hosts
    expected = {h: a for h, a in meta.get("agents", {}).items() if h in hosts}
    return Follower(fleet, run_dir, hosts, nodes=meta.get("nodes", []), expected=expected,
                    echo=echo, renew=renew, reconnect_for=reconnect_for,
                    host_timeout=host_timeout if host_timeout is not None else float(meta.get("host_timeout_s", 30)),
                    stream=stream, phases=meta.get("phases", []),
                    write=write, planned=shown, view=LiveView(verbose=verbose) if stream else None)


def follow(fleet: Fleet, run_dir: RunDir, echo: Echo, *, reconnect_for: float, verbose: bool = False,
           host_timeout: float | None = None) -> str:
    """Follow the run until it ends on every host; Ctrl-C stops it everywhere (what was measured
    is kept) and re-raises. The bench status: ok, stopped, abandoned, interrupted or partial."""
    f = follower(fleet, run_dir, echo, renew=True, reconnect_for=reconnect_for, verbose=verbose,
                 host_timeout=host_timeout)
    try:
        f.follow()
    except KeyboardInterrupt:
        try:
            echo("interrupted: stopping this run's agents on every host (they report what they measured)")
            f.stop(timeout=f.host_timeout)
            f.halt.clear()
            f.reconnect_for = min(f.reconnect_for, STOP_WAIT_S)
            f.stream = False
            f.follow()
        finally:
            finish(run_dir, f, "interrupted", echo)
        raise
    return finish(run_dir, f, None, echo)


def finish(run_dir: RunDir, f: Follower, forced: str | None, echo: Echo) -> str:
    statuses = f.statuses()
    lost = f.lost()
    status = forced or bench_status(statuses, lost)
    run_dir.update_meta(status=status, finished_at=time.time(), lost_hosts=lost, clock=f.clock(),
                        host_statuses=statuses, fetched=all(h.finished for h in f.hosts.values()),
                        lost_reasons={h.name: h.gave_up for h in f.hosts.values() if h.gave_up},
                        alone_phases=f.alone())
    record_skews(run_dir)
    if status != "ok":
        echo(f"run {run_dir.run_id} is {status}"
             + (f"; lost host(s): {'; '.join(f'{n} ({f.hosts[n].gave_up})' for n in lost)}" if lost else "")
             + f"; what finished is in {run_dir.path}")
    return status


def bench_status(statuses: Mapping[str, str | None], lost: Sequence[str]) -> str:
    """The run's status from its hosts': abandoned or stopped if any host's was, partial when a
    host was lost or its host run failed, else ok (the agents' own results decide the rest)."""
    values = set(statuses.values())
    if "abandoned" in values:
        return "abandoned"
    if "stopped" in values:
        return "stopped"
    unended = [h for h, v in statuses.items() if v not in hostrun.TERMINAL and h not in lost]  # not accounted for
    return "partial" if lost or unended or "failed" in values else "ok"


def record_skews(run_dir: RunDir) -> None:
    """meta.json (and so run.json): each host's clock offset as collect's per-second merge reads
    it (``clock_offsets``: seconds it is ahead of the coordinator's clock), and each phase's start
    skew across its agents, in the coordinator's clock, from the results and those offsets."""
    meta = run_dir.meta()
    phases = (meta.get("host_run") or {}).get("phases")
    if not phases:
        return
    offsets = {h: finite_offset((c or {}).get("offset_s")) or 0.0 for h, c in (meta.get("clock") or {}).items()}
    run_dir.update_meta(clock_offsets={h: -offset for h, offset in offsets.items()})
    host_of = {(a["benchmark"], int(a["agent_num"])): host
               for host, agents in (meta["host_run"].get("agents") or {}).items() for a in agents}
    records = [(name, dict(record)) for name, record in run_dir.agent_records()]
    skews = hostrun.phase_skews(phases, records, host_of, offsets)
    alone = meta.get("alone_phases") or {}
    for entry in skews:  # the hosts whose agents started this phase without the barrier
        entry["alone"] = sorted(h for h, ks in alone.items() if isinstance(ks, dict) and str(entry["phase"]) in ks)
    run_dir.update_meta(phase_starts=skews)


def host_run_dir(runs_dir: Any, run_ref: str | None) -> RunDir:
    run_dir = resolve(runs_dir, run_ref)
    if not run_dir.meta().get("host_run"):
        raise PipelineError(f"run {run_dir.run_id} did not run on the hosts (it predates host runs)")
    return run_dir


def hide_secrets(s: Session, run_dir: RunDir) -> None:
    """A run followed or fetched by a later controller: the secrets it can know (the redis
    password, { env = ... } values set here) are masked in all it shows and writes."""
    s.deployment()  # loading it hides its password
    spawn_data = json.loads((run_dir.path / "spawn.json").read_text())
    ran = spec.parse(spawn_data, name=spawn_data.get("name", "spawn"))
    for value in secrets.values(ran, os.environ).values():
        hide(value)


def run_fleet(s: Session, run_dir: RunDir) -> Fleet:
    """The fleet of a recorded run, not yet connected: each host connects when first asked, so
    one that is down does not keep us from the others."""
    return Fleet(run_dir.meta()["host_run"]["hosts"], s.settings)
