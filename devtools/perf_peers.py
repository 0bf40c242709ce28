"""The agent against the C tools people would otherwise use, on one testbed host.

Each side runs on the server's host under the same small wrapper (the host's python3), which
runs it as a child and reports the child's own CPU (user + system, from ``getrusage``) after
it exits: the wrapper's own start-up is not counted. The agent is a Python process: its
fixed cost (interpreter, imports, connecting, the result) is measured by a minimal run of
the same job and subtracted, so per-op figures are the steady state; the whole-process
figures are kept as well. redis-benchmark and wrk start in a few milliseconds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.spawn import plan, spec
from bench.wire import hist
from bench.wire.job import AgentJob
from devtools.perf_figures import Figure, PerfError, best
from fabfile.remote.host import Host
from fabfile.remote.shell import PEX_ROOT, REMOTE_DIR, cmd, run
from fabfile.servers.nodes import Node

AGENT_PORT = 7400
HTTP_PORT = 7401
AGENT_SECONDS = 4.0
LATENCY_SECONDS = 3.0
KEYSPACE = 100_000
VALUE_SIZE = 64
CONNECTIONS = 50

#: Runs ``argv`` as its child and prints, as the last line of stdout, the child's CPU.
CPU_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "sys.stdout.flush()\n"
    "print('fleetbench-cpu ' + json.dumps({'user_s': r.ru_utime, 'system_s': r.ru_stime}), flush=True)\n"
    "sys.exit(rc)\n"
)
CPU_MARK = "fleetbench-cpu "

#: A keep-alive HTTP/1.1 server on the host's python3 (stdlib): 200 and 3 bytes to every
#: GET. Both clients load the same one; the figure is the clients' CPU, not its speed.
HTTP_SERVER = """\
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n"
class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        n = self.buffer.count(b"\\r\\n\\r\\n")
        if n:
            self.buffer = self.buffer[self.buffer.rfind(b"\\r\\n\\r\\n") + 4:]
            self.transport.write(RESPONSE * n)
async def main():
    server = await asyncio.get_running_loop().create_server(Http, sys.argv[1], int(sys.argv[2]), backlog=512)
    await server.serve_forever()
asyncio.run(main())
"""


class PeerError(PerfError):
    pass


@dataclass(frozen=True)
class Measured:
    """One run of one side: what it did and the CPU its process took."""

    ops: int
    seconds: float
    cpu_s: float
    p50_us: float | None = None

    @property
    def ops_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def split_cpu(out: str) -> tuple[float, str]:
    """The CPU seconds the wrapper reported, and the child's own stdout before it."""
    head, mark, tail = out.rpartition(CPU_MARK)
    if not mark:
        raise PeerError(f"no CPU line in the output:\n{out[-1000:]}")
    usage = json.loads(tail.splitlines()[0])
    return usage["user_s"] + usage["system_s"], head


def wrapped(argv: Sequence[object]) -> str:
    return cmd("python3", "-c", CPU_WRAPPER, *argv)


def parse_redis_benchmark(out: str) -> tuple[float, float | None]:
    """ops/s and p50 (ms) from ``redis-benchmark --csv`` (7.x has latency columns; 6.x not)."""
    rows = list(csv.DictReader(io.StringIO(out)))
    try:
        rps = float(rows[0]["rps"])
    except (IndexError, KeyError, ValueError):
        raise PeerError(f"cannot read redis-benchmark's output:\n{out[-1000:]}") from None
    p50 = rows[0].get("p50_latency_ms")
    return rps, float(p50) if p50 else None


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(out: str) -> tuple[int, float]:
    """Requests and seconds from wrk's summary ("123456 requests in 4.00s, ...")."""
    found = _WRK_TOTAL.search(out)
    if not found:
        raise PeerError(f"cannot read wrk's output:\n{out[-1000:]}")
    return int(found.group(1)), float(found.group(2)) * _UNIT_S[found.group(3)]


