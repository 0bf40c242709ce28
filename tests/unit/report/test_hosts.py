"""bench.report.hosts (metrics summaries, run.json's hosts, bottleneck warnings) and the host tables."""

from __future__ import annotations

import csv
import io
import json

import pytest
from runfactory import T0, agent_result, make_run, sample, spread

from bench.report import hosts, tables
from bench.report import merge as result

SERVER_PROC = {"89": {"cpu_pct": 20.0, "rss_bytes": 50_000_000, "name": "redis-server",
                      "pid_file": "/root/.fleetbench/nodes/7000/server.pid"}}


def ndjson(samples) -> str:
    return "".join(json.dumps(s) + "\n" for s in samples)


# ----- parsing -----


def test_parse_ndjson_sorts_and_drops_a_torn_last_line():
    text = ndjson([sample(T0 + 2), sample(T0 + 1)]) + '{"t": 17900'
    assert [s["t"] for s in hosts.parse_ndjson(text)] == [T0 + 1, T0 + 2]


def test_parse_ndjson_names_a_bad_line():
    text = ndjson([sample(T0)]) + "garbage\n" + ndjson([sample(T0 + 1)])
    with pytest.raises(hosts.MetricsError, match=r"m.ndjson: line 2 is not JSON"):
        hosts.parse_ndjson(text, "m.ndjson")
    with pytest.raises(hosts.MetricsError, match="no numeric t"):
        hosts.parse_ndjson('{"cpu": 1}\n')


# ----- summaries -----


def test_summary_of_samples():
    samples = [sample(T0 + i, idle=100 - 10 * (i + 1), procs=SERVER_PROC) for i in range(4)]
    samples[1]["procs"] = {"89": {**SERVER_PROC["89"], "cpu_pct": 40.0, "rss_bytes": 60_000_000, "tree": 5}}
    s = hosts.summarise(samples)
    assert s["samples"] == 4 and s["cores"] == 2 and (s["first_t"], s["last_t"]) == (T0, T0 + 3)
    assert s["cpu_pct"] == {"mean": 25.0, "max": 40.0}
    assert s["cpu_parts_pct"]["user"] == pytest.approx(15.0) and s["cpu_parts_pct"]["steal"] == 0.0
    assert s["mem_used_max_bytes"] == 1_000_000_000 and s["mem_total_bytes"] == 4_000_000_000
    assert s["net_Bps"] == {"rx_mean": 1e6, "tx_mean": 2e6, "rx_max": 1e6, "tx_max": 2e6}  # lo left out
    assert s["disk_Bps"]["write_mean"] == 4096.0
    (proc,) = s["procs"]
    assert proc["pid"] == 89 and proc["name"] == "redis-server" and proc["pid_file"].endswith("7000/server.pid")
    assert proc["cpu_pct_mean"] == 25.0 and proc["cpu_pct_max"] == 40.0 and proc["rss_max_bytes"] == 60_000_000
    assert proc["tree_max"] == 5  # the most processes its tree had (a gunicorn master and workers)


def test_summary_tolerates_null_sections_and_gone_processes():
    bare = {"t": T0, "dt": 1.0, "cpu": None, "cores": 2, "load1": None, "mem": None, "net": None, "disk": None,
            "procs": {"89": {"gone": True, "name": "redis-server"}}}
    s = hosts.summarise([bare])
    assert s["cpu_pct"] == {"mean": None, "max": None} and s["mem_used_max_bytes"] is None
    assert s["procs"][0]["gone"] is True and s["procs"][0]["rss_max_bytes"] is None
    empty = hosts.summarise([])
    assert empty["samples"] == 0 and empty["procs"] == []


def test_window_takes_the_samples_whose_second_overlaps_it():
    samples = [sample(T0 + i) for i in range(1, 11)]  # each covers (t-1, t]
    chosen = hosts.in_window(samples, (T0 + 2.5, T0 + 4.2))
    assert [s["t"] - T0 for s in chosen] == [3, 4, 5]


