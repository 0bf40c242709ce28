"""Every Redis workload of the catalogue, on a real Redis Cluster on the testbed."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.fleet

# pi's catalogue (examples/bitmaps.toml) plus mixed and the other key distributions, kept short.
SPAWN = """
name = "catalogue"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4", "$h5"]
[server]
kind = "redis-cluster"
port = 7400
[[benchmark]]
name = "import"
workload = "import"
agents = 2
iterations = 4000
pipeline = 64
params = { rows = 50, columns = 200000, gaps = "exponential" }
[[benchmark]]
name = "diagonal"
workload = "diagonal-setbit"
agents = 2
iterations = 2000
params = { rows = 100, columns = 100000 }
[[benchmark]]
name = "zipf"
workload = "zipf"
agents = 2
iterations = 2000
params = { exponent = 1.2, ratio = 0.8 }
[[benchmark]]
name = "mixed-hotspot"
workload = "mixed"
agents = 2
iterations = 2000
params = { distribution = "hotspot", read_ratio = 0.5 }
[[benchmark]]
name = "set-latest"
workload = "set"
iterations = 1000
params = { distribution = "latest" }
[[benchmark]]
name = "set-sequential"
workload = "set"
iterations = 1000
params = { distribution = "sequential" }
[[benchmark]]
name = "basic-query"
workload = "bitop"
agents = 2
duration = "1s"
parallel = "queries"
params = { op = "DIFF", rows_per_query = 3 }
[[benchmark]]
name = "random-query"
workload = "random-query"
agents = 2
duration = "1s"
parallel = "queries"
params = { depth = 3, fanout = 2 }
"""


def test_every_redis_workload_runs_on_a_real_cluster(project):
    spawn = project.write_spawn("catalogue.toml", SPAWN)
    project.inv("check", "--spawn", str(spawn))
    try:
        project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn), "collect", "--spawn", str(spawn))
        run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
        by_name = {b["name"]: b for b in run["benchmarks"]}
        assert sorted(by_name) == sorted(["import", "diagonal", "zipf", "mixed-hotspot", "set-latest",
                                          "set-sequential", "basic-query", "random-query"])
        for name, b in by_name.items():
            assert b["ops"] > 0 and b["errors"] == 0, (name, b["ops"], b["errors"], b.get("error_samples"))
            assert b["agents_ok"] == b["agents"], name
        for name, ops in (("import", 4000), ("diagonal", 2000), ("zipf", 2000), ("mixed-hotspot", 2000)):
            assert by_name[name]["ops"] == ops
        # The two query benchmarks shared a parallel tag: they ran at the same time.
        a, b = by_name["basic-query"], by_name["random-query"]
        assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    finally:
        project.inv("down", "--spawn", str(spawn), check=False)
