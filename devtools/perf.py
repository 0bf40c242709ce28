"""``inv perf``: fleetbench's own benchmark suite, on a testbed of its own.

Every figure but four (one of them informational) is a ratio of two things measured side by
side in the same run, on the same testbed and machine, so that a shared or slow machine moves
both sides together. Each side is the best of a few repetitions (the least noisy estimate on
a busy machine). What scales with hosts is measured as the controller's own CPU time, never
wall time: the testbed's hosts share the controller's cores, so a wall time measures this
machine.

===================================  ==============================================  =======
figure                               what is divided by what                         goal
===================================  ==============================================  =======
controller_cpu_per_host_vs_openssh   the controller's CPU (user + system, all its    <= 1.0
                                     threads) for connect + preflight + a status
                                     over 32 hosts / OpenSSH's: one ``ssh`` per
                                     host (its defaults) running the same commands
controller_cpu_ms_per_host           that CPU of ours / 32, in ms                    (info)
controller_per_host_128_vs_8         that per-host CPU at 128 hosts / at 8 hosts     <= 1.25
spawn_128_hosts_ok                   1 when ``inv spawn`` on 128 hosts (3 servers,   >= 1
                                     125 agents, 3 s open loop at a low rate) ends
                                     ``ok`` (also: its wall time and peak RSS)
controller_rss_mb_per_host           that spawn's peak RSS above a 1-host spawn's,   <= 1.0
                                     / 128, in MB
fanout_ratio                         push a 10 MB pex to 16 hosts / to 1 host, the   <= 1.5
                                     controller's uplink shaped to 20 mbit (tc tbf)
push_vs_openssh                      our push's throughput on the session's          >= 1.0
                                     connection / ``ssh host 'cat > f' < file``
                                     (OpenSSH, with its own connect), 32 MiB
noop_deploy_ratio                    wall time of a second ``inv deploy`` / the      <= 0.1
                                     first (8 hosts, fresh hosts, pexes built)
agent_vs_redis_benchmark_p1          one agent process's SET ops/s /                 >= 0.8
agent_vs_redis_benchmark_p16         redis-benchmark's (one thread), 50 connections, >= 0.5
                                     pipeline 1 and 16, both on the server's host
agent_cpu_per_op_vs_redis_benchmark  the agent's CPU per SET / redis-benchmark's, in <= 1.5
                                     those same runs; the worse of P=1 and P=16
http_agent_cpu_per_req_vs_wrk        the http workload's CPU per request / ``wrk     <= 2.0
                                     -t1``'s, 50 connections, the same server
latency_p50_vs_redis_benchmark_c1    our p50 / redis-benchmark's, one connection,    <= 1.2
                                     pipeline 1, the same node
merge_1000_s                         seconds to merge 1,000 agent results into a     < 1 s
                                     run and render its table (absolute)
===================================  ==============================================  =======

CPU per op (see devtools.perf_peers) is each process's own CPU, read by a wrapper from
``getrusage`` when it exits; the agent's fixed cost (a Python starting, imports, connects,
its result) is that of a minimal run of the same job, subtracted.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.report import merge as result
from bench.report import tables
from bench.wire import hist
from bench.wire.result import RESULT_SCHEMA, AgentResult
from devtools import perf_peers
from devtools.perf_figures import (
    CONTROLLER_FIGURES,
    FIGURES,
    GOALS,
    PEER_FIGURES,
    SPAWN_FIGURES,
    Figure,
    PerfError,
    best,
    report,
    table,
    timed,
)
from devtools.perf_fleet import (
    OURS_ALGORITHMS,
    PER_HOST_FLEET,
    SpawnRun,
    available_mb,
    controller_cpu_figures,
    controller_cpu_s,
    fleet_negotiated,
    hosts_memory_mb,
    openssh_cpu_s,
    openssh_negotiated,
    openssh_start_cpu_s,
    run_measured,
    spawn_file,
)
from devtools.perf_peers import (
    AGENT_PORT,
    AGENT_SECONDS,
    CONNECTIONS,
    HTTP_PORT,
    KEYSPACE,
    VALUE_SIZE,
    PeerBench,
    agent_job,
    cpu_per_op_figure,
    http_job,
    set_job,
    throughput_figure,
)
from devtools.testbed import Testbed
from fabfile.remote import reaper
from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import REMOTE_DIR, cmd, private_dir_command, run
from fabfile.remote.ssh import SshSettings
from fabfile.servers import nodes
from fabfile.servers import redis as redis_server
from fabfile.servers.nodes import Node
from fabfile.ship import relay
from fabfile.ship.push import push, sha256_file

REPO = Path(__file__).resolve().parents[1]
__all__ = ["AGENT_PORT", "AGENT_SECONDS", "CONNECTIONS", "FIGURES", "GOALS", "KEYSPACE", "VALUE_SIZE", "Figure",
           "PerfError", "Suite", "Testbed", "agent_job", "cpu_per_op_figure", "http_job", "report", "set_job", "table"]


#: The perf testbed's own names, apart from the default testbed's (tb, 10.213.0.0/24) and
#: any a test run uses; FLEETBENCH_PERF_PREFIX / FLEETBENCH_PERF_SUBNET (or --prefix /
#: --subnet) move it.
DEFAULT_PREFIX = "pf"
DEFAULT_SUBNET = 210
HOSTS = 128  # the largest fleet measured
CONTROLLER_SIZES = (8, 32, 128)
UPLINK = "20mbit"
FANOUT_HOSTS = 16
FANOUT_BYTES = 10_000_000
PUSH_BYTES = 32 * 1024 * 1024
DEPLOY_HOSTS = 8
SPAWN_SECONDS = 3.0
SPAWN_RATE = 500.0  # ops/s for the whole 125-agent benchmark: 4 per agent
SEARCH_STEP_S = 20.0  # each step of the measured capacity search: the issue's own example
SEARCH_SERVICE_MS = 2  # examples/slot-server's slot: a capacity of 500 requests a second

Echo = Callable[[str], None]


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def testbed_names(prefix: str | None = None, subnet: int | str | None = None) -> tuple[str, int]:
    """The perf testbed's prefix and subnet: given, else from the environment, else ours."""
    prefix = prefix or os.environ.get("FLEETBENCH_PERF_PREFIX") or DEFAULT_PREFIX
    raw = subnet if subnet not in (None, "") else os.environ.get("FLEETBENCH_PERF_SUBNET") or DEFAULT_SUBNET
    try:
        return prefix, int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise PerfError(f"bad perf testbed subnet {raw!r} (FLEETBENCH_PERF_SUBNET or --subnet): give N "
                        "for 10.213.N.0/24") from None


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

    def __init__(self, root: Path, *, prefix: str | None = None, subnet: int | str | None = None, hosts: int = HOSTS,
                 echo: Echo = stderr):
        if hosts < max(FANOUT_HOSTS, DEPLOY_HOSTS):
            raise PerfError(f"the suite needs at least {max(FANOUT_HOSTS, DEPLOY_HOSTS)} hosts")
        prefix, subnet = testbed_names(prefix, subnet)
        self.state = root / ".fleetbench" / "perf"
        self.project = self.state / "project"
        self.testbed = Testbed(self.state / "testbed", prefix=prefix, subnet=subnet)
        self.count = hosts
        self.names = [f"{prefix}{i}" for i in range(1, hosts + 1)]
        self.echo = echo
        self.settings = SshSettings((self.testbed.ssh_config_path,))
        self.scratch = Path(tempfile.mkdtemp(prefix="fleetbench-perf-"))
        self.errors: dict[str, str] = {}  # figure -> why it could not be measured
        self.memory: dict[str, Any] = {}  # what the testbed's hosts cost, for the record

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
            got = [f for f in (out if isinstance(out, list) else [out]) if f.key in keys]
            for f in got:
                self.echo(f"perf: {f.key} = {f.value:.3f} ({f.verdict}): {f.detail}")
            figures.extend(got)
            return out

        try:
            measure(["merge_1000_s"], "merging 1,000 results", merge_figure)
            if wanted - {"merge_1000_s"}:
                self._step(f"testbed: {self.count} hosts ({self.testbed.prefix}, 10.213.{self.testbed.subnet}.0/24)",
                           self._testbed_up)
            sizes = controller_sizes(wanted)
            measure(CONTROLLER_FIGURES, f"controller CPU per host at {sizes} hosts, OpenSSH's at {PER_HOST_FLEET}",
                    functools.partial(self.controller_figures, sizes))
            measure(["push_vs_openssh"], "push vs OpenSSH", self.push_figure)
            # The agents and spawns run the deployment's pexes: they need a deploy, measured or not.
            deployed = measure(["noop_deploy_ratio", *PEER_FIGURES, *SPAWN_FIGURES], "inv deploy twice, 8 hosts",
                               self.deploy_figure)
            if deployed is not None:
                measure(PEER_FIGURES, "agent vs redis-benchmark and wrk", self.peer_figures)
                self._step("inv down", lambda: self._inv("down", "--spawn", "spawn.toml"))
                measure(SPAWN_FIGURES, f"inv spawn on 1 host, then {HOSTS}", self.spawn_figures)
            else:
                self.errors.update({k: "no deployment to run the agent from (inv deploy failed)"
                                    for k in [*PEER_FIGURES, *SPAWN_FIGURES] if k in wanted})
            measure(["search_overhead"], "a capacity search, 1 server and 2 agent hosts", self.search_figure)
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

    def _testbed_up(self) -> None:
        before = available_mb()
        self.testbed.up(self.count)
        idle = hosts_memory_mb(self.testbed)
        self.memory["idle"] = {"hosts": self.count, "pss_mb": round(idle, 1),
                               "pss_mb_per_host": round(idle / self.count, 2),
                               "mem_available_drop_mb": round(before - available_mb(), 1)}

    def _fleet(self, names: Sequence[str]) -> Fleet:
        fleet = Fleet(names, self.settings)
        fleet.connect()
        return fleet

    def _blob(self, name: str, size: int) -> Path:
        path = self.scratch / name
        if not path.exists():
            path.write_bytes(os.urandom(size))
        return path

    # -- controller_cpu_per_host_vs_openssh, controller_cpu_ms_per_host, controller_per_host_128_vs_8 ----

    def controller_figures(self, sizes: Sequence[int] = CONTROLLER_SIZES, reps: int = 3) -> list[Figure]:
        """What a fresh ``inv`` call costs us per host: connect, preflight, status, at each
        size in ``sizes``; and OpenSSH's client doing the same on PER_HOST_FLEET hosts (with its
        defaults, then with our algorithms), all interleaved: a busy spell hits every side."""
        if self.count < max(sizes):
            raise PerfError(f"needs {max(sizes)} testbed hosts (--hosts), not {self.count}")
        config = self.testbed.ssh_config_path
        hosts = self.names[:PER_HOST_FLEET]
        # Imports, first-use caches, the ssh binary and its libraries in the page cache: not per host.
        controller_cpu_s(self.names[:1], self.settings)
        openssh_cpu_s(self.names[:1], config)
        ours: dict[int, list[float]] = {n: [] for n in sizes}
        theirs: list[float] = []
        theirs_ours_algorithms: list[float] = []
        started: list[float] = []  # for the record: what an ssh costs before it connects
        for _ in range(reps):
            for n in sizes:
                ours[n].append(controller_cpu_s(self.names[:n], self.settings) / n * 1000)
                if n == PER_HOST_FLEET:
                    theirs.append(openssh_cpu_s(hosts, config) / len(hosts) * 1000)
                    theirs_ours_algorithms.append(openssh_cpu_s(hosts, config, *OURS_ALGORITHMS) / len(hosts) * 1000)
                    started.append(openssh_start_cpu_s(hosts, config) / len(hosts) * 1000)
        negotiated = {"ours": fleet_negotiated(hosts[0], self.settings),
                      "openssh": openssh_negotiated(config, hosts[0]),
                      "openssh_ours_algorithms": openssh_negotiated(config, hosts[0], *OURS_ALGORITHMS)}
        figures = ",".join(k for k in CONTROLLER_FIGURES if k != "controller_per_host_128_vs_8" or 8 in sizes)
        command = f"inv perf --only {figures}" + ("" if 128 in sizes else f" --hosts {PER_HOST_FLEET}")
        return controller_cpu_figures(ours, theirs, theirs_ours_algorithms, started, negotiated, command)

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

    # -- the agent against redis-benchmark and wrk --------------------------------------------------

    def peer_figures(self, reps: int = 3) -> list[Figure]:
        """On the first host, against one redis-server (then one HTTP server) on it: each
        side's throughput, CPU per op and p50, interleaved repetitions."""
        state = json.loads((self.project / ".fleetbench" / "state.json").read_text())
        server_pex = state["artifacts"]["server"]["remote_path"]
        agent_pex = state["artifacts"]["agent"]["remote_path"]
        host = self.names[0]
        fleet = self._fleet([host])
        c = fleet[host]
        node = Node(host, fleet.address(host), AGENT_PORT, 0)
        args = redis_server.server_args(node, cluster=False, auth=False)  # open, like redis-benchmark's peer
        node = replace(node, pid=nodes.start(c, node, server_pex, args))
        figures: list[Figure] = []
        http_pid = None
        try:
            nodes.wait_until(c, node, lambda: redis_server.ping(c, agent_pex, node), "redis-server ping")
            peers = PeerBench(c, agent_pex, node)
            # The agent pex's first run on a host installs its venv (seconds of CPU): not a fixed cost.
            peers.agent(set_job(node.endpoint, 1, 1, "perf-warm-up", iterations=1))
            runs = {pipeline: peers.set_runs(pipeline, reps) for pipeline in (1, 16)}
            figures += [throughput_figure(pipeline, rb, ours) for pipeline, (rb, ours, _) in runs.items()]
            figures.append(cpu_per_op_figure(runs))
            figures.append(peers.latency_figure(reps))
            http_pid = perf_peers.start_http_server(c, node.address, HTTP_PORT)
            figures.append(peers.http_figure(f"http://{node.address}:{HTTP_PORT}/", reps))
        finally:
            if http_pid is not None:
                perf_peers.stop(c, http_pid)
            nodes.stop(c, node)
            fleet.close()
        return figures

    # -- spawn_128_hosts_ok, controller_rss_mb_per_host -----------------------------------------------

    def spawn_figures(self) -> list[Figure]:
        """``inv spawn`` on one host (twice: the first may still build; the second is the
        baseline), then on every host; the hosts' memory is sampled while the big one runs."""
        if self.count < HOSTS:
            raise PerfError(f"needs {HOSTS} testbed hosts (--hosts), not {self.count}")
        one = self.names[:1]
        (self.project / "spawn1.toml").write_text(spawn_file(one, one, seconds=SPAWN_SECONDS, rate=20))
        (self.project / "spawn128.toml").write_text(
            spawn_file(self.names[:3], self.names[3:HOSTS], seconds=SPAWN_SECONDS, rate=SPAWN_RATE))
        self._spawn("spawn1.toml")
        small = self._spawn("spawn1.toml")
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                peak[0] = max(peak[0], hosts_memory_mb(self.testbed))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            big = self._spawn("spawn128.toml")
        finally:
            done.set()
            sampler.join()
        self.memory["spawn"] = {"hosts": HOSTS, "peak_pss_mb": round(peak[0], 1),
                                "peak_pss_mb_per_host": round(peak[0] / HOSTS, 2)}
        ok = big.exit_code == 0 and big.status() == "ok"
        log = self.state / f"spawn-{HOSTS}.log"  # kept: the project (and its run store) is not
        log.write_text(big.output)
        trouble = [line for line in big.output.splitlines()
                   if any(word in line.lower() for word in ("fail", "error:", "lost", "timed out", "timeout"))
                   and " 0 errors" not in line]
        if not ok:
            self.echo(f"perf: the {HOSTS}-host spawn ended {big.status()} (exit {big.exit_code}); what went wrong:\n"
                      + "\n".join(trouble[:60]) + "\n...\n" + big.output[-1500:])
        raw = {"wall_s": big.wall_s, "status": big.status(), "exit_code": big.exit_code,
               "controller_peak_rss_mb": big.peak_rss_mb, "controller_cpu_s": big.cpu_s,
               "one_host": {"wall_s": small.wall_s, "controller_peak_rss_mb": small.peak_rss_mb,
                            "controller_cpu_s": small.cpu_s, "status": small.status()},
               "hosts_memory": self.memory, "trouble": trouble[:60], "output": str(log),
               "command": "inv perf --only spawn_128_hosts_ok"}
        per_host = (big.peak_rss_mb - small.peak_rss_mb) / HOSTS
        return [Figure("spawn_128_hosts_ok", 1.0 if ok else 0.0,
                       f"inv spawn on {HOSTS} hosts (3 servers, {HOSTS - 3} agents, {SPAWN_SECONDS:g} s at "
                       f"{SPAWN_RATE:g} ops/s): {big.status()} in {big.wall_s:.0f} s, controller peak RSS "
                       f"{big.peak_rss_mb:.0f} MB, CPU {big.cpu_s:.0f} s", raw),
                Figure("controller_rss_mb_per_host", per_host,
                       f"peak RSS {big.peak_rss_mb:.0f} MB at {HOSTS} hosts - {small.peak_rss_mb:.0f} MB at 1, "
                       f"/ {HOSTS}", raw)]

    def _spawn(self, spawn: str) -> SpawnRun:
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "spawn", "--spawn", spawn,
                "--ssh-config", str(self.testbed.ssh_config_path)]
        out = run_measured(argv, self.project, {**os.environ, "PYTHONUNBUFFERED": "1"})
        if out.exit_code != 0 and out.status() is None:
            raise PerfError(f"`inv spawn --spawn {spawn}` failed (exit {out.exit_code}) in {self.project}:\n"
                            + out.output[-3000:])
        return out

    # -- search_overhead ----------------------------------------------------------------------------

    def search_figure(self) -> Figure:
        """A capacity search against a server whose capacity is known (examples/slot-server):
        ``inv bench``'s wall time over the sum of its steps' planned times."""
        self.project.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "examples" / "slot-server", self.project / "slot-server")
        (self.project / "search.toml").write_text(search_spawn(self.names[:3]))
        self._inv("deploy", "--spawn", "search.toml")
        try:
            wall = timed(lambda: self._inv("bench", "--spawn", "search.toml"))
            self._inv("collect", "--spawn", "search.toml")
        finally:
            self._inv("down", "--spawn", "search.toml")
        run = json.loads((self.project / "runs" / "latest" / "run.json").read_text())
        return search_overhead(wall, run)

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
                    gone = cmd("rm", "-f", artifact.remote_path)
                    fleet.each(functools.partial(lambda command, h: run(fleet[h], command), gone), targets)
                    wanted = {h: [artifact] for h in targets}
                    samples.append(timed(functools.partial(relay.deliver, fleet, wanted, echo=messages.append)))
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


