"""export/metrics.prom (read back by prometheus_client's OpenMetrics parser) and export/junit.xml."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from bench.report import expect, junit, openmetrics, seconds
from bench.wire import hist

T0 = 1_700_000_000


def _second(at: int, values: list[int], errors: int = 0) -> dict:
    h = hist.new()
    for v in values:
        h.record_value(v)
    return {"t": at - T0, "at": at, "ops": len(values), "errors": errors, "hist": hist.encode(h) if values else None}


def _run() -> dict:
    agents = [{"agent_num": 0, "host": "tb4", "started_at": T0 + 0.4,
               "timeseries": [_second(T0, [100, 200]), _second(T0 + 1, [300] * 3, errors=1)]},
              {"agent_num": 1, "host": "tb5", "started_at": T0 + 0.6,
               "timeseries": [_second(T0, [1000]), _second(T0 + 1, []), _second(T0 + 2, [400])]}]
    entry = {"name": 'set "quoted"', "workload": "set", "agents": 2, "agents_ok": 2, "ops": 8, "errors": 1,
             "ops_per_s": 3.2, "seconds": 2.5, "started_at": T0 + 0.4, "finished_at": T0 + 2.9,
             "latency_us": {"count": 8, "p99": 1000, "max": 1000},
             "timeseries": seconds.merge("set", agents)}
    run = {"run_id": "20261201-demo", "name": "demo", "benchmarks": [entry]}
    expect.apply(run, {entry["name"]: expect.parse_all(["p99 < 5ms", "errors == 0"])})
    return run


HOSTS = {"tb1": [{"t": T0 + 1.0, "dt": 1.0, "cpu": {"idle": 75.0}, "net": {"lo": {"rx_Bps": 9e9},
                                                                           "eth0": {"rx_Bps": 10.0, "tx_Bps": 20.0}},
                  "mem": {"used_bytes": 1000, "total_bytes": 4000}},
                 {"t": T0 + 30.0, "dt": 1.0, "cpu": {"idle": 90.0}}]}


def test_openmetrics_export_parses_back_with_timestamps_and_labels():
    text = openmetrics.render(_run(), HOSTS)
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {"fleetbench_ops_per_second", "fleetbench_errors_per_second", "fleetbench_latency_seconds",
                             "fleetbench_host_cpu_busy_percent", "fleetbench_host_network_receive_bytes_per_second",
                             "fleetbench_host_network_transmit_bytes_per_second", "fleetbench_host_memory_used_bytes"}
    ops = families["fleetbench_ops_per_second"]
    assert ops.type == "gauge"
    assert [(float(s.timestamp), s.value) for s in ops.samples] == [(T0, 3.0), (T0 + 1, 3.0), (T0 + 2, 1.0)]
    assert {tuple(sorted(s.labels.items())) for s in ops.samples} == {
        (("benchmark", 'set "quoted"'), ("host", "all"), ("run", "20261201-demo"))}
    assert [s.value for s in families["fleetbench_errors_per_second"].samples] == [0.0, 1.0, 0.0]
    latency = families["fleetbench_latency_seconds"]
    assert latency.unit == "seconds"
    p99 = {float(s.timestamp): s.value for s in latency.samples if s.labels["quantile"] == "0.99"}
    assert p99[T0] == pytest.approx(hist.new().get_highest_equivalent_value(1000) / 1e6)  # the merge's, not a mean
    assert p99[T0 + 1] == pytest.approx(300 / 1e6, rel=1e-3)
    cpu = families["fleetbench_host_cpu_busy_percent"].samples
    assert [(s.labels["host"], s.labels["benchmark"], s.value) for s in cpu] == [
        ("tb1", 'set "quoted"', 25.0), ("tb1", "none", 10.0)]
    assert [s.value for s in families["fleetbench_host_network_receive_bytes_per_second"].samples] == [10.0]


def test_junit_has_one_testcase_per_expectation():
    root = ET.fromstring(junit.render(_run()))
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "2", "1")
    (suite,) = root
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["p99 < 5ms", "errors == 0"]
    assert cases[0].find("failure") is None and cases[0].find("system-out").text == "p99 = 1ms"
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "errors = 1"
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["run"] == "20261201-demo"
    empty = ET.fromstring(junit.render({"benchmarks": [{"name": "x"}]}))
    assert empty.get("tests") == "0" and list(empty) == []
