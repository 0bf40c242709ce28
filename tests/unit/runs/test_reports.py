"""fabfile.runs.reports and the run store's listing: runs, report, compare and the HTML page from files."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from runfactory import T0, make_run, sample, spread

from bench.report import headline, history
from fabfile.runs import reports
from fabfile.runs.store import RunDir, list_runs

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "exports"
UPDATE = os.environ.get("FLEETBENCH_UPDATE_GOLDEN") == "1"

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
    assert json.loads(reports.runs_table(tmp_path, "json"))[1] == {
        "run": "r2", "started (UTC)": "2026-09-21 14:14:20", "name": "spawn", "benchmarks": "set get", "status": "ok"}
    assert reports.runs_table(tmp_path / "none") == f"no runs yet under {tmp_path / 'none'}/"


def test_runs_csv_is_one_row_per_run_with_every_benchmarks_headline_figures(tmp_path):
    store(tmp_path, "r1", collected=False, status="interrupted")
    r2 = make_run("r2", BENCHES, repeat=2)
    store(tmp_path, "r2", started=T0 + 60, run=r2)
    r3 = make_run("r3", [("set", spread(120, 60)), ("scan", spread(900, 30))])
    store(tmp_path, "r3", started=T0 + 120, run=r3)
    broken = store(tmp_path, "r4", started=T0 + 180)
    (broken.path / "run.json").write_text(json.dumps({"schema_version": 99, "benchmarks": []}))
    text = reports.runs_table(tmp_path, "csv")
    table = list(csv.reader(io.StringIO(text)))
    figures = ["ops_per_s", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "errors"]
    assert table[0] == ["time", "run", "name", "status", *(f"{b}.{f}" for b in ("set", "get", "scan") for f in figures)]
    assert [row[:4] for row in table[1:]] == [
        ["2026-09-21T14:13:20Z", "r1", "spawn", "interrupted (not collected)"],
        ["2026-09-21T14:14:20Z", "r2", "spawn", "ok"],
        ["2026-09-21T14:15:20Z", "r3", "spawn", "ok"],
        ["2026-09-21T14:16:20Z", "r4", "spawn", "unreadable: " + table[4][3].split(": ", 1)[1]]]
    assert "schema_version 99 is newer" in table[4][3]
    assert table[1][4:] == [""] * 18 and table[4][4:] == [""] * 18
    for row, run in ((table[2], r2), (table[3], r3)):
        cells = dict(zip(table[0], row, strict=True))
        for entry in run["benchmarks"]:
            name = entry["name"]
            assert float(cells[f"{name}.ops_per_s"]) == entry["ops_per_s"]  # a repeated one: all repetitions
            assert float(cells[f"{name}.p99_ms"]) == entry["latency_us"]["p99"] / 1000
            assert int(cells[f"{name}.errors"]) == entry["errors"]
    assert table[3][10:16] == [""] * 6  # r3 ran no get
    # as a change-point detector reads it (Apache Otava's csv importer): a time column it parses,
    # and float() of every cell of the metric columns it is pointed at, over runs that share them
    for row in table[2:4]:
        assert datetime.fromisoformat(row[0].replace("Z", "+00:00")).tzinfo is not None
        [float(cell) for cell in row[4:10]]
    golden = GOLDEN / "runs.csv"
    text = text.replace(str(tmp_path), "<runs>") + "\n"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text()


def test_history_columns_stay_put_as_runs_add_benchmarks():
    first = {"run_id": "a", "started_at": T0, "name": "x", "status": "ok",
             "benchmarks": make_run("a", [("set", spread(100, 30))])["benchmarks"]}
    later = {"run_id": "b", "started_at": T0 + 1, "name": "x", "status": "ok",
             "benchmarks": make_run("b", [("new", spread(100, 30)), ("set", spread(100, 30))])["benchmarks"]}
    alone, _ = history.rows([first])
    both, rows = history.rows([first, later])
    assert both[:len(alone)] == alone and both[len(alone):][0] == "new.ops_per_s"
    assert history.column("set", headline.LATENCY[3]) == "set.p99.9_ms"
    assert rows[0][len(alone):] == [None] * len([f for f in history.FIGURES if f.only_with is None])  # no search here


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