def controller_sizes(wanted: Iterable[str]) -> tuple[int, ...]:
    """The fleet sizes the controller's figures need: all three for the 128-vs-8 ratio, else 32."""
    return CONTROLLER_SIZES if "controller_per_host_128_vs_8" in wanted else (PER_HOST_FLEET,)


def search_spawn(hosts: Sequence[str]) -> str:
    """One slot-server (a capacity of 1000 / SEARCH_SERVICE_MS requests a second) on the first
    host, searched from the next two: a ramp from 150 ops/s, then bisection to within 10%."""
    server, agents = hosts[0], hosts[1:3]
    return (
        'name = "perf-search"\n[hosts]\n'
        f"servers = {json.dumps([server])}\nagents = {json.dumps(list(agents))}\n"
        '[server]\nkind = "command"\nport = 7610\nfiles = ["slot-server"]\nscript = "slot-server"\n'
        f'args = ["{{host}}", "{{port}}", "{SEARCH_SERVICE_MS}"]\nready = "tcp"\n'
        '[[benchmark]]\nname = "search"\nworkload = "http"\nagents = 2\nconnections = 4\n'
        f'search = {{ rate = [150, 4000], slo = ["p99 < 150ms", "errors == 0"], step = "{SEARCH_STEP_S:g}s", '
        'precision = "10%", late = "30%" }\n'  # a shared testbed wakes agents late (examples/capacity.toml)
    )


