"""fabfile.stages.collect: a run directory as ``bench`` leaves it becomes run.json, exports and tables."""

from __future__ import annotations

import json
from pathlib import Path

from runfactory import T0, agent_result, spread

from bench.spawn import spec
from fabfile.runs.store import RunDir
from fabfile.stages import collect

SPAWN = """
[hosts]
servers = ["10.0.0.1"]
agents = ["10.0.0.2", "10.0.0.3"]

[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 10000
"""


def bench_left(tmp_path: Path, status: str) -> RunDir:
    """What ``inv bench`` writes: inputs, meta, one record per agent (here one ok, one failed)."""
    (tmp_path / "spawn.toml").write_text(SPAWN)
    spawn = spec.load(tmp_path / "spawn.toml")
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.start(spawn.source_text, spec.to_dict(spawn), {"nodes": []},
                  {"run_id": "r1", "name": spawn.name, "started_at": T0, "status": status, "argv": []})
    run_dir.write_agent("set", 0, {"result": agent_result("set", 0, 2, spread(100, 60), run_id="r1")}, [])
    failure = {"agent_num": 1, "host": "a2", "error": "exit status 3", "stderr_tail": "boom"}
    run_dir.write_agent("set", 1, {"failure": failure, "result": None}, ["boom"])
    if status != "running":
        run_dir.update_meta(finished_at=T0 + 5)
    return run_dir


def test_collect_merges_writes_and_points_latest(tmp_path: Path) -> None:
    said: list[str] = []
    run_dir = bench_left(tmp_path, "partial")
    merged = collect.run(tmp_path / "runs", None, "simple", False, echo=said.append)
    assert merged["status"] == "partial" and merged["run_id"] == "r1"
    (entry,) = merged["benchmarks"]
    assert (entry["name"], entry["agents"], entry["agents_ok"]) == ("set", 2, 1)
    assert json.loads((run_dir.path / "run.json").read_text())["benchmarks"][0]["ops"] == entry["ops"] == 60
    assert (tmp_path / "runs" / "latest").resolve() == run_dir.path.resolve()
    assert said[0].splitlines()[0].startswith("benchmark") and said[-1].endswith(str(run_dir.path / "run.json"))


def test_a_run_whose_controller_died_is_collected_as_partial(tmp_path: Path) -> None:
    bench_left(tmp_path, "running")
    merged = collect.run(tmp_path / "runs", "r1", "simple", False, echo=lambda _: None)
    assert merged["status"] == "partial" and merged["bench_status"] == "running"
    assert merged["finished_at"] is None


def test_a_planned_benchmark_no_agent_of_which_reported_is_in_run_json_as_failed(tmp_path: Path) -> None:
    """Its only host vanished without a word: the benchmark is not silently absent."""
    (tmp_path / "spawn.toml").write_text(SPAWN + SPAWN[SPAWN.index("[[benchmark]]"):].replace('"set"', '"get"', 1))
    spawn = spec.load(tmp_path / "spawn.toml")
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.start(spawn.source_text, spec.to_dict(spawn), {"nodes": []},
                  {"run_id": "r1", "name": spawn.name, "started_at": T0, "status": "partial", "argv": []})
    for n in (0, 1):
        run_dir.write_agent("set", n, {"result": agent_result("set", n, 2, spread(100, 60), run_id="r1")}, [])
    run_dir.update_meta(finished_at=T0 + 5)
    merged = collect.run(tmp_path / "runs", None, "simple", False, echo=lambda _: None)
    assert merged["status"] == "partial"
    names = [(b["name"], b["agents"], b["agents_ok"]) for b in merged["benchmarks"]]
    assert names == [("set", 2, 2), ("get", 2, 0)]
    errors = [f["error"] for f in merged["benchmarks"][1]["failures"]]
    assert errors == ["no record of this agent: no host reported it"] * 2
