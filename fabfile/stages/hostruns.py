"""bench, status, attach and collect of a run that lives on the hosts.

``begin`` refuses a fleet that already has a live run, records the run locally, hands every
host its plan and starts the host runs (fabfile.runs.hostrun); ``follow`` streams them until
they end (fabfile.stages.follow), with Ctrl-C stopping the run everywhere; ``fetch`` is
collect's one pass over the hosts for what a dead or detached controller did not get.
``meta.json`` holds what a later ``inv`` call needs to find the run again (its hosts, nodes,
the agent pex, whether a detached ``spawn`` still owes a ``down``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.spawn import spec
from fabfile.deployment import Deployment
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import run
from fabfile.runs import hostrun
from fabfile.runs.store import RunDir, dir_name, new_run_id
from fabfile.servers.nodes import Node
from fabfile.stages.follow import Follower

Echo = Callable[[str], None]
STOP_WAIT_S = 30.0  # after Ctrl-C: how long the stopped hosts get to report what they measured


@dataclass(frozen=True)
class RunOptions:
    agent_timeout: float = 900.0
    host_timeout: float = 30.0
    reconnect_for: float = 600.0
    lease: float | None = None  # None: the planned duration plus 30 min
    detach: bool = False
    spawn_detached: bool = False  # a detached `inv spawn`: attach takes the servers down at the end


def refuse_live_run(fleet: Fleet, hosts: Sequence[str], timeout: float) -> None:
    try:
        found = fleet.each(lambda h: run(fleet[h], hostrun.live_runs_command(), timeout=timeout), hosts,
                           what="look for a live run")
    except FleetError as exc:
        found = exc.results
    for host, text in found.items():
        for run_id, started in hostrun.parse_live_runs(text):
            raise hostrun.HostRunError(
                f"{host} is still running run {run_id}, started {hostrun.started_text(started)}: "
                f"follow it with `inv attach --run {run_id}`, or stop it with `inv down`")


def begin(fleet: Fleet, spawn: spec.Spawn, deployment: Deployment, runs_dir: Any, options: RunOptions,
          echo: Echo) -> RunDir:
    """Start the run on every host of the fleet; the local run directory."""
    hosts = list(fleet.names)
    refuse_live_run(fleet, hosts, options.host_timeout)
    run_dir = RunDir(runs_dir, new_run_id(spawn.name))
    targets = [Node(**n).endpoint for n in deployment.nodes if n.get("role", "master") == "master"]
    agent_pex = deployment.artifacts["agent"]["remote_path"]
    coordinator = spawn.hosts.agents[0]
    barrier = hostrun.new_barrier(hosts, coordinator, fleet.address(coordinator))
    lease = options.lease if options.lease is not None else hostrun.default_lease(spawn)
    phases = hostrun.phase_jobs(spawn, run_dir.run_id, targets)
    plans = hostrun.host_plans(spawn=spawn, run_id=run_dir.run_id, hosts=hosts, targets=targets, agent_pex=agent_pex,
                               nodes=deployment.nodes, barrier=barrier, lease_s=lease,
                               host_timeout_s=options.host_timeout, agent_timeout_s=options.agent_timeout,
                               sampler_cap_s=hostrun.planned_seconds(spawn) + options.agent_timeout * len(phases)
                               + lease)
    run_dir.start(spawn.source_text, spec.to_dict(spawn), deployment.to_dict(),
                  {"run_id": run_dir.run_id, "name": spawn.name, "started_at": time.time(), "status": "running",
                   "argv": sys.argv[1:],
                   "host_run": {"hosts": hosts, "coordinator": coordinator, "lease_s": lease,
                                "host_timeout_s": options.host_timeout, "phases": [names for names, _ in phases],
                                "nodes": list(deployment.nodes), "agent_pex": agent_pex,
                                "agents": {h: [{"benchmark": j.benchmark, "agent_num": j.agent_num,
                                                "dir": dir_name(j.benchmark)} for _, jobs in phases
                                               for host, j in jobs if host == h] for h in hosts},
                                "detached": options.detach, "spawn_detached": options.spawn_detached}})
    echo(f"run {run_dir.run_id}")
    started = fleet.each(lambda h: hostrun.start(fleet[h], run_dir.run_id, agent_pex, plans[h], options.host_timeout),
                         hosts, what="start the host runs")
    echo(f"started on {len(started)} host(s): phases run in order on the hosts, coordinated by {coordinator}"
         + (f"; lease {lease:.0f} s" if options.detach else ""))
    return run_dir


def follower(fleet: Fleet, run_dir: RunDir, echo: Echo, *, renew: bool, reconnect_for: float,
             host_timeout: float | None = None, stream: bool = True) -> Follower:
    meta = run_dir.meta()["host_run"]
    return Follower(fleet, run_dir, meta["hosts"], nodes=meta.get("nodes", []), expected=meta.get("agents", {}),
                    echo=echo, renew=renew,
                    reconnect_for=reconnect_for, host_timeout=host_timeout or float(meta.get("host_timeout_s", 30)),
                    stream=stream)


def follow(fleet: Fleet, run_dir: RunDir, echo: Echo, *, reconnect_for: float) -> str:
    """Follow the run until it ends on every host; Ctrl-C stops it everywhere (what was measured
    is kept) and re-raises. The bench status: ok, stopped, abandoned, interrupted or partial."""
    f = follower(fleet, run_dir, echo, renew=True, reconnect_for=reconnect_for)
    try:
        f.follow()
    except KeyboardInterrupt:
        try:
            echo("interrupted: stopping the run on every host (what the agents measured is kept)")
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
    status = forced or _bench_status(statuses, lost)
    run_dir.update_meta(status=status, finished_at=time.time(), lost_hosts=lost, clock=f.clock(),
                        host_statuses=statuses)
    if status != "ok":
        echo(f"run {run_dir.run_id} is {status}" + (f"; lost host(s): {', '.join(lost)}" if lost else "")
             + f"; what finished is in {run_dir.path}")
    return status


def _bench_status(statuses: Mapping[str, str | None], lost: Sequence[str]) -> str:
    values = set(statuses.values())
    if "abandoned" in values:
        return "abandoned"
    if "stopped" in values:
        return "stopped"
    return "partial" if lost or "failed" in values else "ok"


def fetch(fleet: Fleet, run_dir: RunDir, echo: Echo) -> None:
    """collect's pass over the hosts of a run that lives there: fetch what they finished."""
    meta = run_dir.meta()
    f = follower(fleet, run_dir, echo, renew=False, reconnect_for=0.0, stream=False)
    f.fetch_once()
    statuses = f.statuses()
    running = [h for h, s in statuses.items() if s == "running"]
    unreachable = [h.name for h in f.hosts.values() if h.gave_up]
    if running:
        echo(f"still running on {', '.join(running)}: collecting what has finished "
             f"(`inv attach --run {run_dir.run_id}` follows it to the end)")
    for name in unreachable:
        echo(f"warning: {name}: {f.hosts[name].gave_up}; its results stay on it for a later `inv collect`")
    changes: dict[str, Any] = {"clock": {**meta.get("clock", {}), **f.clock()},
                               "host_statuses": {**meta.get("host_statuses", {}), **statuses}}
    if meta.get("status") == "running" and all(s in hostrun.TERMINAL for s in statuses.values()):
        changes.update(status=_bench_status(statuses, []), finished_at=time.time())
    changes["lost_hosts"] = unreachable
    run_dir.update_meta(**changes)


def status_rows(f: Follower) -> list[dict[str, Any]]:
    rows = []
    for h in f.hosts.values():
        state = h.state or {}
        agents = state.get("agents", {})
        phase = state.get("phase")
        rows.append({"host": h.name, "status": h.gave_up and "unreachable" or state.get("status", "no run"),
                     "phase": f"{phase + 1}/{state.get('phases')}" if isinstance(phase, int) else "-",
                     "agents": ", ".join(f"{a['benchmark']}#{a['agent_num']} {a['state']}" for a in agents.values())
                     or "-"})
    return rows
