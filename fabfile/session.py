"""The pipeline: deploy, bench, collect, down, composed from the small side-effect modules.

A Session is one ``inv`` call's view of the fleet: the spawn file, the deployment record and
one open connection per host, reused by every task of the call (``inv deploy bench collect``
connects once). Decisions (what to run where, how to merge) come from the pure ``bench``
modules; this module only carries them out.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from bench.report import export, tables
from bench.report import merge as result
from bench.spawn import plan, spec
from bench.wire.job import AgentJob
from fabfile import deployment as state_file
from fabfile.deployment import Deployment
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import REMOTE_DIR, cmd, run
from fabfile.remote.ssh import SshSettings, set_host_timeout
from fabfile.runs import observe
from fabfile.runs.store import RunDir, dir_name, new_run_id, resolve
from fabfile.servers import kinds as servers
from fabfile.servers.nodes import Node
from fabfile.ship import relay
from fabfile.ship.build import Artifact, Builder
from fabfile.ship.push import ProgressPrinter
from fabfile.stages.agents import AgentOutcome, remote_run_dir, run_agent

Echo = Callable[[str], None]

#: Seconds a stopped agent gets to print what it measured before it is killed.
STOP_GRACE_S = 10.0


def say(message: str) -> None:
    print(message, flush=True)


class PipelineError(Exception):
    pass


@dataclass(frozen=True)
class Workspace:
    """Where the controller keeps things, relative to the project directory."""

    root: Path

    @property
    def cache_dir(self) -> Path:
        return self.root / ".fleetbench"

    @property
    def state_path(self) -> Path:
        return self.cache_dir / "state.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def testbed_dir(self) -> Path:
        return self.root / ".testbed"


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Session:
    def __init__(self, workspace: Workspace, spawn_path: Path, settings: SshSettings, echo: Echo = say):
        self.workspace = workspace
        self.spawn_path = spawn_path
        self.settings = settings
        self.echo = echo
        self._spawn: spec.Spawn | None = None
        self._fleet: Fleet | None = None
        self.direct_push = False  # True: every host gets its own copy from us (no relay)

    # -- inputs ------------------------------------------------------------------------

    @property
    def spawn(self) -> spec.Spawn:
        if self._spawn is None:
            self._spawn = spec.load(self.spawn_path)  # raises SpecError before any SSH
        return self._spawn

    def fleet(self, hosts: Sequence[str] | None = None) -> Fleet:
        """The open fleet of every host in the spawn file (or ``hosts``), connected once."""
        if self._fleet is None:
            names = hosts or [*self.spawn.hosts.servers, *self.spawn.hosts.agents]
            started = time.monotonic()
            self._fleet = Fleet(names, self.settings).open()
            self.echo(f"connected to {len(self._fleet.names)} hosts in {time.monotonic() - started:.1f}s")
        return self._fleet

    def deployment(self) -> Deployment | None:
        return state_file.load(self.workspace.state_path)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()
            self._fleet = None

    # -- build + push + start ---------------------------------------------------------

    def build(self) -> dict[str, Artifact]:
        """Probe every distinct interpreter, then build the server and agent pexes for them."""
        fleet = self.fleet()
        builder = Builder(self.workspace.cache_dir, echo=self.echo)
        by_fingerprint: dict[str, str] = {}
        for name in fleet.names:
            by_fingerprint.setdefault(fleet.interpreters[name].fingerprint, name)
        probed = fleet.each(lambda name: builder.probe_platform(fleet[name], fleet.interpreters[name]),
                            by_fingerprint.values(), what="probe interpreter")
        platform_of = {name: probed[by_fingerprint[fleet.interpreters[name].fingerprint]] for name in fleet.names}
        versions = sorted({i.version for i in fleet.interpreters.values()})
        self.echo(f"hosts run python {', '.join(versions)}")
        server = self.spawn.server
        artifacts = {
            "server": builder.server(server.requirements, server_script(self.spawn),
                                     [platform_of[h] for h in self.spawn.hosts.servers],
                                     base_dir=self.spawn_path.parent),
            "agent": builder.agent(list(set(platform_of.values())),
                                   spec.agent_modules(self.spawn, Path(self.spawn_path).parent)),
        }
        return artifacts

    def push(self, artifacts: dict[str, Artifact]) -> dict[str, list[str]]:
        """Every host gets the agent pex (it also samples host metrics); servers get the server pex."""
        fleet = self.fleet()
        server_hosts = set(self.spawn.hosts.servers)
        wanted = {name: [artifacts["agent"]] + ([artifacts["server"]] if name in server_hosts else [])
                  for name in fleet.names}
        started = time.monotonic()
        # 3+ hosts lacking a pex: relayed host to host (one copy over our uplink), else direct.
        sent, kept = relay.deliver(fleet, wanted, relay=not self.direct_push, echo=self.echo,
                                   progress=ProgressPrinter("pex", echo=self.echo))
        self.echo(f"pushed {sent} file(s), {kept} already in place, in {time.monotonic() - started:.1f}s")
        return {name: [a.remote_path for a in arts] for name, arts in wanted.items()}

    def deploy(self) -> Deployment:
        spawn = self.spawn
        fleet = self.fleet()
        artifacts = self.build()
        placed = self.push(artifacts)
        previous = self.deployment()
        digest = _digest({"server": spec.to_dict(spawn)["server"], "servers": list(spawn.hosts.servers),
                          "pex": artifacts["server"].sha256})
        if previous and previous.server_digest == digest and self._healthy(previous):
            self.echo(f"servers already running ({previous.topology}, {len(previous.nodes)} nodes): nothing to restart")
            deployment = previous
        else:
            if previous and previous.nodes:
                self.echo("configuration changed: stopping the previous servers")
                self._stop_nodes(previous)
            deployment = Deployment(spawn_path=str(self.spawn_path), server_digest=digest)
            deployment.nodes, deployment.topology = self._start_servers(artifacts["server"])
        deployment.spawn = spec.to_dict(spawn)
        deployment.artifacts = {k: a.to_dict() for k, a in artifacts.items()}
        deployment.hosts = {n: fleet.interpreters[n].__dict__ for n in fleet.names}
        deployment.pushed = placed
        state_file.save(self.workspace.state_path, deployment)
        return deployment

    def _nodes(self, deployment: Deployment) -> list[Node]:
        return [Node(**n) for n in deployment.nodes]

    def _healthy(self, deployment: Deployment) -> bool:
        kind = servers.kind_for(self.spawn, deployment.artifacts["server"]["remote_path"])
        return servers.healthy(self.fleet(), kind, self._nodes(deployment), deployment.topology)

    def _start_servers(self, server_pex: Artifact) -> tuple[list[dict[str, object]], str]:
        kind = servers.kind_for(self.spawn, server_pex.remote_path)
        started = servers.start(self.fleet(), kind, self.spawn.hosts.servers, self.echo)
        return [n.to_dict() for n in started], kind.topology

    def _stop_nodes(self, deployment: Deployment) -> None:
        servers.stop(self.fleet(), self._nodes(deployment))

    # -- bench ---------------------------------------------------------------------------

    def bench(self, agent_timeout: float = 900.0, host_timeout: float | None = None) -> RunDir:
        """Run every phase; results are written as agents finish, whatever happens to the rest.

        A failed or killed agent, or a host lost mid-run, is recorded with its error and the
        run goes on (status "partial"); Ctrl-C stops this run's agents on every host, keeps
        what they report and re-raises (status "interrupted"). Servers are left as they are.
        ``host_timeout``: seconds of silence after which a host is given up as lost.
        """
        deployment = self.deployment()
        if deployment is None or not deployment.nodes:
            raise PipelineError("nothing is deployed: run `inv deploy` first")
        spawn = self.spawn
        fleet = self.fleet()
        host_timeout = host_timeout or self.settings.host_timeout
        for name in fleet.names:
            set_host_timeout(fleet[name], host_timeout, self.settings.keepalive_s)
        run_dir = RunDir(self.workspace.runs_dir, new_run_id(spawn.name))
        run_dir.start(spawn.source_text, spec.to_dict(spawn), deployment.to_dict(),
                      {"run_id": run_dir.run_id, "name": spawn.name, "started_at": time.time(),
                       "status": "running", "argv": sys.argv[1:]})
        self.echo(f"run {run_dir.run_id}")
        deployment.runs.append(run_dir.run_id)
        state_file.save(self.workspace.state_path, deployment)
        targets = [Node(**n).endpoint for n in deployment.nodes if n.get("role", "master") == "master"]
        agent_pex = deployment.artifacts["agent"]["remote_path"]
        status = "ok"
        failed = 0
        lost: list[str] = []
        # Host metrics from start to finish; a sampler stops by itself if we never stop it.
        observer = observe.Observer(fleet, run_dir, agent_pex, deployment.nodes, echo=self.echo,
                                    cap_s=agent_timeout * len(plan.phases(spawn)) + 600)
        try:
            observer.start()
            for phase in plan.phases(spawn):
                names = ", ".join(b.name for b in phase)
                self.echo(f"benchmark {names} ...")
                jobs: list[tuple[str, AgentJob]] = []
                for benchmark in phase:
                    jobs += plan.assign(plan.agent_jobs(spawn, benchmark, run_dir.run_id, targets),
                                        spawn.hosts.agents)
                outcomes = self._run_agents(fleet, agent_pex, jobs, run_dir, agent_timeout)
                observer.checkpoint()  # this phase's host metrics are on disk now
                failed += sum(1 for o in outcomes if not o.ok)
                if failed:
                    status = "partial"
                for host in dict.fromkeys(h for h, _ in jobs):
                    if host not in lost and not _connected(fleet[host]):
                        lost.append(host)
                        self.echo(f"lost host {host}: no answer for {host_timeout:g}s; "
                                  "its agents are recorded as failed, the other hosts go on")
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            observer.finish(linger=status != "interrupted")
            run_dir.update_meta(status=status, finished_at=time.time(), lost_hosts=lost)
            if status != "ok":
                self.echo(f"run {run_dir.run_id} is {status}: {failed} agent(s) failed"
                          + (f", lost host(s): {', '.join(lost)}" if lost else "")
                          + f"; what finished is in {run_dir.path}")
        return run_dir

    def _run_agents(self, fleet: Fleet, agent_pex: str, jobs: list[tuple[str, AgentJob]], run_dir: RunDir,
                    timeout: float) -> list[AgentOutcome]:
        cancel = threading.Event()  # set after Ctrl-C, once stopped agents had time to report

        def record(outcome: AgentOutcome) -> None:
            body = {"result": outcome.result} if outcome.ok else {"failure": outcome.failure(), "result": outcome.result}
            run_dir.write_agent(outcome.job.benchmark, outcome.job.agent_num, body, outcome.stderr)
            if not outcome.ok:
                self.echo(f"agent {outcome.job.benchmark}#{outcome.job.agent_num} on {outcome.host} failed: "
                          f"{outcome.failure()['error']}")

        def one(item: tuple[str, AgentJob]) -> AgentOutcome:
            host, job = item
            try:
                outcome = run_agent(fleet[host], agent_pex, job, echo=self.echo, timeout=timeout, cancel=cancel)
            except Exception as exc:  # e.g. the channel could not be opened: still a record
                outcome = AgentOutcome(host, job, error=f"{type(exc).__name__}: {exc}")
            record(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 64))) as pool:
            futures: list[Future] = [pool.submit(one, item) for item in jobs]
            try:
                pending = set(futures)
                while pending:  # wait in short slices so Ctrl-C is seen at once
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                try:
                    self.echo("interrupted: stopping this run's agents (they report what they measured)")
                    self._stop_run(fleet, run_dir.run_id, [h for h, _ in jobs])
                    wait(futures, timeout=STOP_GRACE_S)
                finally:  # even on a second Ctrl-C: no thread waits on for its agent
                    cancel.set()
                raise
            return [f.result() for f in futures]

    def _stop_run(self, fleet: Fleet, run_id: str, hosts: Iterable[str]) -> None:
        """TERM every process of this run on ``hosts`` (by working directory, so an agent whose
        pid never reached us is found too), KILL what is left after a grace period."""
        under = remote_run_dir(run_id)
        live = [h for h in dict.fromkeys(hosts) if _connected(fleet[h])]
        try:
            fleet.each(lambda h: reaper.reap(fleet[h], grace_s=STOP_GRACE_S, under=under), live, what="stop agents")
        except FleetError as exc:
            self.echo(f"warning: {exc}")

    # -- collect -------------------------------------------------------------------------

    def collect(self, run_ref: str | None = None, fmt: str = "simple", detail: bool = False) -> dict[str, object]:
        run_dir = resolve(self.workspace.runs_dir, run_ref)
        meta = run_dir.meta()
        if meta.get("status") not in result.STATUSES:  # "interrupted", or "running": the controller died
            meta = {**meta, "status": "partial", "bench_status": meta.get("status"),
                    "finished_at": meta.get("finished_at")}  # None: it never finished
        spawn_data = json.loads((run_dir.path / "spawn.json").read_text())
        by_bench: dict[str, tuple[list[dict], list[dict]]] = {}
        for bench_name, record in run_dir.agent_records():
            ok, failed = by_bench.setdefault(bench_name, ([], []))
            if record.get("result"):  # a partial (fatal or interrupted) result is merged and flagged
                ok.append(record["result"])
            else:
                failed.append(record["failure"])
        ran = spec.parse(spawn_data, name=spawn_data.get("name", "spawn"))
        planned = {b.name: b for phase in plan.phases(ran) for b in phase}  # labels in run order
        labels = [label for label in planned if label in by_bench] + sorted(set(by_bench) - set(planned))
        merged = [result.merge_benchmark(label, *by_bench[label],
                                         workload=planned[label].workload if label in planned else None,
                                         agents=planned[label].agents if label in planned else None)
                  for label in labels]
        deployment = json.loads((run_dir.path / "deployment.json").read_text())
        run = result.build_run({**meta, "spawn": spawn_data, "deployment": deployment}, merged)
        hosts = observe.host_section(run_dir, run)
        if hosts:
            run["hosts"] = hosts
        path = run_dir.write_run(run)
        run_dir.write_exports(export.exports(run, file_stem=dir_name))
        run_dir.point_latest()
        self.echo(tables.report(run, fmt, detail=detail))
        self.echo(f"\nrun {run_dir.run_id}: {run['status']} -> {path}")
        return run

    # -- down ----------------------------------------------------------------------------

    def down(self, keep_files: bool = False) -> None:
        deployment = self.deployment()
        hosts = list(deployment.hosts) if deployment and deployment.hosts else None
        fleet = self.fleet(hosts)

        def clean(name: str) -> list[int]:
            pids = reaper.reap(fleet[name])
            if not keep_files:
                run(fleet[name], cmd("rm", "-rf", REMOTE_DIR))
            return pids

        stopped = fleet.each(clean, what="down")
        total = sum(len(p) for p in stopped.values())
        self.echo(f"stopped {total} process(es) on {len(stopped)} host(s)"
                  + ("" if keep_files else f"; removed ~/{REMOTE_DIR} on each"))
        state_file.clear(self.workspace.state_path)


def _connected(c) -> bool:
    return c.transport is not None and c.transport.is_active()


def server_script(spawn: spec.Spawn) -> str:
    return spawn.server.script or "redis-server"
