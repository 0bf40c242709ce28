"""The perf suite's pure parts: what it deploys, the agent job it runs, its merge workload and
its output. (The suite itself runs on a testbed: `inv perf`; figures are never asserted.)"""

from __future__ import annotations

import http.client
import os
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from bench.spawn import spec
from bench.wire import hist
from devtools import perf, perf_fleet, perf_peers


def test_the_deploy_spawn_is_a_valid_cluster_of_three_plus_agents() -> None:
    hosts = [f"pf{i}" for i in range(1, 9)]
    parsed = spec.parse(tomllib.loads(perf.deploy_spawn(hosts)))
    assert list(parsed.hosts.servers) == hosts[:3]
    assert list(parsed.hosts.agents) == hosts[3:]
    assert parsed.server.kind == "redis-cluster"


def test_the_agent_job_matches_redis_benchmarks_arguments() -> None:
    job = perf.agent_job("10.0.0.1:7400", 16, "perf-x")
    assert (job.workload, job.connections, job.pipeline, job.duration_s) == ("set", perf.CONNECTIONS, 16,
                                                                            perf.AGENT_SECONDS)
    assert job.targets == ["10.0.0.1:7400"] and job.agents == 1 and job.rate is None
    assert job.params["keyspace"] == perf.KEYSPACE and job.params["value_size"] == perf.VALUE_SIZE


def test_synthetic_results_merge_exactly() -> None:
    results = perf.synthetic_results(20)
    merged = hist.merge(r["histograms"]["latency_us"] for r in results)
    assert merged.get_total_count() == 20 * 3000
    assert len({r["histograms"]["latency_us"] for r in results}) == 20  # each agent its own


def test_report_and_table_name_every_figure_its_goal_and_what_is_missing() -> None:
    figures = [perf.Figure("fanout_ratio", 1.06, "16 hosts 4.55s / 1 host 4.29s", {"one_s": [4.29]}),
               perf.Figure("controller_cpu_ms_per_host", 4.4, "32 hosts: 141 ms / 32")]
    errors = {"merge_1000_s": "ResultError: boom\nmore"}
    out = perf.report(figures, perf.Testbed("/nonexistent", prefix="pf", subnet=243), 32, errors)
    assert out["fanout_ratio"] == 1.06 and out["met"] == {"fanout_ratio": True, "controller_cpu_ms_per_host": False}
    assert out["goals"]["fanout_ratio"] == "<= 1.5" and out["errors"] == errors
    assert out["details"]["fanout_ratio"] == {"measured": "16 hosts 4.55s / 1 host 4.29s", "one_s": [4.29]}
    text = perf.table(figures, errors).splitlines()
    assert text[0].split() == ["figure", "value", "goal", "met", "measured"]
    assert text[2].split()[:5] == ["fanout_ratio", "1.060", "<=", "1.5", "yes"]
    assert text[3].split()[:5] == ["controller_cpu_ms_per_host", "4.400", "<=", "3", "NO"]
    assert text[4].endswith("not measured: ResultError: boom")


# -- the peers: wrappers and parsers (devtools.perf_peers) -------------------------------------

REDIS_BENCHMARK_7_CSV = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",'
    '"max_latency_ms"\n"SET","41152.26","1.184","0.112","1.143","1.735","2.175","4.863"\n'
)


def test_redis_benchmark_csv_gives_ops_and_p50_and_says_when_it_cannot() -> None:
    assert perf_peers.parse_redis_benchmark(REDIS_BENCHMARK_7_CSV) == (41152.26, 1.143)
    assert perf_peers.parse_redis_benchmark('"test","rps"\n"SET","1000.00"\n') == (1000.0, None)  # 6.x
    with pytest.raises(perf_peers.PeerError, match="cannot read redis-benchmark"):
        perf_peers.parse_redis_benchmark("Could not connect to Redis at 10.0.0.1:7400: Connection refused\n")


def test_wrk_summary_gives_requests_and_seconds() -> None:
    out = ("Running 4s test @ http://10.213.210.11:7401/\n  1 threads and 50 connections\n"
           "  Thread Stats   Avg      Stdev     Max   +/- Stdev\n"
           "    Latency     2.95ms  307.12us   8.11ms   91.63%\n"
           "  67718 requests in 4.00s, 5.04MB read\nRequests/sec:  16921.43\n")
    assert perf_peers.parse_wrk(out) == (67718, 4.0)
    assert perf_peers.parse_wrk("  12 requests in 500.00ms, 1KB read") == (12, 0.5)
    with pytest.raises(perf_peers.PeerError, match="cannot read wrk"):
        perf_peers.parse_wrk("unable to connect to 10.0.0.1:7401 Connection refused")


