"""Bench: run every phase of the spawn file on the agent hosts; results are kept as they come.

A failed or killed agent, or a host lost mid-run, is recorded with its error and the run goes
on (status "partial"); Ctrl-C stops this run's agents on every host, keeps what they report and
re-raises (status "interrupted"). Servers are left as they are.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from fabric import Connection

from bench.spawn import plan, spec
from bench.wire.job import AgentJob
from fabfile.deployment import Deployment
from fabfile.errors import PipelineError
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.ssh import set_host_timeout
from fabfile.runs import observe
from fabfile.runs.live import LiveView, planned
from fabfile.runs.store import RunDir, new_run_id
from fabfile.session import Echo, Session
from fabfile.stages.agents import AgentOutcome, remote_run_dir, run_agent
from fabfile.terminal import scrub, scrub_data

#: Seconds a stopped agent gets to print what it measured before it is killed.
STOP_GRACE_S = 10.0


@dataclass
class _Tally:
    """How the run is going: its status, failed agents and lost hosts so far."""

    status: str = "ok"
    failed: int = 0
    lost: list[str] = field(default_factory=list)


def run(s: Session, agent_timeout: float = 900.0, host_timeout: float | None = None, *,
        verbose: bool = False) -> RunDir:
    """Run every phase; ``host_timeout``: seconds of silence after which a host is given up as lost.
    Each phase is shown live, fleet-wide (fabfile.runs.live); ``verbose``: every agent's lines too."""
    deployment = s.deployment()
    if deployment is None or not deployment.nodes:
        raise PipelineError("nothing is deployed: run `inv deploy` first")
    spawn = s.spawn
    fleet = s.fleet()
    host_timeout = host_timeout or s.settings.host_timeout
    for name in fleet.names:
        set_host_timeout(fleet[name], host_timeout, s.settings.keepalive_s)
    run_dir = _start_run(s, deployment)
    agent_pex = deployment.artifacts["agent"].remote_path
    tally = _Tally()
    # Host metrics from start to finish; a sampler stops by itself if we never stop it.
    observer = observe.Observer(fleet, run_dir, agent_pex, deployment.nodes, echo=s.echo,
                                cap_s=agent_timeout * len(plan.phases(spawn)) + 600)
    try:
        observer.start()
        for phase in plan.phases(spawn):
            s.echo(f"benchmark {', '.join(b.name for b in phase)} ...")
            jobs = _phase_jobs(spawn, phase, run_dir.run_id, deployment)
            outcomes = _run_agents(fleet, agent_pex, jobs, run_dir, agent_timeout, s.echo, verbose,
                                   auth=deployment.redis_password or None)
            observer.checkpoint()  # this phase's host metrics are on disk now
            tally.failed += sum(1 for o in outcomes if not o.ok)
            if tally.failed:
                tally.status = "partial"
            for host in dict.fromkeys(h for h, _ in jobs):
                if host not in tally.lost and not _connected(fleet[host]):
                    tally.lost.append(host)
                    s.echo(f"lost host {host}: no answer for {host_timeout:g}s; "
                           "its agents are recorded as failed, the other hosts go on")
    except KeyboardInterrupt:
        tally.status = "interrupted"
        raise
    finally:
        observer.finish(linger=tally.status != "interrupted")
        run_dir.update_meta(status=tally.status, finished_at=time.time(), lost_hosts=tally.lost)
        if tally.status != "ok":
            s.echo(f"run {run_dir.run_id} is {tally.status}: {tally.failed} agent(s) failed"
                   + (f", lost host(s): {', '.join(tally.lost)}" if tally.lost else "")
                   + f"; what finished is in {run_dir.path}")
    return run_dir


def _start_run(s: Session, deployment: Deployment) -> RunDir:
    """A new run directory with its inputs, and the run recorded in the deployment."""
    spawn = s.spawn
    run_dir = RunDir(s.workspace.runs_dir, new_run_id(spawn.name))
    run_dir.start(spawn.source_text, spec.to_dict(spawn), deployment.public_dict(),  # no secrets in runs/
                  {"run_id": run_dir.run_id, "name": spawn.name, "started_at": time.time(),
                   "status": "running", "argv": sys.argv[1:]})
    s.echo(f"run {run_dir.run_id}")
    deployment.runs.append(run_dir.run_id)
    s.save(deployment)
    return run_dir