def job(workload: str, endpoint: str, *, connections: int, pipeline: int = 1, run_id: str,
        seconds: float | None = None, iterations: int | None = None, params: dict[str, Any] | None = None,
        port: int) -> AgentJob:
    """One agent's job against ``endpoint``: ``seconds`` long, or ``iterations`` ops."""
    bench: dict[str, Any] = {"name": run_id, "workload": workload, "agents": 1, "connections": connections,
                             "pipeline": pipeline, "params": params or {}}
    if iterations is not None:
        bench["iterations"] = iterations
    else:
        bench["duration"] = f"{seconds}s"
    parsed = spec.parse({"name": "perf", "hosts": {"servers": ["h"], "agents": ["h"]},
                         "server": {"kind": "redis", "port": port}, "benchmark": [bench]})
    [one] = plan.agent_jobs(parsed, parsed.benchmarks[0], run_id, [endpoint])
    return one


def run_agent_measured(c: Host, agent_pex: str, agent_job: AgentJob, timeout: float) -> tuple[dict, float]:
    """The agent's result and its process's CPU seconds."""
    out = run(c, f'PEX_ROOT="$HOME/{PEX_ROOT}" '
                 + wrapped(["sh", "-c", 'exec "$HOME/$0" "$@"', agent_pex, "run", "--job", agent_job.to_json()]),
              timeout=timeout)
    cpu, stdout = split_cpu(out)
    lines = stdout.strip().splitlines()
    if not lines:
        raise PeerError(f"the agent printed no result:\n{out[-1000:]}")
    result = json.loads(lines[-1])
    if result.get("fatal") or result.get("errors"):
        raise PeerError(f"the agent failed: {result.get('fatal') or result.get('error_samples')}")
    return result, cpu


def agent_side(c: Host, agent_pex: str, agent_job: AgentJob, timeout: float) -> Measured:
    result, cpu = run_agent_measured(c, agent_pex, agent_job, timeout)
    p50 = hist.percentiles(hist.decode(result["histograms"]["latency_us"]), [50.0])[50.0]
    return Measured(result["ops"], result["elapsed_s"], cpu, float(p50))


def redis_benchmark_side(c: Host, address: str, port: int, *, connections: int, pipeline: int,
                         requests: int, keyspace: int, value_size: int) -> Measured:
    out = run(c, wrapped(["redis-benchmark", "-h", address, "-p", port, "-c", connections, "-P", pipeline,
                          "-t", "set", "-n", requests, "-r", keyspace, "-d", value_size, "--csv"]), timeout=300)
    cpu, stdout = split_cpu(out)
    rps, p50_ms = parse_redis_benchmark(stdout)
    return Measured(requests, requests / rps, cpu, None if p50_ms is None else p50_ms * 1000)


def wrk_side(c: Host, url: str, *, connections: int, seconds: float) -> Measured:
    out = run(c, wrapped(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]), timeout=seconds + 60)
    cpu, stdout = split_cpu(out)
    requests, took = parse_wrk(stdout)
    return Measured(requests, took, cpu)


def start_http_server(c: Host, address: str, port: int) -> int:
    """The HTTP server in the background on ``c``'s host, once it accepts; its pid."""
    log = f"{REMOTE_DIR}/perf-http.log"
    # Only the server is in the background, its output to the log: the channel ends at once.
    pid = run(c, f"cd; {cmd('python3', '-c', HTTP_SERVER, address, port)} > {cmd(log)} 2>&1 < /dev/null & echo $!",
              timeout=30).strip()
    probe = ("import socket, sys, time\n"
             "for _ in range(100):\n"
             "    try:\n        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); sys.exit(0)\n"
             "    except OSError:\n        time.sleep(0.05)\n"
             "sys.exit(1)\n")
    if run(c, cmd("python3", "-c", probe, address, port) + " && echo up", check=False).strip() != "up":
        tail = run(c, f"cd && tail -n 20 {cmd(log)}", check=False)
        raise PeerError(f"the perf HTTP server did not start on {address}:{port}:\n{tail}")
    return int(pid)