def test_the_cpu_wrapper_reports_its_childs_cpu_after_the_childs_own_output() -> None:
    argv = [sys.executable, "-c", "sum(range(3_000_000)); print('child says hi')"]
    proc = subprocess.run([sys.executable, "-c", perf_peers.CPU_WRAPPER, *argv], capture_output=True, text=True)
    assert proc.returncode == 0
    cpu, before = perf_peers.split_cpu(proc.stdout)
    assert before == "child says hi\n" and cpu > 0
    failing = subprocess.run([sys.executable, "-c", perf_peers.CPU_WRAPPER, "sh", "-c", "exit 7"],
                             capture_output=True, text=True)
    assert failing.returncode == 7 and perf_peers.CPU_MARK in failing.stdout  # the child's status is kept
    with pytest.raises(perf_peers.PeerError, match="no CPU line"):
        perf_peers.split_cpu("just output\n")


def test_wrapped_quotes_every_argument() -> None:
    line = perf_peers.wrapped(["redis-benchmark", "-h", "10.0.0.1; rm -rf ~"])
    assert shlex.split(line)[-3:] == ["redis-benchmark", "-h", "10.0.0.1; rm -rf ~"]


def test_cpu_per_op_subtracts_the_fixed_cost_of_a_minimal_run() -> None:
    full = perf_peers.Measured(ops=100_050, seconds=4.0, cpu_s=2.3)
    fixed = perf_peers.Measured(ops=50, seconds=0.01, cpu_s=0.3)
    assert perf_peers.cpu_per_op(full, fixed) == pytest.approx(2.0 / 100_000)
    assert perf_peers.cpu_per_op(full) == pytest.approx(2.3 / 100_050)
    assert full.ops_s == pytest.approx(25_012.5)


def test_the_http_server_answers_every_get_on_a_kept_alive_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", perf_peers.HTTP_SERVER, "127.0.0.1", str(port)])
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.connect()
                break
            except OSError:
                time.sleep(0.05)
        answers = []
        for _ in range(3):  # one connection, three requests: keep-alive
            conn.request("GET", "/")
            reply = conn.getresponse()
            answers.append((reply.status, reply.read()))
        conn.close()
        assert answers == [(200, b"ok\n")] * 3
    finally:
        server.kill()
        server.wait()


def test_the_http_job_requests_the_servers_url_with_the_same_connections_as_wrk() -> None:
    job = perf.http_job("http://10.0.0.1:7401/", "perf-http-0", seconds=perf.AGENT_SECONDS)
    assert (job.workload, job.connections, job.pipeline, job.duration_s) == ("http", perf.CONNECTIONS, 1,
                                                                            perf.AGENT_SECONDS)
    assert job.params["urls"] == ["http://10.0.0.1:7401/"] and job.params["method"] == "GET"
    minimal = perf.http_job("http://10.0.0.1:7401/", "perf-http-fixed", iterations=perf.CONNECTIONS)
    assert minimal.iterations == perf.CONNECTIONS and minimal.duration_s is None


def test_the_cpu_figure_is_the_worse_pipeline_and_keeps_both() -> None:
    def m(ops: int, cpu: float) -> perf_peers.Measured:
        return perf_peers.Measured(ops=ops, seconds=4.0, cpu_s=cpu)

    runs = {1: ([m(100_000, 1.0)], [m(80_050, 1.9), m(80_050, 2.1)], m(50, 0.3)),
            16: ([m(800_000, 1.0)], [m(400_800, 3.3)], m(800, 0.3))}
    figure = perf.cpu_per_op_figure(runs)
    p1 = (1.9 - 0.3) / 80_000 / (1.0 / 100_000)  # the best of the agent's runs, less its fixed cost
    p16 = (3.3 - 0.3) / 400_000 / (1.0 / 800_000)
    assert figure.key == "agent_cpu_per_op_vs_redis_benchmark"
    assert figure.value == pytest.approx(max(p1, p16))
    assert figure.raw["p1"]["ratio"] == pytest.approx(p1) and figure.raw["p16"]["ratio"] == pytest.approx(p16)
    assert figure.met is (max(p1, p16) <= 1.5)


