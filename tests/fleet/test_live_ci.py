"""Watching a run and gating CI on it, on a real fleet: the live view in a log, expectations
(exit 0 when they hold, 3 when one fails), `compare --fail-on`, the OpenMetrics and JUnit
exports read back by real parsers, and the HTML report opened in headless Chromium.

Two runs: A (a 12-second benchmark, long enough for a live line mid-run, and four 1-second
repetitions of another) whose expectations hold, then B (the same four repetitions held to 100
ops/s by an open-loop rate) whose expectations cannot hold, run by `inv spawn`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import browser  # noqa: E402

pytestmark = pytest.mark.fleet

HEAD = """
name = "gate"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "redis"
port = 7400
"""
STEADY = """
[[benchmark]]
name = "steady"
workload = "set"
agents = 2
duration = "12s"
expect = ["errors == 0", "ops/s > 10", "p99 < 10s"]
"""
FAST = """
[[benchmark]]
name = "fast"
workload = "set"
agents = 2
duration = "1s"
pipeline = 4
repeat = 4
expect = ["error% <= 0"]
"""
HELD = FAST.replace('expect = ["error% <= 0"]', 'rate = 100\nexpect = ["ops/s > 1000000000", "p99 < 1us"]')


def _run_id(out: str) -> str:
    return re.search(r"^run (\S+): \w+ -> ", out, re.M).group(1)


@pytest.fixture(scope="module")
def runs(project):
    project.reset()
    passing = project.write_spawn("gate-a.toml", HEAD + STEADY + FAST)
    failing = project.write_spawn("gate-b.toml", HEAD + HELD)
    a = project.inv("deploy", "--spawn", str(passing), "bench", "--spawn", str(passing),
                    "collect", "--spawn", str(passing), check=False)
    b = project.inv("spawn", "--spawn", str(failing), check=False)  # deploy (nothing to do), bench, collect, down
    return {"a": a, "b": b, "a_id": _run_id(a.stdout), "b_id": _run_id(b.stdout)}


def test_live_view_in_a_log_and_expectations_pass_or_exit_3(runs):
    a, b = runs["a"], runs["b"]
    print(a.stdout, b.stdout, b.stderr, sep="\n")  # shown with -rP: what a user sees
    assert a.returncode == 0, a.stdout[-3000:] + a.stderr[-3000:]
    lines = a.stdout.splitlines()
    live = [line for line in lines if line.startswith("[live] steady: ")]
    # one line every 10 s while it runs, and one when its phase ends
    assert any("running, 0 done" in line and re.search(r"\d+ s of 12 s", line) for line in live), live
    assert re.search(r"agents 0 running, 2 done, 0 failed; [\d,]+ ops/s, p50 [\d.]+ ms, p99 [\d.]+ ms", live[-1])
    assert not any("fleetbench-agent[" in line for line in lines)  # per-agent lines only with --verbose
    rows = {tuple(line.split()[:4]) for line in lines}
    assert ("steady", "errors", "==", "0") in rows
    assert re.search(r"^steady\s+ops/s > 10\s+ops/s = [\d,]+\s+ok$", a.stdout, re.M)

    assert b.returncode == 3, b.stdout[-3000:] + b.stderr[-3000:]
    assert re.search(r"^fast\s+ops/s > 1000000000\s+ops/s = \d[\d,]*\s+FAILED$", b.stdout, re.M), b.stdout
    assert re.search(r"^fast\s+p99 < 1us\s+p99 = \d+us\s+FAILED$", b.stdout, re.M)
    assert "2 of 2 expectation(s) failed" in b.stdout + b.stderr


def test_per_second_series_are_exact_merges_on_the_wall_clock(project, runs):
    run = json.loads((project.path / "runs" / runs["a_id"] / "run.json").read_text())
    steady = next(e for e in run["benchmarks"] if e["name"] == "steady")
    series = steady["timeseries"]
    assert all(p["exact"] for p in series) and sum(p["ops"] for p in series) == steady["ops"]
    assert [p["at"] for p in series] == list(range(series[0]["at"], series[0]["at"] + len(series)))
    assert 12 <= len(series) <= 14 and all(p["agents"] == 2 for p in series[1:-1])
    assert all(0 < p["p50"] <= p["p99"] <= p["max"] for p in series if p["ops"])


def test_exports_read_back_by_a_prometheus_parser_and_as_junit(project, runs):
    export = project.path / "runs" / runs["a_id"] / "export"
    families = {f.name: f for f in text_string_to_metric_families((export / "metrics.prom").read_text())}
    ops = [s for s in families["fleetbench_ops_per_second"].samples if s.labels["benchmark"] == "steady"]
    assert 12 <= len(ops) <= 14 and {s.labels["run"] for s in ops} == {runs["a_id"]}
    assert all(s.timestamp is not None for s in ops) and sum(s.value for s in ops) > 0
    p99 = [s for s in families["fleetbench_latency_seconds"].samples if s.labels["quantile"] == "0.99"]
    assert p99 and all(0 < s.value < 10 for s in p99)
    cpu_hosts = {s.labels["host"] for s in families["fleetbench_host_cpu_busy_percent"].samples}
    assert set(project.hosts[:1] + project.hosts[3:5]) <= cpu_hosts
    assert "steady" in {s.labels["benchmark"] for s in families["fleetbench_host_cpu_busy_percent"].samples}

    passed = ET.parse(export / "junit.xml").getroot()
    assert (passed.get("tests"), passed.get("failures")) == ("4", "0")
    assert [c.get("name") for c in passed.iter("testcase")] == ["errors == 0", "ops/s > 10", "p99 < 10s",
                                                                "error% <= 0"]
    failed = ET.parse(project.path / "runs" / runs["b_id"] / "export" / "junit.xml").getroot()
    assert (failed.get("tests"), failed.get("failures")) == ("2", "2")
    assert all(c.find("failure").get("message") for c in failed.iter("testcase"))


def test_compare_fail_on_exits_3_on_a_significant_drop(project, runs):
    a, b = runs["a_id"], runs["b_id"]
    dropped = project.inv("compare", a, b, "--fail-on", "5%", check=False)
    assert dropped.returncode == 3, dropped.stdout + dropped.stderr
    assert re.search(r"fast: throughput -\d+\.\d+%.*beyond --fail-on 5%", dropped.stdout + dropped.stderr)
    assert project.inv("compare", a, a, "--fail-on", "5%", check=False).returncode == 0


@pytest.mark.skipif(browser.chromium() is None and not os.environ.get("CI"),
                    reason="no chromium (make system-deps installs it as root; under CI this fails instead)")
def test_html_report_in_headless_chromium(project, runs):
    project.inv("report", "--run", runs["a_id"], "--html")
    shows, errors = browser.report_shows(project.path / "runs" / runs["a_id"] / "report.html")
    assert errors == []
    assert shows["cards"] == ["steady", "fast"]
    assert {"steady", "fast"} <= set(shows["rows"])
    assert shows["pictures"]["steady"] > 100 and shows["pictures"]["fast"] > 100  # decoded, drawn
    assert all(width > 100 for width in shows["images"])  # the time series too