def search_overhead(wall_s: float, run: dict[str, Any]) -> Figure:
    """``inv bench``'s wall time for a capacity search over its steps' planned time (steps x step)."""
    entry = next((e for e in run.get("benchmarks", ()) if "search" in e), None)
    if entry is None:
        raise PerfError(f"run {run.get('run_id')} holds no capacity search")
    found, rows = entry["search"], entry["search"]["rows"]
    if not rows:
        raise PerfError(f"the search of run {run.get('run_id')} ran no step: {found['text']}")
    planned = len(rows) * float(found["step_s"])
    return Figure("search_overhead", wall_s / planned,
                  f"inv bench {wall_s:.1f} s / {len(rows)} steps x {found['step_s']:g} s planned; {found['text']}",
                  {"wall_s": wall_s, "planned_s": planned, "steps": len(rows), "step_s": found["step_s"],
                   "found": found["found"], "status": found["status"], "run_id": run.get("run_id"),
                   "rates": [r["rate"] for r in rows], "command": "inv perf --only search_overhead --hosts 32"})


def deploy_spawn(hosts: Sequence[str]) -> str:
    """A Redis Cluster on the first 3 hosts, the rest agents: the default demo's shape."""
    servers, agents = hosts[:3], hosts[3:]
    return (
        'name = "perf-deploy"\n[hosts]\n'
        f"servers = {json.dumps(list(servers))}\nagents = {json.dumps(list(agents))}\n"
        '[server]\nkind = "redis-cluster"\nport = 7100\n'
        '[[benchmark]]\nname = "set"\nworkload = "set"\nagents = 1\niterations = 1000\n'
    )


