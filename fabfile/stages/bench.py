"""Bench: the run lives on the hosts; we start it, follow it, and may leave it.

``run`` takes the deploy lock (fabfile.remote.lock: a second ``inv bench`` of this controller,
or any of another's, is refused while this one lives), refuses a fleet that already has a live
run, records the run locally, hands every host its share of the whole run (fabfile.runs.hostrun:
every phase in order, its own agents) and starts the host runs detached from SSH. If one host
cannot start, the hosts already started are stopped (what they measured is fetched and kept)
before the error, naming that host and its command's output, is raised: nothing is left
running. Unless detached, it then follows them (``follow``: results, stderr and host metrics
streamed as the hosts write them; a lost link retried for ``reconnect_for``) until the run has
ended everywhere. Ctrl-C stops the run on every host, keeps what was measured and re-raises
(status "interrupted"). Servers are left as they are.

While it follows, each phase is shown live, fleet-wide (fabfile.runs.live), fed from the
agents' per-second records; ``verbose`` shows every agent's own lines too.

``attach`` follows a run started earlier (``--detach``, or by a controller that died), ``status``
reads each host's state once. ``meta.json`` keeps what they need to find the run again (its
hosts, nodes, agents and their jobs without secrets; whether a detached ``spawn`` still owes a
``down``). No secret is in it: the plans carry the redis password and the spawn file's
{ env = ... } values to the hosts over stdin, and the run store gets the public deployment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.spawn import secrets, spec
from bench.wire.hostrun import finite_offset
from fabfile.deployment import Deployment
from fabfile.errors import PipelineError
from fabfile.remote import lock
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import run as run_remote
from fabfile.runs import hostrun
from fabfile.runs.live import LiveView, Planned, planned
from fabfile.runs.store import RunDir, dir_name, new_run_id, resolve
from fabfile.session import Echo, Session
from fabfile.stages.agents import public_job
from fabfile.stages.follow import Follower
from fabfile.terminal import hide, printable

STOP_WAIT_S = 30.0  # after Ctrl-C: how long the stopped hosts get to report what they measured
VISIBLE_WAIT_S = 10.0  # a started host run shows in live_runs_command within this (its first state.json)


@dataclass(frozen=True)
class RunOptions:
    agent_timeout: float = 900.0
    host_timeout: float = 30.0
    reconnect_for: float = 600.0
    lease: float | None = None  # None: the planned duration plus 30 min
    detach: bool = False
    spawn_detached: bool = False  # a detached `inv spawn`: attach takes the servers down at the end
    verbose: bool = False  # every agent's own lines, beside the live view


def run(s: Session, options: RunOptions = RunOptions()) -> RunDir:
    """Start the run on the hosts; unless detached, follow it to its end."""
    deployment = s.deployment()
    if deployment is None or not deployment.nodes:
        raise PipelineError("nothing is deployed: run `inv deploy` first")
    fleet = s.fleet()
    run_dir = begin(fleet, s.spawn, deployment, s.workspace.runs_dir, options, s.echo)
    deployment.runs.append(run_dir.run_id)
    s.save(deployment)
    if options.detach:
        s.echo(f"detached: the run goes on without us. `inv status --run {run_dir.run_id}` shows it, "
               f"`inv attach --run {run_dir.run_id}` follows it and collects it at the end")
        return run_dir
    follow(fleet, run_dir, s.echo, reconnect_for=options.reconnect_for, verbose=options.verbose,
           host_timeout=options.host_timeout)
    return run_dir


def refuse_live_run(fleet: Fleet, hosts: Sequence[str], timeout: float) -> None:
    """A second run on a fleet with a live one is refused, naming it and when it started."""
    try:
        found = fleet.each(lambda h: run_remote(fleet[h], hostrun.live_runs_command(), timeout=timeout), hosts,
                           what="look for a live run")
    except FleetError as exc:
        found = exc.results
    for host, text in found.items():
        for run_id, started in hostrun.parse_live_runs(text):
            raise PipelineError(f"{host} is still running run {run_id}, started {hostrun.started_text(started)}: "
                                f"follow it with `inv attach --run {run_id}`, or stop it with `inv down`")


def begin(fleet: Fleet, spawn: spec.Spawn, deployment: Deployment, runs_dir: Any, options: RunOptions,
          echo: Echo) -> RunDir:
    """Start the run on every host of the fleet; the local run directory."""
    hosts = list(fleet.names)
    lock.take(fleet, f"bench {spawn.name}", echo=echo)  # held until this process ends: no second start
    refuse_live_run(fleet, hosts, options.host_timeout)
    run_dir = RunDir(runs_dir, new_run_id(spawn.name))
    targets = [n.endpoint for n in deployment.masters]
    agent_pex = deployment.artifacts["agent"].remote_path
    coordinator = spawn.hosts.agents[0]
    barrier = hostrun.new_barrier(hosts, coordinator, fleet.address(coordinator))
    lease = options.lease if options.lease is not None else hostrun.default_lease(spawn)
    phases = hostrun.phase_jobs(spawn, run_dir.run_id, targets)
    nodes = [n.to_dict() for n in deployment.nodes]
    plans = hostrun.host_plans(spawn=spawn, run_id=run_dir.run_id, hosts=hosts, targets=targets, agent_pex=agent_pex,
                               nodes=nodes, barrier=barrier, lease_s=lease, host_timeout_s=options.host_timeout,
                               agent_timeout_s=options.agent_timeout,
                               sampler_cap_s=hostrun.planned_seconds(spawn) + options.agent_timeout * len(phases),
                               auth=deployment.redis_password or None, environ=os.environ)
    agents = {h: [{"benchmark": job.benchmark, "agent_num": job.agent_num, "dir": dir_name(job.benchmark),
                   "job": public_job(job)}
                  for _, jobs in phases for host, job in jobs if host == h] for h in hosts}
    shown = [[asdict(p) for p in planned(job for _, job in jobs)] for _, jobs in phases]
    run_dir.start(spawn.source_text, spec.to_dict(spawn), deployment.public_dict(),  # no secrets in runs/
                  {"run_id": run_dir.run_id, "name": spawn.name, "started_at": time.time(), "status": "running",
                   "argv": sys.argv[1:],
                   "host_run": {"hosts": hosts, "coordinator": coordinator, "lease_s": lease,
                                "host_timeout_s": options.host_timeout, "phases": [names for names, _ in phases],
                                "planned": shown,
                                "nodes": nodes, "agents": agents, "detached": options.detach,
                                "spawn_detached": options.spawn_detached}})
    echo(f"run {run_dir.run_id}")
    timeout = max(options.host_timeout, hostrun.START_TIMEOUT_S)
    try:
        started = fleet.each(lambda h: hostrun.start(fleet[h], run_dir.run_id, agent_pex, plans[h], timeout),
                             hosts, what="start the host runs")
    except FleetError as exc:
        stop_started(fleet, run_dir, list(exc.results), str(exc), echo)
        raise PipelineError(f"{exc}\nrun {run_dir.run_id} did not start: "
                            + (f"stopped it on {', '.join(exc.results)} (what they measured is in {run_dir.path})"
                               if exc.results else "it was started nowhere")) from None
    await_visible(fleet, list(started), run_dir.run_id, timeout)
    echo(f"started on {len(started)} host(s): phases run in order on the hosts, coordinated by {coordinator}"
         + (f"; lease {lease:.0f} s" if options.detach else ""))
    return run_dir


def await_visible(fleet: Fleet, hosts: Sequence[str], run_id: str, timeout: float) -> None:
    """Until each started host lists the run as live (its first state.json, written just after it
    printed its pid): from then on a second start is refused by ``refuse_live_run`` even once this
    controller's lock is gone. A host run that died at once is the follower's to report."""
    deadline = time.monotonic() + VISIBLE_WAIT_S
    waiting = list(hosts)
    while waiting and time.monotonic() < deadline:
        try:
            found = fleet.each(lambda h: run_remote(fleet[h], hostrun.live_runs_command(), timeout=timeout), waiting,
                               what="look for the started run")
        except FleetError as exc:
            found = exc.results
        waiting = [h for h in waiting if run_id not in {r for r, _ in hostrun.parse_live_runs(found.get(h, ""))}]
        if waiting:
            time.sleep(0.1)


def stop_started(fleet: Fleet, run_dir: RunDir, started: Sequence[str], error: str, echo: Echo) -> None:
    """The run could not start everywhere: stop it where it did, fetch what those hosts measured
    into the run directory, and record the run as failed to start."""
    if started:
        echo(f"starting the run failed: stopping it on the {len(started)} host(s) already started "
             f"({', '.join(started)})")
        f = follower(fleet, run_dir, echo, renew=True, reconnect_for=STOP_WAIT_S, stream=False, hosts=started)
        f.stop(timeout=f.host_timeout)
        f.follow()
        run_dir.update_meta(lost_hosts=f.lost(), host_statuses=f.statuses(), fetched=all(
            h.finished for h in f.hosts.values()))
    run_dir.update_meta(status="failed", finished_at=time.time(), start_error=error)


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


# -- a run started earlier -----------------------------------------------------------------------


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


def attach(s: Session, run_ref: str | None, reconnect_for: float, verbose: bool = False,
           host_timeout: float | None = None) -> RunDir:
    run_dir = host_run_dir(s.workspace.runs_dir, run_ref)
    hide_secrets(s, run_dir)
    meta = run_dir.meta()
    s.echo(f"attached to run {run_dir.run_id}, started {hostrun.started_text(meta.get('started_at'))}")
    fleet = run_fleet(s, run_dir)
    try:
        follow(fleet, run_dir, s.echo, reconnect_for=reconnect_for, verbose=verbose, host_timeout=host_timeout)
    finally:
        fleet.close()
    return run_dir


def status(s: Session, run_ref: str | None) -> str:
    """Each host's state of the run, read from the hosts (the lease is not renewed)."""
    from tabulate import tabulate

    run_dir = host_run_dir(s.workspace.runs_dir, run_ref)
    meta = run_dir.meta()
    fleet = run_fleet(s, run_dir)
    f = follower(fleet, run_dir, s.echo, renew=False, reconnect_for=0.0, stream=False, write=False)
    try:
        f.fetch_once()
    finally:
        fleet.close()
    rows = []
    for h in f.hosts.values():
        state = h.state or {}
        phase = state.get("phase")
        agents = ", ".join(f"{a['benchmark']}#{a['agent_num']} {a['state']}" for a in state.get("agents", {}).values())
        unreachable = h.gave_up and not h.missing
        rows.append({"host": h.name, "status": "unreachable" if unreachable else (h.status or "no such run"),
                     "phase": f"{phase + 1}/{state.get('phases')}" if isinstance(phase, int) else "-",
                     "agents": agents or "-"})
        rows[-1] = {k: printable(str(v)) for k, v in rows[-1].items()}  # a host's words, never obeyed
    return (f"run {run_dir.run_id}, started {hostrun.started_text(meta.get('started_at'))}\n"
            + tabulate(rows, headers="keys"))