def stop(c: Host, pid: int) -> None:
    run(c, cmd("kill", pid), check=False)


def cpu_per_op(m: Measured, fixed: Measured | None = None) -> float:
    """CPU seconds per op, less a minimal run's fixed cost when given."""
    if fixed is None:
        return m.cpu_s / m.ops
    return max(m.cpu_s - fixed.cpu_s, 0.0) / max(m.ops - fixed.ops, 1)


#: redis-benchmark's runs, the agent's, and the agent's minimal run (its fixed cost)
SetRuns = tuple[list[Measured], list[Measured], Measured]


class PeerBench:
    """The agent and its C peers on one host ``c``, against ``node`` (a redis-server)."""

    def __init__(self, c: Host, agent_pex: str, node: Node):
        self.c, self.agent_pex, self.node = c, agent_pex, node

    def set_runs(self, pipeline: int, reps: int) -> SetRuns:
        requests = self.calibrate(CONNECTIONS, pipeline, AGENT_SECONDS)
        fixed = self.agent(set_job(self.node.endpoint, CONNECTIONS, pipeline, "perf-fixed",
                                   iterations=CONNECTIONS * pipeline))
        rb: list[Measured] = []
        ours: list[Measured] = []
        for rep in range(reps):
            rb.append(self.redis_benchmark(CONNECTIONS, pipeline, requests))
            ours.append(self.agent(set_job(self.node.endpoint, CONNECTIONS, pipeline, f"perf-p{pipeline}-{rep}",
                                           seconds=AGENT_SECONDS)))
        return rb, ours, fixed

    def redis_benchmark(self, connections: int, pipeline: int, requests: int) -> Measured:
        return redis_benchmark_side(self.c, self.node.address, self.node.port, connections=connections,
                                    pipeline=pipeline, requests=requests, keyspace=KEYSPACE, value_size=VALUE_SIZE)

    def calibrate(self, connections: int, pipeline: int, seconds: float) -> int:
        """How many requests take redis-benchmark about ``seconds``, from a short run."""
        quick = self.redis_benchmark(connections, pipeline, 5_000 * pipeline * min(connections, 4))
        return max(20_000, int(quick.ops_s * seconds))

    def agent(self, job: AgentJob) -> Measured:
        return agent_side(self.c, self.agent_pex, job, timeout=AGENT_SECONDS * 10 + 60)

    def latency_figure(self, reps: int) -> Figure:
        requests = self.calibrate(1, 1, LATENCY_SECONDS)
        rb: list[float] = []
        ours: list[float] = []
        for rep in range(reps):
            theirs = self.redis_benchmark(1, 1, requests)
            if theirs.p50_us is None:
                raise PerfError("this redis-benchmark reports no p50 in --csv (redis-tools >= 7 does)")
            rb.append(theirs.p50_us)
            mine = self.agent(set_job(self.node.endpoint, 1, 1, f"perf-c1-{rep}", seconds=LATENCY_SECONDS))
            ours.append(mine.p50_us or 0.0)
        return Figure("latency_p50_vs_redis_benchmark_c1", best(ours) / best(rb),
                      f"p50 agent {best(ours):.0f} us / redis-benchmark {best(rb):.0f} us (SET, 1 conn, P=1)",
                      {"agent_p50_us": ours, "redis_benchmark_p50_us": rb, "requests": requests})

    def http_figure(self, url: str, reps: int) -> Figure:
        fixed = self.agent(http_job(url, "perf-http-fixed", iterations=CONNECTIONS))
        wrk: list[Measured] = []
        ours: list[Measured] = []
        for rep in range(reps):
            wrk.append(wrk_side(self.c, url, connections=CONNECTIONS, seconds=AGENT_SECONDS))
            ours.append(self.agent(http_job(url, f"perf-http-{rep}", seconds=AGENT_SECONDS)))
        mine = best([cpu_per_op(m, fixed) for m in ours])
        theirs = best([cpu_per_op(m) for m in wrk])
        return Figure("http_agent_cpu_per_req_vs_wrk", mine / theirs,
                      f"CPU per GET: agent {mine * 1e6:.1f} us / wrk -t1 {theirs * 1e6:.1f} us "
                      f"({CONNECTIONS} conns, one stdlib asyncio server; agent at "
                      f"{best([m.ops_s for m in ours], high=True):,.0f} req/s, wrk "
                      f"{best([m.ops_s for m in wrk], high=True):,.0f})",
                      {"agent": [asdict(m) for m in ours], "wrk": [asdict(m) for m in wrk],
                       "agent_fixed": asdict(fixed), "agent_cpu_us_per_req": mine * 1e6,
                       "wrk_cpu_us_per_req": theirs * 1e6,
                       "whole_process_ratio": best([m.cpu_s / m.ops for m in ours]) / theirs})


