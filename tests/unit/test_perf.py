"""The perf suite's pure parts: what it deploys, the agent job it runs, its merge workload and
its output. (The suite itself runs on a testbed: `inv perf`; figures are never asserted.)"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

from bench.spawn import spec
from bench.wire import hist
from devtools import perf, perf_fleet, perf_peers
from fabfile.remote import fleet, reaper


def test_the_deploy_spawn_is_a_valid_cluster_of_three_plus_agents() -> None:
    hosts = [f"pf{i}" for i in range(1, 9)]
    parsed = spec.parse(tomllib.loads(perf.deploy_spawn(hosts)))
    assert list(parsed.hosts.servers) == hosts[:3]
    assert list(parsed.hosts.agents) == hosts[3:]
    assert parsed.server.kind == "redis-cluster"


def test_the_search_spawn_searches_the_slot_server_from_two_agent_hosts() -> None:
    hosts = ["pf1", "pf2", "pf3"]
    parsed = spec.parse(tomllib.loads(perf.search_spawn(hosts)))
    assert list(parsed.hosts.servers) == ["pf1"] and list(parsed.hosts.agents) == ["pf2", "pf3"]
    assert parsed.server.kind == "command" and parsed.server.files == ("slot-server",)
    (bench,) = parsed.benchmarks
    assert bench.search is not None and bench.search.step_s == perf.SEARCH_STEP_S


def test_search_overhead_is_benchs_wall_time_over_the_steps_planned_time() -> None:
    rows = [{"rate": rate} for rate in (150, 300, 600, 450, 525, 487.5)]
    run = {"run_id": "r1", "benchmarks": [
        {"name": "plain"},
        {"name": "search", "search": {"step_s": 10.0, "rows": rows, "text": "found 487.5 ops/s", "found": 487.5,
                                      "status": "found"}}]}
    figure = perf.search_overhead(66.0, run)
    assert figure.key == "search_overhead" and figure.value == 66.0 / 60.0
    assert figure.raw["planned_s"] == 60.0 and figure.raw["rates"][-1] == 487.5
    assert figure.met is True
    assert perf.search_overhead(72.0, run).met is False  # 1.2 > 1.15
    with pytest.raises(perf.PerfError, match="holds no capacity search"):
        perf.search_overhead(1.0, {"run_id": "r2", "benchmarks": [{"name": "plain"}]})
    run["benchmarks"][1]["search"]["rows"] = []
    with pytest.raises(perf.PerfError, match="ran no step"):
        perf.search_overhead(1.0, run)


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
               perf.Figure("controller_cpu_per_host_vs_openssh", 1.2, "6 ms / 5 ms"),
               perf.Figure("controller_cpu_ms_per_host", 4.4, "32 hosts: 141 ms / 32")]
    errors = {"merge_1000_s": "ResultError: boom\nmore"}
    out = perf.report(figures, perf.Testbed("/nonexistent", prefix="pf", subnet=243), 32, errors)
    assert out["fanout_ratio"] == 1.06
    assert out["met"] == {"fanout_ratio": True, "controller_cpu_per_host_vs_openssh": False,
                          "controller_cpu_ms_per_host": None}  # informational: no goal to meet
    assert out["goals"]["fanout_ratio"] == "<= 1.5" and out["goals"]["controller_cpu_ms_per_host"] == "-"
    assert out["errors"] == errors
    assert out["details"]["fanout_ratio"] == {"measured": "16 hosts 4.55s / 1 host 4.29s", "one_s": [4.29]}
    text = perf.table(figures, errors).splitlines()
    assert text[0].split() == ["figure", "value", "goal", "met", "measured"]
    assert text[2].split()[:5] == ["fanout_ratio", "1.060", "<=", "1.5", "yes"]
    assert text[3].split()[:5] == ["controller_cpu_per_host_vs_openssh", "1.200", "<=", "1", "NO"]
    assert text[4].split()[:4] == ["controller_cpu_ms_per_host", "4.400", "-", "info"]
    assert text[5].endswith("not measured: ResultError: boom")


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


# -- the controller against OpenSSH's client (devtools.perf_fleet) ------------------------------

def test_the_ratio_is_our_best_cpu_per_host_over_opensshs_and_the_absolute_figure_has_no_goal() -> None:
    negotiated = {"ours": {"kex": "curve25519-sha256@libssh.org"}, "openssh": {"kex": "sntrup761x25519-sha512"}}
    figures = perf_fleet.controller_cpu_figures({32: [3.1, 2.7, 2.9]}, [66.0, 64.5, 65.1], [7.6, 7.4], [2.8, 2.7],
                                            negotiated, "inv perf --only x --hosts 32")
    by_key = {f.key: f for f in figures}
    assert set(by_key) == {"controller_cpu_per_host_vs_openssh", "controller_cpu_ms_per_host"}  # one size: no 128/8
    ratio, absolute = by_key["controller_cpu_per_host_vs_openssh"], by_key["controller_cpu_ms_per_host"]
    assert ratio.value == pytest.approx(2.7 / 64.5) and ratio.met is True
    assert absolute.value == pytest.approx(2.7) and absolute.met is None and absolute.verdict == "informational"
    assert ratio.raw["vs_openssh_ours_algorithms"] == pytest.approx(2.7 / 7.4)
    assert ratio.raw["openssh_ms_per_host"] == [66.0, 64.5, 65.1]
    assert ratio.raw["openssh_start_ms_per_host"] == [2.8, 2.7]
    assert ratio.raw["negotiated"] == negotiated and ratio.raw["command"] == "inv perf --only x --hosts 32"
    assert "2.70 ms per host" in ratio.detail and "64.50 ms" in ratio.detail and "7.40 ms: 0.36" in ratio.detail


def test_a_controller_dearer_than_openssh_misses_the_goal_and_three_sizes_give_the_128_vs_8_ratio() -> None:
    figures = perf_fleet.controller_cpu_figures({8: [7.0, 6.0], 32: [6.5, 6.0], 128: [6.6]}, [5.0, 5.5])
    by_key = {f.key: f for f in figures}
    assert by_key["controller_cpu_per_host_vs_openssh"].value == pytest.approx(6.0 / 5.0)
    assert by_key["controller_cpu_per_host_vs_openssh"].met is False
    assert by_key["controller_per_host_128_vs_8"].value == pytest.approx(6.6 / 6.0)
    assert "at 8: 6.00, 32: 6.00, 128: 6.60" in by_key["controller_cpu_ms_per_host"].detail
    assert "vs_openssh_ours_algorithms" not in by_key["controller_cpu_per_host_vs_openssh"].raw  # not measured


def test_no_figure_without_samples_of_both_sides() -> None:
    with pytest.raises(perf.PerfError, match="at 32 hosts"):
        perf_fleet.controller_cpu_figures({8: [1.0]}, [5.0])
    with pytest.raises(perf.PerfError, match="at 32 hosts"):
        perf_fleet.controller_cpu_figures({32: [1.0]}, [])
    with pytest.raises(perf.PerfError, match="no CPU"):
        perf_fleet.controller_cpu_figures({32: [1.0]}, [0.0])


def test_only_the_128_vs_8_ratio_needs_the_three_fleet_sizes() -> None:
    assert perf.controller_sizes(["controller_cpu_per_host_vs_openssh", "controller_cpu_ms_per_host"]) == (32,)
    assert perf.controller_sizes(perf.FIGURES) == (8, 32, 128)


def test_opensshs_command_is_our_preflight_then_our_status(tmp_path: Path) -> None:
    command = perf_fleet.openssh_command()
    assert fleet.preflight_command() in command and reaper.find_command() in command
    home = tmp_path / "home"
    (home / ".fleetbench" / "nodes").mkdir(parents=True)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    ours = subprocess.Popen(["sleep", "60"], cwd=home / ".fleetbench" / "nodes")
    try:  # run as sshd runs a command: the login shell's -c
        out = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    finally:
        ours.kill()
        ours.wait()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[0])["version"]  # the preflight's probe
    df = next(i for i, line in enumerate(lines) if line.startswith("Filesystem"))
    assert str(ours.pid) in lines[df + 2:]  # then the status found our process
    assert (home / ".fleetbench").stat().st_mode & 0o777 == 0o700

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".fleetbench").write_text("a file where the private directory goes")
    out = subprocess.run(["/bin/sh", "-c", command], env={**env, "HOME": str(bad)}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1  # the preflight failed: ssh says so, the status does not run


def test_opensshs_cpu_is_its_ssh_processes_own_and_a_failed_host_is_named(tmp_path: Path, monkeypatch) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    fake = bin_dir / "ssh"  # records its arguments, burns 50 ms of CPU; "bad" is refused
    fake.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import json, sys, time
        host = sys.argv[-2]
        with open({str(calls)!r} + "/" + host, "w") as fh:
            json.dump(sys.argv[1:], fh)
        started = time.process_time()
        while time.process_time() - started < 0.05:
            pass
        if host == "bad":
            sys.exit("root@10.0.0.9: Permission denied (publickey).")
        """))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = tmp_path / "ssh_config"
    cpu = perf_fleet.openssh_cpu_s(["h1", "h2"], config, "-o", "KexAlgorithms=curve25519-sha256")
    assert cpu >= 0.1  # each child's own CPU, from wait4: at least what each burned
    assert json.loads((calls / "h1").read_text()) == ["-F", str(config), "-n", "-T", "-o", "BatchMode=yes", "-o",
                                                      "KexAlgorithms=curve25519-sha256", "h1",
                                                      perf_fleet.openssh_command()]
    with pytest.raises(perf.PerfError, match=r"1 host\(s\): bad: exit 1: root@10.0.0.9: Permission denied"):
        perf_fleet.openssh_cpu_s(["h3", "bad", "h4"], config)
    assert (calls / "h4").exists()  # every host ran, the failure was reported after