def _phase_jobs(spawn: spec.Spawn, phase: Iterable[spec.Benchmark], run_id: str,
                deployment: Deployment) -> list[tuple[str, AgentJob]]:
    """(agent host, job) for every agent of every benchmark of one phase."""
    targets = [n.endpoint for n in deployment.masters]
    jobs: list[tuple[str, AgentJob]] = []
    for benchmark in phase:
        jobs += plan.assign(plan.agent_jobs(spawn, benchmark, run_id, targets), spawn.hosts.agents)
    return jobs


def _run_agents(fleet: Fleet, agent_pex: str, jobs: list[tuple[str, AgentJob]], run_dir: RunDir,
                timeout: float, echo: Echo, verbose: bool = False, auth: str | None = None) -> list[AgentOutcome]:
    cancel = threading.Event()  # set after Ctrl-C, once stopped agents had time to report
    view = LiveView(verbose=verbose)  # what the agents report, fleet-wide, while they run
    view.start_phase(planned(job for _, job in jobs))

    def record(outcome: AgentOutcome) -> None:
        # An agent may echo a secret (an error sample, a log line): none is written down.
        run_dir.write_agent(outcome.job.benchmark, outcome.job.agent_num, scrub_data(outcome.record()),
                            [scrub(line) for line in outcome.stderr])
        view.agent_state((outcome.job.benchmark, outcome.job.agent_num), "done" if outcome.ok else "failed",
                         None if outcome.ok else scrub(str(outcome.failure()["error"])))

    def one(item: tuple[str, AgentJob]) -> AgentOutcome:
        host, job = item
        agent = (job.benchmark, job.agent_num)
        try:
            outcome = run_agent(fleet[host], agent_pex, job, timeout=timeout, cancel=cancel, auth=auth,
                                echo=lambda line: view.agent_line(agent, host, scrub(line)),
                                on_record=lambda second: view.feed(agent, host, second))
        except Exception as exc:  # e.g. the channel could not be opened: still a record
            outcome = AgentOutcome(host, job, error=f"{type(exc).__name__}: {exc}")
        record(outcome)
        return outcome

    try:
        return _wait_agents(fleet, jobs, run_dir, one, cancel, echo)
    finally:
        view.end_phase()


def _wait_agents(fleet: Fleet, jobs: list[tuple[str, AgentJob]], run_dir: RunDir,
                 one: Callable[[tuple[str, AgentJob]], AgentOutcome], cancel: threading.Event,
                 echo: Echo) -> list[AgentOutcome]:
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 64))) as pool:
        futures: list[Future[AgentOutcome]] = [pool.submit(one, item) for item in jobs]
        try:
            pending = set(futures)
            while pending:  # wait in short slices so Ctrl-C is seen at once
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            try:
                echo("interrupted: stopping this run's agents (they report what they measured)")
                _stop_run(fleet, run_dir.run_id, [h for h, _ in jobs], echo)
                wait(futures, timeout=STOP_GRACE_S)
            finally:  # even on a second Ctrl-C: no thread waits on for its agent
                cancel.set()
            raise
        return [f.result() for f in futures]


def _stop_run(fleet: Fleet, run_id: str, hosts: Iterable[str], echo: Echo) -> None:
    """TERM every process of this run on ``hosts`` (by working directory, so an agent whose
    pid never reached us is found too), KILL what is left after a grace period."""
    under = remote_run_dir(run_id)
    live = [h for h in dict.fromkeys(hosts) if _connected(fleet[h])]
    try:
        fleet.each(lambda h: reaper.reap(fleet[h], grace_s=STOP_GRACE_S, under=under), live, what="stop agents")
    except FleetError as exc:
        echo(f"warning: {exc}")


def _connected(c: Connection) -> bool:
    return c.transport is not None and c.transport.is_active()
