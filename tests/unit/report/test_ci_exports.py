"""export/metrics.prom (read back by prometheus_client's OpenMetrics parser, checked by `promtool check
metrics` and loaded into a TSDB by `promtool tsdb create-blocks-from openmetrics`) and export/junit.xml.

promtool comes with Debian's prometheus package (`make system-deps`); without it these tests skip
on a developer's machine and fail under CI (CI=true)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from ci_guard import under_ci
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from runfactory import T0 as RUN_T0
from runfactory import make_run, sample, spread

from bench.report import expect, junit, openmetrics, seconds
from bench.spawn import expectations
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
    expect.apply(run, {entry["name"]: expectations.parse_all(["p99 < 5ms", "errors == 0"])})
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
    assert (latency.type, latency.unit) == ("summary", "seconds")
    # prometheus_client keeps only the first second of a summary's quantiles but the 0.5 (its check
    # for samples repeated by timestamp truncation remembers them across timestamps): the later
    # seconds are read back by Prometheus's own parser in test_promtool_loads_every_sample.
    p99 = {float(s.timestamp): s.value for s in latency.samples if s.labels["quantile"] == "0.99"}
    assert p99[T0] == pytest.approx(hist.new().get_highest_equivalent_value(1000) / 1e6)  # the merge's, not a mean
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


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if under_ci():
            pytest.fail("promtool is missing: `make system-deps` as root installs Debian's prometheus package")
        pytest.skip("no promtool (make system-deps installs Debian's prometheus package, as root)")
    return path


def real_run_text() -> str:
    """A run as collect writes it: exact seconds of two benchmarks (one repeated), and host samples
    stamped at fractions of a second as the sampler does."""
    run = make_run("20260921-demo", [("set", spread(100, 300)), ("get", spread(50, 200))], repeat=2,
                   per_second=True)
    hosts = {"a1": [sample(RUN_T0 + k + 0.52, idle=40.0 + k) for k in range(14)],
             "s1": [sample(RUN_T0 + k + 0.07) for k in range(14)]}
    return openmetrics.render(run, hosts)


def test_promtool_check_metrics_finds_nothing():
    text = real_run_text()
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    # what it used to find: a gauge with a quantile label, and fractional timestamps (which the
    # Prometheus text format promtool parses refuses)
    assert "# TYPE fleetbench_latency_seconds summary" in text
    assert all(re.fullmatch(r"\d+", line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#"))


def test_promtool_loads_every_sample(tmp_path):
    text = real_run_text()
    (tmp_path / "metrics.prom").write_text(text)
    tool = promtool()
    subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "metrics.prom"),
                    str(tmp_path / "data")], check=True, capture_output=True, timeout=120)
    (tmp_path / "data" / "wal").mkdir(exist_ok=True)  # dump reads a WAL, even an empty one
    dumped = subprocess.run([tool, "tsdb", "dump", str(tmp_path / "data")], check=True, capture_output=True,
                            text=True, timeout=120).stdout
    loaded = set()
    for line in dumped.splitlines():
        labels, value, ms = re.fullmatch(r"\{(.*)\} (\S+) (\d+)", line).groups()
        name = re.search(r'__name__="([^"]+)"', labels).group(1)
        rest = ",".join(sorted(part for part in re.findall(r'(\w+="[^"]*")', labels) if "__name__" not in part))
        loaded.add((name, rest, float(value), int(ms)))
    written = set()
    for family in text_string_to_metric_families(text):
        if family.type == "summary":
            continue  # prometheus_client drops some of them (see above); counted below instead
        for s in family.samples:
            rest = ",".join(sorted(f'{k}="{v}"' for k, v in s.labels.items()))
            written.add((s.name, rest, float(s.value), int(float(s.timestamp) * 1000)))
    assert written and written <= loaded
    latency = [row for row in loaded if row[0] == "fleetbench_latency_seconds"]
    ops_seconds = [line for line in text.splitlines() if line.startswith("fleetbench_ops_per_second{")
                   and not line.split("} ")[1].startswith("0 ")]
    assert len(latency) == 5 * len(ops_seconds)  # p50, p90, p99, p99.9, max of every second with ops
    assert len(loaded) == len(written) + len(latency)