def test_what_openssh_negotiated_is_read_from_its_verbose_output() -> None:
    verbose = ("debug1: kex: algorithm: sntrup761x25519-sha512\n"
               "debug1: kex: host key algorithm: ssh-ed25519\n"
               "debug1: kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none\n"
               "debug1: kex: client->server cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none\n")
    assert perf_fleet.parse_negotiated(verbose) == {"kex": "sntrup761x25519-sha512", "host_key": "ssh-ed25519",
                                                     "cipher": "chacha20-poly1305@openssh.com", "mac": "<implicit>"}
    assert perf_fleet.parse_negotiated("ssh: connect to host x port 22: Connection refused\n") == {}


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
        "controller_cpu_per_host_vs_openssh", "controller_cpu_ms_per_host", "controller_per_host_128_vs_8",
        "spawn_128_hosts_ok",
        "controller_rss_mb_per_host", "fanout_ratio", "push_vs_openssh", "noop_deploy_ratio",
        "agent_vs_redis_benchmark_p1", "agent_vs_redis_benchmark_p16", "agent_cpu_per_op_vs_redis_benchmark",
        "http_agent_cpu_per_req_vs_wrk", "latency_p50_vs_redis_benchmark_c1", "merge_1000_s", "search_overhead"}
    assert perf.GOALS["controller_cpu_per_host_vs_openssh"] == ("<=", 1.0)
    assert perf.GOALS["controller_cpu_ms_per_host"] is None  # its goal moved to the ratio; kept beside it
    assert perf.GOALS["controller_per_host_128_vs_8"] == ("<=", 1.25)
    assert perf.GOALS["controller_rss_mb_per_host"] == ("<=", 1.0)
    assert perf.GOALS["agent_cpu_per_op_vs_redis_benchmark"] == ("<=", 1.5)
    assert perf.GOALS["http_agent_cpu_per_req_vs_wrk"] == ("<=", 2.0)
    assert perf.GOALS["latency_p50_vs_redis_benchmark_c1"] == ("<=", 1.2)
    assert perf.Figure("spawn_128_hosts_ok", 1.0, "").met and not perf.Figure("spawn_128_hosts_ok", 0.0, "").met


def test_the_suite_runs_inv_in_this_checkout() -> None:
    """The fleet figures start `inv` with --search-root REPO: it must be the checkout's root."""
    assert (perf.REPO / "tasks.py").is_file() and (perf.REPO / "devtools" / "perf.py").is_file()
