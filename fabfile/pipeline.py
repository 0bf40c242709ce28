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
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from bench import plan, result, spec, tables
from bench.job import AgentJob
from fabfile import nodes, redis_server, reaper
from fabfile.agents import AgentOutcome, run_agent, stop_agent
from fabfile.build import Artifact, Builder
from fabfile.fleet import Fleet, FleetError
from fabfile.nodes import Node
from fabfile.push import ProgressPrinter, push
from fabfile.remote import REMOTE_DIR, cmd, run
from fabfile.runstore import RunDir, new_run_id, resolve
from fabfile.ssh import SshSettings
from fabfile.state import Deployment
from fabfile import state as state_file

Echo = Callable[[str], None]


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
        self._spawn: Optional[spec.Spawn] = None
        self._fleet: Optional[Fleet] = None

    # -- inputs ------------------------------------------------------------------------

    @property
    def spawn(self) -> spec.Spawn:
        if self._spawn is None:
            self._spawn = spec.load(self.spawn_path)  # raises SpecError before any SSH
        return self._spawn

    def fleet(self, hosts: Optional[Sequence[str]] = None) -> Fleet:
        """The open fleet of every host in the spawn file (or ``hosts``), connected once."""
        if self._fleet is None:
            names = hosts or [*self.spawn.hosts.servers, *self.spawn.hosts.agents]
            started = time.monotonic()
            self._fleet = Fleet(names, self.settings).open()
            self.echo(f"connected to {len(self._fleet.names)} hosts in {time.monotonic() - started:.1f}s")
        return self._fleet

    def deployment(self) -> Optional[Deployment]:
        return state_file.load(self.workspace.state_path)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()
            self._fleet = None

    # -- build + push + start ---------------------------------------------------------

    def build(self) -> Dict[str, Artifact]:
        """Probe every distinct interpreter, then build the server and agent pexes for them."""
        fleet = self.fleet()
        builder = Builder(self.workspace.cache_dir, echo=self.echo)
        by_fingerprint: Dict[str, str] = {}
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
                                     [platform_of[h] for h in self.spawn.hosts.servers]),
            "agent": builder.agent(list(set(platform_of.values()))),
        }
        return artifacts

    def push(self, artifacts: Dict[str, Artifact]) -> Dict[str, List[str]]:
        """Every host gets the agent pex (it also samples host metrics); servers get the server pex."""
        fleet = self.fleet()
        servers = set(self.spawn.hosts.servers)
        progress = ProgressPrinter("pex", echo=self.echo)
        pushed_count = {"sent": 0, "kept": 0}

        def push_host(name: str) -> List[str]:
            wanted = [artifacts["agent"]] + ([artifacts["server"]] if name in servers else [])
            for art in wanted:
                sent = push(fleet[name], art.path, art.remote_path, art.sha256, progress)
                pushed_count["sent" if sent else "kept"] += 1
            return [a.remote_path for a in wanted]

        started = time.monotonic()
        placed = fleet.each(push_host, what="push")
        self.echo(f"pushed {pushed_count['sent']} file(s), {pushed_count['kept']} already in place, "
                  f"in {time.monotonic() - started:.1f}s")
        return placed

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

    def _nodes(self, deployment: Deployment) -> List[Node]:
        return [Node(**n) for n in deployment.nodes]

    def _healthy(self, deployment: Deployment) -> bool:
        fleet = self.fleet()
        try:
            alive = fleet.each(lambda n: nodes.alive(fleet[n.host], n), self._nodes(deployment), what="check servers")
        except Exception:
            return False
        if not all(alive.values()):
            return False
        if deployment.topology == "cluster":
            first = self._nodes(deployment)[0]
            pex = deployment.artifacts["server"]["remote_path"]
            return redis_server.cluster_state(fleet[first.host], pex, first) == "ok"
        return True

    def _start_servers(self, server_pex: Artifact) -> Tuple[List[Dict[str, object]], str]:
        spawn = self.spawn
        fleet = self.fleet()
        cfg = spawn.server
        hosts = list(spawn.hosts.servers)
        cluster = redis_server.use_cluster(cfg.kind, len(hosts), cfg.replicas)
        if cfg.kind == "redis-cluster" and not cluster:
            self.echo(f"note: {len(hosts)} server host(s) is fewer than a Redis Cluster needs "
                      f"({redis_server.CLUSTER_MIN_MASTERS * (1 + cfg.replicas)}); starting standalone redis on {hosts[0]}")
            hosts = hosts[:1]
        if cfg.kind == "redis" and cfg.replicas == 0:
            hosts = hosts[:1]
        planned = [Node(h, fleet.address(h), cfg.port, i, role="master" if (cluster or i == 0) else "replica")
                   for i, h in enumerate(hosts)]
        primary = planned[0]

        def start_one(node: Node) -> Node:
            args = redis_server.server_args(node, cluster=cluster,
                                            replica_of=primary if node.role == "replica" else None)
            pid = nodes.start(fleet[node.host], node, server_pex.remote_path, args)
            return Node(node.host, node.address, node.port, node.index, pid, node.role)

        try:
            started = list(fleet.each(start_one, planned, what="server start").values())
        except FleetError as exc:
            self._stop_quietly(exc.results.values())
            raise
        self.echo(f"started {len(started)} redis-server node(s): "
                  + ", ".join(f"{n.host}={n.endpoint} pid {n.pid}" for n in started))
        pex = server_pex.remote_path
        try:
            fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: redis_server.ping(fleet[n.host], pex, n),
                                                  "redis-server ping"), started, what="server start")
            if cluster:
                redis_server.create_cluster(fleet[primary.host], pex, started, cfg.replicas)
                fleet.each(lambda n: nodes.wait_until(fleet[n.host], n, lambda: redis_server.cluster_state(
                    fleet[n.host], pex, n) == "ok", "cluster_state:ok"), started, what="cluster")
                self.echo(f"redis cluster ok: {len(started)} nodes")
        except BaseException:
            self._stop_quietly(started)  # nothing is left running after a failed start
            raise
        return [n.to_dict() for n in started], ("cluster" if cluster else "standalone")

    def _stop_quietly(self, started: Iterable[Node]) -> None:
        fleet = self.fleet()
        for node in started:
            try:
                nodes.stop(fleet[node.host], node)
            except Exception as exc:  # the original failure matters more; still say this one
                self.echo(f"warning: could not stop {node.host} pid {node.pid}: {exc}")

    def _stop_nodes(self, deployment: Deployment) -> None:
        fleet = self.fleet()
        fleet.each(lambda n: nodes.stop(fleet[n.host], n), self._nodes(deployment), what="stop servers")

    # -- bench ---------------------------------------------------------------------------

    def bench(self, agent_timeout: float = 900.0) -> RunDir:
        deployment = self.deployment()
        if deployment is None or not deployment.nodes:
            raise PipelineError("nothing is deployed: run `inv deploy` first")
        spawn = self.spawn
        fleet = self.fleet()
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
        try:
            for phase in plan.phases(spawn):
                names = ", ".join(b.name for b in phase)
                self.echo(f"benchmark {names} ...")
                jobs: List[Tuple[str, AgentJob]] = []
                for benchmark in phase:
                    jobs += plan.assign(plan.agent_jobs(spawn, benchmark, run_dir.run_id, targets),
                                        spawn.hosts.agents)
                outcomes = self._run_agents(fleet, agent_pex, jobs, run_dir, deployment, agent_timeout)
                if not all(o.ok for o in outcomes):
                    status = "partial"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            run_dir.update_meta(status=status, finished_at=time.time())
        return run_dir

    def _run_agents(self, fleet: Fleet, agent_pex: str, jobs: List[Tuple[str, AgentJob]], run_dir: RunDir,
                    deployment: Deployment, timeout: float) -> List[AgentOutcome]:
        pids: Dict[Tuple[str, int], int] = {}

        def record(outcome: AgentOutcome) -> None:
            body = {"result": outcome.result} if outcome.ok else {"failure": outcome.failure(), "result": outcome.result}
            run_dir.write_agent(outcome.job.benchmark, outcome.job.agent_num, body, outcome.stderr)
            if not outcome.ok:
                self.echo(f"agent {outcome.job.benchmark}#{outcome.job.agent_num} on {outcome.host} failed: "
                          f"{outcome.failure()['error']}")

        def one(item: Tuple[str, AgentJob]) -> AgentOutcome:
            host, job = item
            outcome = run_agent(fleet[host], agent_pex, job, echo=self.echo, timeout=timeout,
                                on_pid=lambda pid: pids.__setitem__((host, job.agent_num), pid))
            record(outcome)
            return outcome

        outcomes: List[AgentOutcome] = []
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 64))) as pool:
            futures: List[Future] = [pool.submit(one, item) for item in jobs]
            try:
                pending = set(futures)
                while pending:  # wait in short slices so Ctrl-C is seen at once
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                self.echo("interrupted: stopping agents (they report what they measured)")
                for (host, _), pid in list(pids.items()):
                    stop_agent(fleet[host], pid)
                wait(futures, timeout=30)
                raise
            for future, (host, job) in zip(futures, jobs):
                try:
                    outcomes.append(future.result())
                except Exception as exc:
                    outcome = AgentOutcome(host, job, error=str(exc))
                    record(outcome)
                    outcomes.append(outcome)
        return outcomes

    # -- collect -------------------------------------------------------------------------

    def collect(self, run_ref: Optional[str] = None, fmt: str = "simple") -> Dict[str, object]:
        run_dir = resolve(self.workspace.runs_dir, run_ref)
        meta = run_dir.meta()
        spawn_data = json.loads((run_dir.path / "spawn.json").read_text())
        by_bench: Dict[str, Tuple[List[dict], List[dict]]] = {}
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
        path = run_dir.write_run(run)
        run_dir.point_latest()
        self.echo(tables.render(run, fmt))
        self.echo(f"\nrun {run_dir.run_id}: {run['status']} -> {path}")
        return run

    # -- down ----------------------------------------------------------------------------

    def down(self, keep_files: bool = False) -> None:
        deployment = self.deployment()
        hosts = list(deployment.hosts) if deployment and deployment.hosts else None
        fleet = self.fleet(hosts)

        def clean(name: str) -> List[int]:
            pids = reaper.reap(fleet[name])
            if not keep_files:
                run(fleet[name], cmd("rm", "-rf", REMOTE_DIR))
            return pids

        stopped = fleet.each(clean, what="down")
        total = sum(len(p) for p in stopped.values())
        self.echo(f"stopped {total} process(es) on {len(stopped)} host(s)"
                  + ("" if keep_files else f"; removed ~/{REMOTE_DIR} on each"))
        state_file.clear(self.workspace.state_path)


def server_script(spawn: spec.Spawn) -> str:
    return spawn.server.script or "redis-server"
