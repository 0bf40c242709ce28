"""``inv perf``: fleetbench's own benchmark suite, on a testbed of its own.

Every figure but one is a ratio of two things measured side by side in the same run, on the
same testbed and machine, so that a shared or slow machine moves both sides together. Each
side is the best of a few repetitions (the least noisy estimate on a busy machine).

=============================  ====================================================  =======
figure                         what is divided by what                               goal
=============================  ====================================================  =======
fanout_ratio                   push a 10 MB pex to 16 hosts / to 1 host, with the    <= 1.5
                               controller's uplink shaped to 20 mbit (tc tbf); what
                               ``Session.push`` does: presence check, then relay
                               (16 hosts) or a direct push (1 host)
push_vs_openssh                our push's throughput on the session's connection /   >= 1.0
                               ``ssh host 'cat > f' < file`` (OpenSSH, as typed,
                               with its own connect), 32 MiB, unshaped
noop_deploy_ratio              wall time of a second ``inv deploy`` / the first      <= 0.1
                               (8 hosts, fresh hosts, pexes already built)
agent_vs_redis_benchmark_p1    one agent process's SET ops/s / redis-benchmark's     >= 0.8
agent_vs_redis_benchmark_p16   (one thread), 50 connections, pipeline 1 and 16,      >= 0.5
                               both on the server's host
fanout_32_vs_1                 connect + a status command on 32 hosts / on 1 host    <= 3
merge_1000_s                   seconds to merge 1,000 agent results into a run and   < 1 s
                               render its table (absolute)
=============================  ====================================================  =======

The testbed's hosts share this machine's cores: work each host does itself (sshd's key
exchange, a Python starting) is serialised onto those cores by construction, which a real
fleet of machines would do in parallel. Ratios that scale with hosts are therefore upper
bounds of what the controller alone costs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.report import merge as result
from bench.report import tables
from bench.spawn import plan, spec
from bench.wire import hist
from bench.wire.result import RESULT_SCHEMA, AgentResult
from fabfile.dev.testbed import Testbed
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import REMOTE_DIR, cmd, private_dir_command, run
from fabfile.remote.ssh import SshSettings
from fabfile.servers import nodes
from fabfile.servers import redis as redis_server
from fabfile.servers.nodes import Node
from fabfile.ship import relay
from fabfile.ship.push import push, sha256_file
from fabfile.stages.agents import run_agent

REPO = Path(__file__).resolve().parents[2]

#: figure -> (comparison, goal)
GOALS: dict[str, tuple[str, float]] = {
    "fanout_ratio": ("<=", 1.5),
    "push_vs_openssh": (">=", 1.0),
    "noop_deploy_ratio": ("<=", 0.1),
    "agent_vs_redis_benchmark_p1": (">=", 0.8),
    "agent_vs_redis_benchmark_p16": (">=", 0.5),
    "fanout_32_vs_1": ("<=", 3.0),
    "merge_1000_s": ("<", 1.0),
}
FIGURES = tuple(GOALS)

UPLINK = "20mbit"
FANOUT_HOSTS = 16
FANOUT_BYTES = 10_000_000
PUSH_BYTES = 32 * 1024 * 1024
DEPLOY_HOSTS = 8
AGENT_PORT = 7400
AGENT_SECONDS = 4.0
KEYSPACE = 100_000
VALUE_SIZE = 64
CONNECTIONS = 50

Echo = Callable[[str], None]


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PerfError(Exception):
    pass


@dataclass
class Figure:
    key: str
    value: float
    detail: str  # how it was measured, with both sides' figures
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        op, goal = GOALS[self.key]
        return {"<=": self.value <= goal, ">=": self.value >= goal, "<": self.value < goal}[op]


def best(samples: Sequence[float], *, high: bool = False) -> float:
    return max(samples) if high else min(samples)


def timed(fn: Callable[[], Any]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


# -- merging (no testbed) ------------------------------------------------------------------------


def synthetic_results(count: int, seed: int = 1) -> list[AgentResult]:
    """``count`` agent results of one 10-second benchmark, each with its own histogram."""
    rng = random.Random(seed)
    out: list[AgentResult] = []
    for num in range(count):
        h = hist.new()
        for _ in range(300):  # ~300 distinct latencies per agent, 3,000 ops
            h.record_value(int(rng.lognormvariate(5.5, 0.6)) + 1, 10)
        out.append({"schema": RESULT_SCHEMA, "run_id": "perf", "benchmark": "set", "workload": "set",
                    "agent_num": num, "agents": count, "host": f"h{num % 32 + 1}", "python": "3.11.2",
                    "fleetbench": "perf", "event_loop": "asyncio", "started_at": 0.0, "elapsed_s": 10.0,
                    "ops": 3000, "errors": 0,
                    "error_samples": [], "histograms": {"latency_us": hist.encode(h)},
                    "timeseries": [{"t": t, "ops": 300, "errors": 0, "p50": 250, "p99": 900} for t in range(10)],
                    "job": {}})
    return out


def merge_figure(count: int = 1000, reps: int = 3) -> Figure:
    results = synthetic_results(count)
    meta = {"run_id": "perf", "name": "perf", "status": "ok", "started_at": 0.0, "finished_at": 10.0,
            "spawn": {}, "deployment": {}}

    def merge() -> None:
        entry = result.merge_benchmark("set", results, [], workload="set", agents=count)
        tables.render(result.build_run(meta, [entry]))

    seconds = best([timed(merge) for _ in range(reps)])
    return Figure("merge_1000_s", seconds, f"{count} results merged and rendered in {seconds:.3f}s",
                  {"results": count, "seconds": seconds})


# -- the suite on a testbed ----------------------------------------------------------------------


class Suite:
    """Brings up its own testbed (``prefix``/``subnet``), measures, and takes it down."""

    def __init__(self, root: Path, *, prefix: str = "pf", subnet: int = 243, hosts: int = 32,
                 echo: Echo = stderr):
        if hosts < max(FANOUT_HOSTS, DEPLOY_HOSTS):
            raise PerfError(f"the suite needs at least {max(FANOUT_HOSTS, DEPLOY_HOSTS)} hosts")
        self.state = root / ".fleetbench" / "perf"
        self.project = self.state / "project"
        self.testbed = Testbed(self.state / "testbed", prefix=prefix, subnet=subnet)
        self.count = hosts
        self.names = [f"{prefix}{i}" for i in range(1, hosts + 1)]
        self.echo = echo
        self.settings = SshSettings((self.testbed.ssh_config_path,))
        self.scratch = Path(tempfile.mkdtemp(prefix="fleetbench-perf-"))
        self.errors: dict[str, str] = {}  # figure -> why it could not be measured

    def run(self, only: Sequence[str] = FIGURES, keep: bool = False) -> list[Figure]:
        """The figures in ``only`` (in FIGURES order). A figure that cannot be measured is
        left out and its reason kept in ``self.errors``: the others still count."""
        unknown = sorted(set(only) - set(FIGURES))
        if unknown:
            raise PerfError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
        wanted = set(only)
        figures: list[Figure] = []

        def measure(keys: Sequence[str], what: str, fn: Callable[[], Any]) -> Any:
            keys = [k for k in keys if k in wanted]
            if not keys:
                return None
            try:
                out = self._step(what, fn)
            except Exception as exc:  # one figure's failure is reported, the suite goes on
                self.errors.update({k: f"{type(exc).__name__}: {exc}" for k in keys})
                self.echo(f"perf: {what} failed: {exc}")
                return None
            got = out if isinstance(out, list) else [out]
            figures.extend(f for f in got if f.key in keys)
            return out

        agents = ["agent_vs_redis_benchmark_p1", "agent_vs_redis_benchmark_p16"]
        try:
            measure(["merge_1000_s"], "merging 1,000 results", merge_figure)
            if wanted - {"merge_1000_s"}:
                self._step(f"testbed: {self.count} hosts ({self.testbed.prefix}, 10.213.{self.testbed.subnet}.0/24)",
                           lambda: self.testbed.up(self.count))
            measure(["fanout_32_vs_1"], "status across 32 hosts vs 1", self.status_figure)
            measure(["push_vs_openssh"], "push vs OpenSSH", self.push_figure)
            # The agents run against the deployment's pexes: they need a deploy, measured or not.
            deployed = measure(["noop_deploy_ratio", *agents], "inv deploy twice, 8 hosts", self.deploy_figure)
            if deployed is not None:
                measure(agents, "agent vs redis-benchmark", self.agent_figures)
                self._step("inv down", lambda: self._inv("down", "--spawn", "spawn.toml"))
            elif wanted & set(agents):
                self.errors.update({k: "no deployment to run the agent from (inv deploy failed)"
                                    for k in agents if k in wanted})
            measure(["fanout_ratio"], f"fan-out, uplink {UPLINK}", self.fanout_figure)
        finally:
            if not keep:
                self.testbed.down()
                shutil.rmtree(self.project, ignore_errors=True)  # the deploy's scratch project
            shutil.rmtree(self.scratch, ignore_errors=True)
        order = {k: i for i, k in enumerate(FIGURES)}
        return sorted(figures, key=lambda f: order[f.key])

    def _step(self, what: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"perf: {what} ...")
        started = time.monotonic()
        out = fn()
        self.echo(f"perf: {what}: {time.monotonic() - started:.1f}s")
        return out

    def _fleet(self, names: Sequence[str]) -> Fleet:
        fleet = Fleet(names, self.settings)
        fleet.connect()
        return fleet

    def _blob(self, name: str, size: int) -> Path:
        path = self.scratch / name
        if not path.exists():
            path.write_bytes(os.urandom(size))
        return path

    # -- fanout_32_vs_1 ---------------------------------------------------------------------------

    def status_figure(self, reps: int = 5) -> Figure:
        """What a fresh ``inv`` call pays to look at the fleet: connect (in parallel, bounded)
        and ask each host for its processes of ours. For the record, also a trivial command
        over connections already open (every task after the first in one ``inv`` call), and
        the CPU the 32-host status cost us and the hosts (which share this machine's cores)."""
        def status(names: Sequence[str]) -> tuple[float, float, float, float]:
            hosts_cpu, our_cpu = self._hosts_cpu(), time.process_time()
            started = time.monotonic()
            fleet = Fleet(names, self.settings)
            fleet.connect(lambda h: reaper.our_pids(fleet[h]), what="status")
            seconds = time.monotonic() - started
            our_cpu = time.process_time() - our_cpu
            again = timed(lambda: fleet.each(lambda h: run(fleet[h], "true"), what="true"))
            fleet.close()
            time.sleep(0.2)  # the hosts' sshd reap their sessions: their CPU is then counted
            return seconds, again, our_cpu, self._hosts_cpu() - hosts_cpu

        one: list[tuple[float, float, float, float]] = []
        many: list[tuple[float, float, float, float]] = []
        for _ in range(reps):  # interleaved: a busy spell on the machine hits both sides
            one.append(status(self.names[:1]))
            many.append(status(self.names[:32]))
        first, more = best([r[0] for r in one]), best([r[0] for r in many])
        open_first, open_more = best([r[1] for r in one]), best([r[1] for r in many])
        cpu = min(many, key=lambda r: r[0])
        # The testbed's hosts log in on this machine's cores: the CPU the 32 logins took (ours
        # and the hosts' sshd) sets a least wall time no controller could beat here.
        cores = os.cpu_count() or 1
        floor = (cpu[2] + cpu[3]) / cores
        return Figure("fanout_32_vs_1", more / first,
                      f"32 hosts {more:.3f}s / 1 host {first:.3f}s; the 32 logins took {cpu[2] + cpu[3]:.2f}s of CPU "
                      f"(ours {cpu[2]:.2f}s, the hosts' sshd {cpu[3]:.2f}s), at least {floor:.2f}s on {cores} cores; "
                      f"over open connections `true` x32 {open_more:.3f}s / x1 {open_first:.3f}s",
                      {"one_s": [r[0] for r in one], "many_s": [r[0] for r in many],
                       "open_one_s": [r[1] for r in one], "open_many_s": [r[1] for r in many],
                       "open_command_32_vs_1": open_more / open_first, "controller_cpu_s": cpu[2], "hosts_cpu_s": cpu[3],
                       "cpu_bound_floor_s": floor, "of_cpu_bound_floor": more / floor})

    def _hosts_cpu(self) -> float:
        """CPU seconds the testbed's sshd (each host's pid 1) and its reaped children used."""
        total = 0
        for host in self.testbed.hosts():
            try:
                with open(f"/proc/{host.sshd_pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    # -- push_vs_openssh ----------------------------------------------------------------------------

    def push_figure(self, reps: int = 3) -> Figure:
        blob = self._blob("push.bin", PUSH_BYTES)
        digest = sha256_file(blob)
        host = self.names[0]
        fleet = self._fleet([host])
        c = fleet[host]
        ours_path = f"{REMOTE_DIR}/perf/push.bin"
        theirs_path = f"{REMOTE_DIR}/perf/openssh.bin"
        run(c, private_dir_command("perf"))
        ssh = ["ssh", "-F", str(self.testbed.ssh_config_path), "-o", "BatchMode=yes"]
        control = self.scratch / "mux"
        mux = [*ssh, "-o", f"ControlPath={control}"]

        def ours() -> float:
            run(c, cmd("rm", "-f", ours_path))
            return timed(lambda: push(c, blob, ours_path, digest))

        def openssh(argv: list[str]) -> float:
            run(c, cmd("rm", "-f", theirs_path))
            with open(blob, "rb") as fh:
                return timed(lambda: subprocess.run([*argv, host, f"cat > {theirs_path}"], stdin=fh, check=True))

        mine: list[float] = []
        theirs: list[float] = []
        muxed: list[float] = []
        try:
            for _ in range(reps):
                mine.append(ours())
                theirs.append(openssh(ssh))
            # For the record: OpenSSH over an already open (multiplexed) connection, like ours.
            subprocess.run([*mux, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-N", "-f", host], check=True)
            muxed = [openssh(mux) for _ in range(reps)]
        finally:
            subprocess.run([*mux, "-O", "exit", host], capture_output=True)
            run(c, cmd("rm", "-rf", f"{REMOTE_DIR}/perf"), check=False)
            fleet.close()
        mb = PUSH_BYTES / 1e6
        ratio = best(theirs) / best(mine)
        return Figure("push_vs_openssh", ratio,
                      f"ours {mb / best(mine):.0f} MB/s / ssh 'cat > f' {mb / best(theirs):.0f} MB/s "
                      f"(ssh over an open mux: {mb / best(muxed):.0f} MB/s)",
                      {"bytes": PUSH_BYTES, "ours_s": mine, "openssh_s": theirs, "openssh_mux_s": muxed,
                       "vs_openssh_mux": best(muxed) / best(mine)})

    # -- noop_deploy_ratio ------------------------------------------------------------------------

    def _inv(self, *args: str) -> str:
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args,
                "--ssh-config", str(self.testbed.ssh_config_path)]
        proc = subprocess.run(argv, cwd=self.project, capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise PerfError(f"`inv {' '.join(args)}` failed (exit {proc.returncode}) in {self.project}:\n"
                            + (proc.stdout + proc.stderr)[-3000:])
        return proc.stdout

    def deploy_figure(self) -> Figure:
        """A user's first ``inv deploy`` (fresh project and hosts: probes, builds, pushes, starts
        the cluster), then the same again (nothing changed). For the record, a first deploy
        whose pexes are already built is timed too (fresh hosts again)."""
        hosts = self.names[:DEPLOY_HOSTS]
        shutil.rmtree(self.project, ignore_errors=True)
        self.project.mkdir(parents=True)
        (self.project / "spawn.toml").write_text(deploy_spawn(hosts))
        self._clean(hosts)
        outputs: list[str] = []
        first = timed(lambda: outputs.append(self._inv("deploy", "--spawn", "spawn.toml")))
        second = timed(lambda: outputs.append(self._inv("deploy", "--spawn", "spawn.toml")))
        self._inv("down", "--spawn", "spawn.toml")
        warm = timed(lambda: outputs.append(self._inv("deploy", "--spawn", "spawn.toml")))
        noop = outputs[1]
        facts = {"pushed_nothing": "pushed 0 file(s)" in noop, "restarted_nothing": "nothing to restart" in noop,
                 "built_nothing": "building" not in noop}
        if not all(facts.values()):
            self.echo("perf: warning: the second deploy was not a no-op:\n" + noop)
        return Figure("noop_deploy_ratio", second / first,
                      f"second deploy {second:.2f}s / first {first:.2f}s ({DEPLOY_HOSTS} hosts; "
                      f"a first deploy with pexes built: {warm:.2f}s)",
                      {"first_s": first, "second_s": second, "first_prebuilt_s": warm,
                       "noop_vs_prebuilt_first": second / warm, **facts, "second_output": noop[-2000:]})

    def _clean(self, hosts: Sequence[str]) -> None:
        """Fresh hosts: nothing of ours running, no files."""
        fleet = Fleet(hosts, self.settings)
        fleet.connect(lambda h: (reaper.reap(fleet[h]), run(fleet[h], cmd("rm", "-rf", REMOTE_DIR))), what="clean")
        fleet.close()

    # -- agent_vs_redis_benchmark -----------------------------------------------------------------

    def agent_figures(self, reps: int = 3) -> list[Figure]:
        state = json.loads((self.project / ".fleetbench" / "state.json").read_text())
        server_pex = state["artifacts"]["server"]["remote_path"]
        agent_pex = state["artifacts"]["agent"]["remote_path"]
        host = self.names[0]
        fleet = self._fleet([host])
        c = fleet[host]
        node = Node(host, fleet.address(host), AGENT_PORT, 0)
        node = replace(node, pid=nodes.start(c, node, server_pex, redis_server.server_args(node, cluster=False)))
        figures = []
        try:
            nodes.wait_until(c, node, lambda: redis_server.ping(c, server_pex, node), "redis-server ping")
            for pipeline in (1, 16):
                rb: list[float] = []
                ours: list[float] = []
                requests = self._calibrate(c, node, pipeline)
                for rep in range(reps):
                    rb.append(redis_benchmark(c, node, pipeline, requests))
                    ours.append(self._agent(c, agent_pex, node, pipeline, rep))
                ratio = best(ours, high=True) / best(rb, high=True)
                figures.append(Figure(f"agent_vs_redis_benchmark_p{pipeline}", ratio,
                                      f"agent {best(ours, high=True):,.0f} ops/s / redis-benchmark "
                                      f"{best(rb, high=True):,.0f} ops/s (SET, {CONNECTIONS} conns, P={pipeline})",
                                      {"agent_ops_s": ours, "redis_benchmark_ops_s": rb, "requests": requests}))
        finally:
            nodes.stop(c, node)
            fleet.close()
        return figures

    def _calibrate(self, c, node: Node, pipeline: int) -> int:
        """How many requests take redis-benchmark about AGENT_SECONDS, from a short run."""
        quick = redis_benchmark(c, node, pipeline, 20_000 * pipeline)
        return max(50_000, int(quick * AGENT_SECONDS))

    def _agent(self, c, agent_pex: str, node: Node, pipeline: int, rep: int) -> float:
        job = agent_job(node.endpoint, pipeline, f"perf-p{pipeline}-{rep}")
        outcome = run_agent(c, agent_pex, job, echo=self.echo, timeout=AGENT_SECONDS * 10 + 60)
        if not outcome.ok or not outcome.result:
            raise PerfError(f"the agent failed on {node.host}: {outcome.failure()['error']}")
        return outcome.result["ops"] / outcome.result["elapsed_s"]

    # -- fanout_ratio -------------------------------------------------------------------------------

    def fanout_figure(self, reps: int = 2) -> Figure:
        blob = self._blob("fanout.pex", FANOUT_BYTES)
        digest = sha256_file(blob)
        self.testbed.up(self.count, uplink=UPLINK)
        names = self.names[:FANOUT_HOSTS]
        fleet = Fleet(names, self.settings)
        fleet.connect(lambda h: run(fleet[h], private_dir_command("perf")))
        messages: list[str] = []
        try:
            one: list[float] = []
            many: list[float] = []
            for rep in range(reps):
                for targets, samples in ((names[:1], one), (names, many)):
                    artifact = relay.File(f"fanout{rep}", blob, digest, f"{REMOTE_DIR}/perf/fanout{rep}.pex")
                    fleet.each(lambda h: run(fleet[h], cmd("rm", "-f", artifact.remote_path)), targets)
                    samples.append(timed(lambda: relay.deliver(
                        fleet, {h: [artifact] for h in targets}, echo=messages.append)))
        finally:
            fleet.each(lambda h: run(fleet[h], cmd("rm", "-rf", f"{REMOTE_DIR}/perf"), check=False))
            fleet.close()
            self.testbed.up(self.count)  # unshaped again
        ratio = best(many) / best(one)
        return Figure("fanout_ratio", ratio,
                      f"{FANOUT_HOSTS} hosts {best(many):.2f}s / 1 host {best(one):.2f}s "
                      f"({FANOUT_BYTES / 1e6:.0f} MB, uplink {UPLINK})",
                      {"one_s": one, "many_s": many, "bytes": FANOUT_BYTES, "uplink": UPLINK,
                       "messages": [m for m in messages if not m.startswith("  ")]})


def deploy_spawn(hosts: Sequence[str]) -> str:
    """A Redis Cluster on the first 3 hosts, the rest agents: the default demo's shape."""
    servers, agents = hosts[:3], hosts[3:]
    return (
        'name = "perf-deploy"\n[hosts]\n'
        f"servers = {json.dumps(list(servers))}\nagents = {json.dumps(list(agents))}\n"
        '[server]\nkind = "redis-cluster"\nport = 7100\n'
        '[[benchmark]]\nname = "set"\nworkload = "set"\nagents = 1\niterations = 1000\n'
    )


def agent_job(endpoint: str, pipeline: int, run_id: str):
    """One agent: SET, CONNECTIONS connections, ``pipeline`` deep, for AGENT_SECONDS."""
    parsed = spec.parse({
        "name": "perf", "hosts": {"servers": ["h"], "agents": ["h"]}, "server": {"kind": "redis", "port": AGENT_PORT},
        "benchmark": [{"name": f"set-p{pipeline}", "workload": "set", "agents": 1, "duration": f"{AGENT_SECONDS}s",
                       "connections": CONNECTIONS, "pipeline": pipeline,
                       "params": {"keyspace": KEYSPACE, "value_size": VALUE_SIZE}}],
    })
    [job] = plan.agent_jobs(parsed, parsed.benchmarks[0], run_id, [endpoint])
    return job


def redis_benchmark(c, node: Node, pipeline: int, requests: int) -> float:
    """redis-benchmark's SET ops/s (one thread) on the server's host, keys and values like ours."""
    out = run(c, cmd("redis-benchmark", "-h", node.address, "-p", node.port, "-c", CONNECTIONS, "-P", pipeline,
                     "-t", "set", "-n", requests, "-r", KEYSPACE, "-d", VALUE_SIZE, "--csv"), timeout=300)
    rows = list(csv.DictReader(io.StringIO(out)))
    try:
        return float(rows[0]["rps"])
    except (IndexError, KeyError, ValueError):
        raise PerfError(f"cannot read redis-benchmark's output on {node.host}:\n{out[-1000:]}") from None


# -- output ------------------------------------------------------------------------------------------


def report(figures: Sequence[Figure], testbed: Testbed, count: int, errors: Mapping[str, str]) -> dict[str, Any]:
    """One JSON object: every figure at the top level, then goals, how each was measured,
    and why any figure is missing."""
    out: dict[str, Any] = {f.key: round(f.value, 4) for f in figures}
    out["goals"] = {f.key: f"{GOALS[f.key][0]} {GOALS[f.key][1]:g}" for f in figures}
    out["met"] = {f.key: f.met for f in figures}
    out["details"] = {f.key: {"measured": f.detail, **{k: v for k, v in f.raw.items() if not k.endswith("_output")}}
                      for f in figures}
    out["errors"] = dict(errors)
    out["machine"] = {"cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
                      "testbed": {"prefix": testbed.prefix, "subnet": testbed.subnet, "hosts": count}}
    return out


def table(figures: Sequence[Figure], errors: Mapping[str, str]) -> str:
    rows = [(f.key, f"{f.value:.3f}", f"{GOALS[f.key][0]} {GOALS[f.key][1]:g}", "yes" if f.met else "NO", f.detail)
            for f in figures]
    rows += [(key, "-", f"{GOALS[key][0]} {GOALS[key][1]:g}", "-", f"not measured: {why.splitlines()[0]}")
             for key, why in errors.items()]
    head = ("figure", "value", "goal", "met", "measured")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