# ----- run.json's hosts section -----


def test_roles_of_a_spawn():
    spawn = {"hosts": {"servers": ["s1", "both"], "agents": ["a1", "both", "a1"]}}
    assert hosts.roles_of(spawn) == {"s1": ["server"], "both": ["server", "agent"], "a1": ["agent"]}


def test_benchmark_windows_include_repetitions():
    run = make_run("r", [("set", spread(100, 20))], repeat=2)
    windows = hosts.benchmark_windows(run["benchmarks"])
    assert set(windows) == {"set", "set#1", "set#2"}
    assert windows["set#1"] == (T0, T0 + 2.0) and windows["set#2"] == (T0 + 3.0, T0 + 5.0)
    assert windows["set"] == (T0, T0 + 5.0)


def test_host_section():
    metrics = {"s1": [sample(T0 + i, procs=SERVER_PROC) for i in range(1, 6)], "a1": []}
    section = hosts.host_section({"s1": ["server"], "a1": ["agent"]}, {"s1": {"cpu_model": "x"}, "a1": None},
                                 metrics, {"set": (T0, T0 + 2.0)})
    assert list(section) == ["s1", "a1"]
    assert section["s1"]["roles"] == ["server"] and section["s1"]["facts"] == {"cpu_model": "x"}
    assert section["s1"]["metrics"]["samples"] == 5
    assert section["s1"]["benchmarks"]["set"]["samples"] == 2
    assert section["a1"] == {"roles": ["agent"], "facts": None, "metrics": None, "benchmarks": {}}


def test_host_section_records_both_addresses_of_each_host_the_deployment_knew() -> None:
    both = {"ssh": "198.18.7.11", "private": "10.213.7.11", "learned_from": "ssh"}
    section = hosts.host_section({"s1": ["server"], "a1": ["agent"]}, {"s1": None, "a1": None}, {}, {},
                                 {"s1": both, "gone": {"ssh": "x", "private": "y"}})
    assert section["s1"]["addresses"] == both
    assert "addresses" not in section["a1"] and "gone" not in section  # not a host of the run


# ----- warnings -----


def run_with_agent_cpu(idle: float, **agent_extra) -> dict:
    entry = result.merge_benchmark("set", [agent_result("set", 0, 1, spread(100, 50), **agent_extra)], [])
    run = result.build_run({"run_id": "r", "name": "n", "started_at": T0, "finished_at": T0 + 9, "spawn": {},
                            "deployment": {}}, [entry])
    metrics = {"a1": [sample(T0 + i, idle=idle) for i in range(1, 4)],
               "s1": [sample(T0 + i, idle=0.0) for i in range(1, 4)]}
    run["hosts"] = hosts.host_section({"s1": ["server"], "a1": ["agent"]}, {}, metrics,
                                      hosts.benchmark_windows(run["benchmarks"]))
    return run


def test_busy_agent_host_is_a_warning_busy_server_is_not():
    assert hosts.warnings(run_with_agent_cpu(idle=40.0)) == []  # the server at 100% is what we measure
    (line,) = hosts.warnings(run_with_agent_cpu(idle=5.0))
    assert line == "set: agent host a1 cpu averaged 95% (max 95%): the load generator may be the bottleneck"


def test_late_ops_in_an_open_loop_run_are_a_warning_beyond_one_percent():
    assert hosts.warnings(run_with_agent_cpu(idle=50.0, late_ops=0, service=[50] * 50)) == []
    (line,) = hosts.warnings(run_with_agent_cpu(idle=50.0, late_ops=5, service=[50] * 50))
    assert line.startswith("set: 5 of 50 ops (10.0%) were sent late")
    assert "(these agents do not say which)" in line  # agents from before the split by cause