def set_job(endpoint: str, connections: int, pipeline: int, run_id: str, *, seconds: float | None = None,
            iterations: int | None = None) -> AgentJob:
    """One agent's SET job, keys and values like redis-benchmark's ``-r KEYSPACE -d VALUE_SIZE``."""
    return job("set", endpoint, connections=connections, pipeline=pipeline, run_id=run_id,
                          seconds=seconds, iterations=iterations, port=AGENT_PORT,
                          params={"keyspace": KEYSPACE, "value_size": VALUE_SIZE})


def agent_job(endpoint: str, pipeline: int, run_id: str) -> AgentJob:
    """The throughput run: SET, CONNECTIONS connections, ``pipeline`` deep, for AGENT_SECONDS."""
    return set_job(endpoint, CONNECTIONS, pipeline, run_id, seconds=AGENT_SECONDS)


def http_job(url: str, run_id: str, *, seconds: float | None = None, iterations: int | None = None) -> AgentJob:
    return job("http", url.split("/")[2], connections=CONNECTIONS, run_id=run_id, seconds=seconds,
                          iterations=iterations, port=HTTP_PORT, params={"urls": [url]})


def throughput_figure(pipeline: int, rb: Sequence[Measured], ours: Sequence[Measured]) -> Figure:
    mine, theirs = best([m.ops_s for m in ours], high=True), best([m.ops_s for m in rb], high=True)
    return Figure(f"agent_vs_redis_benchmark_p{pipeline}", mine / theirs,
                  f"agent {mine:,.0f} ops/s / redis-benchmark {theirs:,.0f} ops/s (SET, {CONNECTIONS} conns, "
                  f"P={pipeline})",
                  {"agent_ops_s": [m.ops_s for m in ours], "redis_benchmark_ops_s": [m.ops_s for m in rb],
                   "requests": rb[0].ops})


def cpu_per_op_figure(runs: Mapping[int, SetRuns]) -> Figure:
    """The agent's CPU per SET / redis-benchmark's at each pipeline; the figure is the worse."""
    per: dict[str, dict[str, Any]] = {}
    for pipeline, (rb, ours, fixed) in runs.items():
        mine = best([cpu_per_op(m, fixed) for m in ours])
        theirs = best([cpu_per_op(m) for m in rb])
        per[f"p{pipeline}"] = {"ratio": mine / theirs, "agent_cpu_us_per_op": mine * 1e6,
                               "redis_benchmark_cpu_us_per_op": theirs * 1e6,
                               "whole_process_ratio": best([m.cpu_s / m.ops for m in ours]) / theirs,
                               "agent_fixed_cpu_s": fixed.cpu_s, "agent": [asdict(m) for m in ours],
                               "redis_benchmark": [asdict(m) for m in rb]}
    text = "; ".join(f"P={k[1:]}: agent {v['agent_cpu_us_per_op']:.2f} us / redis-benchmark "
                     f"{v['redis_benchmark_cpu_us_per_op']:.2f} us = {v['ratio']:.2f}" for k, v in per.items())
    return Figure("agent_cpu_per_op_vs_redis_benchmark", max(v["ratio"] for v in per.values()),
                  f"CPU per SET ({CONNECTIONS} conns) {text}", per)
