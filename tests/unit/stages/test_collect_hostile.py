"""One malformed or lying agent result is that agent's failure: the collect of the others goes on.

Each case leaves, beside a good result of agent 0, something hostile as agent 1's, then runs the
real collect on the run directory: agent 0 is merged, agent 1 is a failure naming why.
"""

from __future__ import annotations

import base64
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from runfactory import T0, agent_result, spread

from bench.spawn import spec
from bench.wire import hist
from fabfile.runs.store import MAX_RECORD_BYTES, RunDir
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


def _bomb() -> str:
    """A histogram with our settings whose counts inflate to 128 MB."""
    packer = zlib.compressobj(9)
    header = struct.pack(">IIIIQQd", 0x1C849313, 0, 0, hist.SIGNIFICANT_DIGITS, hist.LOWEST, hist.HIGHEST, 1.0)
    packed = packer.compress(header) + b"".join(packer.compress(bytes(1 << 20)) for _ in range(128)) + packer.flush()
    return base64.b64encode(struct.pack(">II", 0x1C849314, len(packed)) + packed).decode()


def _good(num: int, **changes: Any) -> dict[str, Any]:
    return {**agent_result("set", num, 2, spread(100, 60), run_id="r1"), **changes}


def _left(tmp_path: Path, hostile: Any) -> RunDir:
    (tmp_path / "spawn.toml").write_text(SPAWN)
    spawn = spec.load(tmp_path / "spawn.toml")
    run_dir = RunDir(tmp_path / "runs", "r1")
    run_dir.start(spawn.source_text, spec.to_dict(spawn), {"nodes": []},
                  {"run_id": "r1", "name": spawn.name, "started_at": T0, "status": "ok", "argv": [],
                   "finished_at": T0 + 5})
    run_dir.write_agent("set", 0, {"result": _good(0)}, [])
    run_dir.write_agent("set", 1, {"result": hostile}, [])
    return run_dir


def _collect(tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    said: list[str] = []
    merged = collect.run(tmp_path / "runs", "r1", "simple", True, echo=said.append)
    return merged, said


HOSTILE = {
    "a list, not an object": ([1, 2, 3], "not an object but list"),
    "a histogram bomb": (_good(1, histograms={"latency_us": _bomb()}), "decompresses to more than"),
    "garbage for a histogram": (_good(1, histograms={"latency_us": "\x00garbage"}), "not a valid encoded"),
    "another agent's number": (_good(0), "it says agent_num 0"),
    "another run's": (_good(1, run_id="r0"), "it says run_id 'r0'"),
    "another workload": (_good(1, workload="get"), "agents disagree on workload"),
    "a count that is text": (_good(1, ops="many"), "ops 'many' is not a count"),
    "a timeseries of text": (_good(1, timeseries=[{"t": 0, "ops": "x" * 10_000}]), "ValueError"),
    "an elapsed time of infinity": (_good(1, elapsed_s=float("inf")), "elapsed_s inf is not a duration"),
    "no schema": ({k: v for k, v in _good(1).items() if k != "schema"}, "result lacks schema"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_result_is_its_agents_failure_and_the_others_are_merged(tmp_path, case):
    hostile, why = HOSTILE[case]
    _left(tmp_path, hostile)
    tracemalloc.start()
    merged, said = _collect(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (entry,) = merged["benchmarks"]
    assert merged["status"] == "partial"
    assert (entry["agents"], entry["agents_ok"], entry["ops"]) == (2, 1, 60)
    (failure,) = entry["failures"]
    assert failure["agent_num"] == 1 and failure["error"].startswith("its result was refused: ")
    assert why in failure["error"] and len(failure["error"]) < 500
    assert "its result was refused" in "\n".join(said)  # the failures table names it
    assert peak < 64 << 20, peak  # the bomb alone would be 128 MB


@pytest.mark.parametrize("content, why", [
    (b"{not json", "is not JSON"),
    (b"[" * 200_000, "is not JSON"),
    (b'"a string"', "is not an agent record"),
])
def test_an_unreadable_record_is_its_agents_failure(tmp_path, content, why):
    run_dir = _left(tmp_path, _good(1))
    run_dir.agent_path("set", 1).write_bytes(content)
    merged, _ = _collect(tmp_path)
    (entry,) = merged["benchmarks"]
    assert entry["agents_ok"] == 1 and why in entry["failures"][0]["error"]


def test_a_record_over_the_size_limit_is_not_read(tmp_path):
    run_dir = _left(tmp_path, _good(1))
    with open(run_dir.agent_path("set", 1), "wb") as f:
        f.truncate(MAX_RECORD_BYTES + 1)  # sparse: no need to write it
    merged, _ = _collect(tmp_path)
    assert "more than the" in merged["benchmarks"][0]["failures"][0]["error"]


def test_hostile_host_metrics_are_a_warning_not_a_failed_collect(tmp_path):
    run_dir = _left(tmp_path, _good(1))
    run_dir.append_host_metrics("10.0.0.2", b'{"t": 1, "cpu": "lots"}\nnot json\n{"t": 3}\n')
    (run_dir.host_dir("10.0.0.3")).mkdir(parents=True)
    (run_dir.host_dir("10.0.0.3") / "facts.json").write_text("{broken")
    merged, said = _collect(tmp_path)
    assert merged["status"] == "ok" and merged["benchmarks"][0]["agents_ok"] == 2
    assert any("warning: 10.0.0.2: its host metrics cannot be used" in line for line in said)
    assert any("warning: 10.0.0.3: facts.json cannot be read" in line for line in said)