def _late_run(busy: int, loop: int) -> dict:
    run = run_with_agent_cpu(idle=50.0, late_ops=busy + loop, service=[50] * 50)
    run["benchmarks"][0].update(late_busy_ops=busy, late_loop_ops=loop)
    return run


def test_late_ops_that_waited_for_a_connection_blame_the_server_not_the_agents():
    (line,) = hosts.warnings(_late_run(busy=9, loop=1))
    assert line == ("set: 10 of 50 ops (20.0%) were sent late: every connection was busy waiting on the server "
                    "(9 waited for one): the server was the limit, not the agents; more connections would "
                    "measure its queue (latency counts the wait; service time does not)")


def test_late_ops_due_while_a_connection_was_free_blame_the_agents():
    (line,) = hosts.warnings(_late_run(busy=1, loop=9))
    assert line == ("set: 10 of 50 ops (20.0%) were sent late: the agents' CPU or event loop was the limit "
                    "(9 were due while a connection was free and went out late): the load generator could not "
                    "keep the rate (latency counts the wait; service time does not)")


# ----- tables -----


def test_host_table():
    run = run_with_agent_cpu(idle=5.0)
    run["hosts"]["s1"]["metrics"] = hosts.summarise([sample(T0 + 1, procs=SERVER_PROC)])
    text = tables.render_hosts(run)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["host", "role", "samples"]
    s1 = next(line for line in lines if line.startswith("s1")).split()
    assert s1[:5] == ["s1", "server", "1", "50.0", "50.0"]
    assert s1[-2:] == ["20.0", "50.0"]  # server process cpu %, rss MB
    assert next(line for line in lines if line.startswith("a1")).split()[-2:] == ["-", "-"]
    rows = list(csv.reader(io.StringIO(tables.render_hosts(run, "csv"))))
    assert rows[0] == list(tables.HOST_HEADERS) and rows[2][0] == "a1" and rows[2][6] == "1.0"


def test_report_composes_benchmarks_hosts_agents_and_warnings():
    run = run_with_agent_cpu(idle=5.0)
    text = tables.report(run, "simple", detail=True)
    assert text.index("benchmark") < text.index("hosts:") < text.index("agents:") < text.index("warnings:")
    assert "load generator may be the bottleneck" in text
    data = json.loads(tables.report(run, "json", detail=True))
    assert set(data) == {"benchmarks", "hosts", "host facts", "agents", "failures", "warnings"}
    assert data["hosts"][0]["host"] == "s1" and len(data["warnings"]) == 1
    plain = tables.report(make_run("r", [("set", spread(100, 20))]), "simple")
    assert "hosts:" not in plain and "warnings:" not in plain
    assert tables.report(run, "csv").startswith("# benchmarks\nbenchmark,")


def test_open_loop_columns_only_when_a_benchmark_has_service_time():
    closed = run_with_agent_cpu(idle=50.0)
    assert "svc p99 (ms)" not in tables.benchmark_rows(closed)[0]
    run = run_with_agent_cpu(idle=50.0, late_ops=3, service=[40] * 50)
    headers, rows = tables.benchmark_rows(run)
    assert headers[-3:] == ["late", "svc p50 (ms)", "svc p99 (ms)"]
    assert rows[0][-3:] == [3, 0.04, 0.04]


def test_fact_table():
    run = run_with_agent_cpu(idle=50.0)
    run["hosts"]["s1"]["facts"] = {"cpu_model": "AMD EPYC", "logical_cores": 8, "usable_cores": 4,
                                   "memory_total_bytes": 16e9, "kernel": "6.1", "os": "Debian 12",
                                   "python": {"implementation": "CPython", "version": "3.11.2"},
                                   "agent_pex": "/p/agent.pex", "pex": [{"path": "/p/agent.pex", "sha256": "ab" * 32}]}
    headers, rows = tables.fact_rows(run)
    assert rows == [["s1", "AMD EPYC", 4, 16.0, "6.1", "Debian 12", "CPython 3.11.2", "abababababab"]]