# -- the controller and the 128-host spawn (devtools.perf_fleet) -------------------------------

def test_the_spawn_files_are_valid_and_shaped_as_the_issue_says() -> None:
    hosts = [f"pf{i}" for i in range(1, 129)]
    big = spec.parse(tomllib.loads(perf_fleet.spawn_file(hosts[:3], hosts[3:], seconds=3, rate=500)))
    assert list(big.hosts.servers) == hosts[:3] and list(big.hosts.agents) == hosts[3:]
    assert big.server.kind == "redis-cluster"
    [b] = big.benchmarks
    assert (b.agents, b.rate, b.duration_s, b.connections) == (125, 500.0, 3.0, 1)
    small = spec.parse(tomllib.loads(perf_fleet.spawn_file(hosts[:1], hosts[:1], seconds=3, rate=20)))
    assert small.server.kind == "redis" and small.benchmarks[0].agents == 1


def test_a_spawns_status_is_read_from_its_last_run_line() -> None:
    def run(output: str) -> perf_fleet.SpawnRun:
        return perf_fleet.SpawnRun(0, 1.0, 1.0, 100.0, output)

    assert run("deploying\nrun 20261201-2140-ab: ok -> runs/20261201-2140-ab\n").status() == "ok"
    assert run("run x: partial -> runs/x\nagents failed\n").status() == "partial"
    assert run("spawn failed: pf7: cannot reach root@10.213.210.17:22\n").status() is None


def test_run_measured_gives_the_childs_own_peak_rss_and_exit_code(tmp_path: Path) -> None:
    grow = "x = bytearray(64 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); print('grew')"
    out = perf_fleet.run_measured([sys.executable, "-c", grow + "; raise SystemExit(3)"], tmp_path, dict(os.environ))
    assert out.exit_code == 3 and out.output == "grew\n"
    assert out.peak_rss_mb > 64 and out.cpu_s > 0


def test_the_perf_testbed_has_names_of_its_own_and_the_environment_can_move_them(monkeypatch) -> None:
    monkeypatch.delenv("FLEETBENCH_PERF_PREFIX", raising=False)
    monkeypatch.delenv("FLEETBENCH_PERF_SUBNET", raising=False)
    assert perf.testbed_names() == ("pf", 210)
    monkeypatch.setenv("FLEETBENCH_PERF_PREFIX", "pz")
    monkeypatch.setenv("FLEETBENCH_PERF_SUBNET", "222")
    assert perf.testbed_names() == ("pz", 222)
    assert perf.testbed_names("qq", "230") == ("qq", 230)  # --prefix/--subnet win
    monkeypatch.setenv("FLEETBENCH_PERF_SUBNET", "ten")
    with pytest.raises(perf.PerfError, match="FLEETBENCH_PERF_SUBNET"):
        perf.testbed_names()


def test_every_figure_of_the_issue_has_a_goal_and_the_retired_one_is_gone() -> None:
    assert set(perf.FIGURES) == {
        "controller_cpu_ms_per_host", "controller_per_host_128_vs_8", "spawn_128_hosts_ok",
        "controller_rss_mb_per_host", "fanout_ratio", "push_vs_openssh", "noop_deploy_ratio",
        "agent_vs_redis_benchmark_p1", "agent_vs_redis_benchmark_p16", "agent_cpu_per_op_vs_redis_benchmark",
        "http_agent_cpu_per_req_vs_wrk", "latency_p50_vs_redis_benchmark_c1", "merge_1000_s"}
    assert perf.GOALS["controller_cpu_ms_per_host"] == ("<=", 3.0)
    assert perf.GOALS["controller_per_host_128_vs_8"] == ("<=", 1.25)
    assert perf.GOALS["controller_rss_mb_per_host"] == ("<=", 1.0)
    assert perf.GOALS["agent_cpu_per_op_vs_redis_benchmark"] == ("<=", 1.5)
    assert perf.GOALS["http_agent_cpu_per_req_vs_wrk"] == ("<=", 2.0)
    assert perf.GOALS["latency_p50_vs_redis_benchmark_c1"] == ("<=", 1.2)
    assert perf.Figure("spawn_128_hosts_ok", 1.0, "").met and not perf.Figure("spawn_128_hosts_ok", 0.0, "").met
