"""fabfile.runs.reports and the run store's listing: runs, report, compare and the HTML page from files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runfactory import T0, make_run, sample, spread

from fabfile.runs import reports
from fabfile.runs.store import RunDir, list_runs

BENCHES = [("set", spread(100, 60)), ("get", spread(50, 60))]


def store(root: Path, run_id: str, *, collected: bool = True, status: str = "ok", started: float = T0,
          run: dict | None = None) -> RunDir:
    run_dir = RunDir(root, run_id)
    run_dir.start("name = 'x'\n", {"name": "spawn", "benchmarks": [{"name": n} for n, _ in BENCHES],
                                   "hosts": {"servers": ["s1"], "agents": ["a1"]}}, {},
                  {"run_id": run_id, "name": "spawn", "started_at": started, "status": status})
    if collected:
        run_dir.write_run(run or make_run(run_id, BENCHES))
    return run_dir


def test_list_runs_oldest_first_with_uncollected_ones_said(tmp_path):
    store(tmp_path, "r2", started=T0 + 60)
    store(tmp_path, "r1", collected=False, status="interrupted")
    (tmp_path / "not-a-run").mkdir()
    rows = list_runs(tmp_path)
    assert [r["run_id"] for r in rows] == ["r1", "r2"]
    assert rows[0]["status"] == "interrupted (not collected)" and rows[0]["benchmarks"] == ["set", "get"]
    assert rows[1]["status"] == "ok" and rows[1]["name"] == "spawn"
    text = reports.runs_table(tmp_path)
    assert text.splitlines()[0].split() == ["run", "started", "(UTC)", "name", "benchmarks", "status"]
    assert reports.runs_table(tmp_path, "csv").splitlines()[2] == "r2,2026-09-21 14:14:20,spawn,set get,ok"
    assert reports.runs_table(tmp_path / "none") == f"no runs yet under {tmp_path / 'none'}/"


def test_report_of_an_uncollected_run_says_what_to_do(tmp_path):
    store(tmp_path, "r1", collected=False)
    with pytest.raises(reports.ReportError, match=r"run r1 has no run.json yet: run `inv collect --run r1`"):
        reports.report(tmp_path, "r1", "simple", False)
    with pytest.raises(FileNotFoundError):
        reports.report(tmp_path, "nope", "simple", False)


def test_report_reads_latest_and_a_broken_run_json_is_named(tmp_path):
    run_dir = store(tmp_path, "r1")
    assert reports.report(tmp_path, None, "simple", False).splitlines()[0].startswith("benchmark")
    (run_dir.path / "run.json").write_text("{")
    with pytest.raises(reports.ReportError, match="run.json: not JSON"):
        reports.report(tmp_path, "r1", "simple", False)


def test_compare_runs_by_id_and_pooled(tmp_path):
    for k in (1, 2):
        store(tmp_path, f"a{k}", run=make_run(f"a{k}", BENCHES, repeat=2))
    store(tmp_path, "b", run=make_run("b", BENCHES, repeat=4, scale={"set": 2}))
    text, failing = reports.compare(tmp_path, "a1,a2", str(tmp_path / "b"), "simple")
    assert failing == []
    assert text.splitlines()[:2] == ["A: a1 (spawn), a2 (spawn)", "B: b (spawn)"]
    assert "n=4+4" in text


def test_html_page_holds_tables_and_inline_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    run = make_run("r1", BENCHES)
    run["hosts"] = {"s1": {"roles": ["server"], "facts": None, "metrics": None, "benchmarks": {}}}
    run_dir = store(tmp_path, "r1", run=run)
    run_dir.append_host_metrics("s1", b"".join(json.dumps(sample(T0 + i)).encode() + b"\n" for i in range(5)))
    page = reports.write_html(tmp_path, "r1").read_text()
    assert page.startswith("<!doctype html>") and "<h2>Benchmarks</h2>" in page and "<h2>Hosts</h2>" in page
    assert page.count('src="data:image/png;base64,') == 5  # throughput, latency, hosts, 2 spectra
    assert "http" not in page.split("<body>")[1]  # self-contained: nothing fetched
    assert (run_dir.path / "plots" / "hosts.png").is_file()
