"""The perf suite's pure parts: what it deploys, the agent job it runs, its merge workload and
its output. (The suite itself runs on a testbed: `inv perf`; figures are never asserted.)"""

from __future__ import annotations

import tomllib

from bench.spawn import spec
from bench.wire import hist
from fabfile.dev import perf


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
               perf.Figure("fanout_32_vs_1", 4.4, "32 hosts 0.56s / 1 host 0.13s")]
    errors = {"merge_1000_s": "ResultError: boom\nmore"}
    out = perf.report(figures, perf.Testbed("/nonexistent", prefix="pf", subnet=243), 32, errors)
    assert out["fanout_ratio"] == 1.06 and out["met"] == {"fanout_ratio": True, "fanout_32_vs_1": False}
    assert out["goals"]["fanout_ratio"] == "<= 1.5" and out["errors"] == errors
    assert out["details"]["fanout_ratio"] == {"measured": "16 hosts 4.55s / 1 host 4.29s", "one_s": [4.29]}
    text = perf.table(figures, errors).splitlines()
    assert text[0].split() == ["figure", "value", "goal", "met", "measured"]
    assert text[2].split()[:5] == ["fanout_ratio", "1.060", "<=", "1.5", "yes"]
    assert text[3].split()[:5] == ["fanout_32_vs_1", "4.400", "<=", "3", "NO"]
    assert text[4].endswith("not measured: ResultError: boom")
