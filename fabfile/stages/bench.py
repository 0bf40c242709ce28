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

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.spawn import spec
from bench.wire.hostrun import public_job
from fabfile.deployment import Deployment
from fabfile.errors import PipelineError
from fabfile.remote import lock
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import run as run_remote
from fabfile.runs import hostrun, recorded
from fabfile.runs.live import planned
from fabfile.runs.store import RunDir, dir_name, new_run_id
from fabfile.session import Echo, Session
from fabfile.terminal import printable

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
    recorded.follow(fleet, run_dir, s.echo, reconnect_for=options.reconnect_for, verbose=options.verbose,
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
    searched = {b.name for b in spawn.benchmarks if b.search is not None}  # their agents are per step
    agents = {h: [{"benchmark": job.benchmark, "agent_num": job.agent_num, "dir": dir_name(job.benchmark),
                   "job": public_job(job), **({"search": True} if job.benchmark in searched else {})}
                  for _, jobs in phases for host, job in jobs if host == h] for h in hosts}
    # a search shows its seconds step after step: no one duration to count down
    shown = [[asdict(replace(p, duration_s=None) if p.name in searched else p) for p in planned(job for _, job in jobs)]
             for _, jobs in phases]
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
        f = recorded.follower(fleet, run_dir, echo, renew=True, reconnect_for=recorded.STOP_WAIT_S, stream=False,
                              hosts=started)
        f.stop(timeout=f.host_timeout)
        f.follow()
        run_dir.update_meta(lost_hosts=f.lost(), host_statuses=f.statuses(), fetched=all(
            h.finished for h in f.hosts.values()))
    run_dir.update_meta(status="failed", finished_at=time.time(), start_error=error)


# -- a run started earlier -----------------------------------------------------------------------


def attach(s: Session, run_ref: str | None, reconnect_for: float, verbose: bool = False,
           host_timeout: float | None = None) -> RunDir:
    run_dir = recorded.host_run_dir(s.workspace.runs_dir, run_ref)
    recorded.hide_secrets(s, run_dir)
    meta = run_dir.meta()
    s.echo(f"attached to run {run_dir.run_id}, started {hostrun.started_text(meta.get('started_at'))}")
    fleet = recorded.run_fleet(s, run_dir)
    try:
        recorded.follow(fleet, run_dir, s.echo, reconnect_for=reconnect_for, verbose=verbose, host_timeout=host_timeout)
    finally:
        fleet.close()
    return run_dir


def status(s: Session, run_ref: str | None) -> str:
    """Each host's state of the run, read from the hosts (the lease is not renewed)."""
    from tabulate import tabulate

    run_dir = recorded.host_run_dir(s.workspace.runs_dir, run_ref)
    meta = run_dir.meta()
    fleet = recorded.run_fleet(s, run_dir)
    f = recorded.follower(fleet, run_dir, s.echo, renew=False, reconnect_for=0.0, stream=False, write=False)
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
