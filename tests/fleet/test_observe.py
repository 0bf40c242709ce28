"""Host metrics, the run store, comparisons and pictures on a real fleet.

Three short runs (4 repetitions of two 1-second benchmarks each): the spawn file twice, then
with ``set`` deliberately slowed (pipeline 8 -> 1, a third of the throughput or less).
"""

from __future__ import annotations

import gzip
import json
import re

import pytest

pytestmark = pytest.mark.fleet

SPAWN = """
name = "observe"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4", "$h5"]
[server]
kind = "redis-cluster"
port = 7100
[[benchmark]]
name = "set"
workload = "set"
agents = 2
duration = "1s"
pipeline = 8
repeat = 4
[[benchmark]]
name = "get"
workload = "get"
agents = 2
duration = "1s"
repeat = 4
"""

PNG = b"\x89PNG\r\n\x1a\n"


def _run_id(out: str) -> str:
    return re.search(r"^run (\S+): ok -> ", out, re.M).group(1)


def _change(table: str, metric_title: str, benchmark: str) -> str:
    """The "B vs A" cell of one benchmark in one metric's block of `inv compare`."""
    block = table.split(metric_title, 1)[1].split("\n\n", 1)[0]
    row = next(line for line in block.splitlines() if line.startswith(benchmark + " "))
    return re.split(r"\s{2,}", row.strip())[-1]


def test_metrics_runs_compare_and_pictures(project):
    spawn = project.write_spawn("observe.toml", SPAWN)
    slower = project.write_spawn("observe-slower.toml", SPAWN.replace("pipeline = 8", "pipeline = 1"))
    first = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                        "collect", "--spawn", str(spawn)).stdout
    again = project.inv("bench", "--spawn", str(spawn), "collect", "--spawn", str(spawn)).stdout
    slow = project.inv("bench", "--spawn", str(slower), "collect", "--spawn", str(slower)).stdout
    a, a2, b = _run_id(first), _run_id(again), _run_id(slow)
    hosts = project.hosts[:5]

    # The run directory: facts and every second's metrics of every host, server logs, exports.
    run_dir = project.path / "runs" / a
    run = json.loads((run_dir / "run.json").read_text())
    parts = [p for e in run["benchmarks"] for p in e["repeats"]]
    begin, end = min(p["started_at"] for p in parts), max(p["finished_at"] for p in parts)
    for host in hosts:
        facts = json.loads((run_dir / "hosts" / host / "facts.json").read_text())
        assert facts["hostname"] == host and facts["logical_cores"] >= 1
        assert any(p["name"].startswith("agent-") and len(p["sha256"]) == 64 for p in facts["pex"])
        samples = [json.loads(line) for line in (run_dir / "hosts" / host / "metrics.ndjson").read_text().splitlines()]
        ts = [s["t"] for s in samples]
        assert ts[0] - samples[0]["dt"] <= begin and ts[-1] >= end, (host, ts[0], ts[-1], begin, end)
        assert max(later - earlier for earlier, later in zip(ts, ts[1:], strict=False)) < 1.5, host  # no second missing
        assert run["hosts"][host]["metrics"]["samples"] == len(samples)
    for host in hosts[:3]:
        log = gzip.decompress((run_dir / "hosts" / host / "logs" / "7100-server.log.gz").read_bytes()).decode()
        assert "Ready to accept connections" in log
        procs = run["hosts"][host]["metrics"]["procs"]
        assert procs and procs[0]["name"] == "redis-server" and procs[0]["rss_max_bytes"] > 0
    assert (run_dir / "export" / "set.hlog").read_text().count("HISTF") == 4  # one interval per repetition
    assert (run_dir / "export" / "hosts.csv").read_text().startswith("host,role,samples,")
    assert "hosts:" in first and "cpu max %" in first

    # Nothing of the samplers is left running on any host.
    for host in hosts:
        ours = project.ssh(host, 'for p in /proc/[0-9]*; do case "$(readlink $p/cwd)" in */_host) echo $p;; esac; '
                                 "done").stdout
        assert ours.strip() == "", (host, ours)

    listed = project.inv("runs").stdout
    assert all(run_id in listed for run_id in (a, a2, b))

    # A run against itself is all ~; the slowed benchmark is called out, beyond the noise.
    itself = project.inv("compare", a, a).stdout
    assert _change(itself, "throughput (ops/s)", "set") == "~ (p=1.000 n=4+4)"
    slowed = project.inv("compare", a, b).stdout
    cell = _change(slowed, "throughput (ops/s)", "set")
    assert re.fullmatch(r"-\d\d\.\d\d% \(p=0\.029 n=4\+4\)", cell), slowed
    assert float(cell.split("%")[0]) < -40, slowed
    # Two runs of the same spawn file are compared like any two (their closed-loop throughput
    # depends on how busy this machine is, so its size is no test of fleetbench).
    same = _change(project.inv("compare", a, a2).stdout, "throughput (ops/s)", "set")
    assert re.fullmatch(r"(~|[+-]\d+\.\d\d%) \(p=\d\.\d{3} n=4\+4\)", same), same
    print(slowed)

    # Pictures, and the one-page report.
    out = project.inv("plot", "--run", a, "--against", b).stdout
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == ["hosts.png", "latency.png", "spectrum-get.png", "spectrum-set.png", "throughput.png"], out
    assert all((run_dir / "plots" / name).read_bytes().startswith(PNG) for name in pngs)
    project.inv("report", "--run", a, "--html")
    assert (run_dir / "report.html").read_text().count("data:image/png;base64,") == 5
    project.inv("down", "--spawn", str(spawn))
