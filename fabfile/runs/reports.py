"""Reading the run store on the controller: run lists, tables, comparisons, pictures, one HTML page.

No SSH here: everything comes from ``runs/<run-id>/`` (see fabfile.runs.store). A run is named by
its id, its directory, or nothing (``runs/latest``); ``inv compare`` sides may list several
runs, comma-separated, whose repetitions are pooled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import compare as comparing
from bench.report import expect, history, tables
from bench.report import hosts as host_metrics
from bench.report import html as html_page
from bench.report import merge as result
from bench.report.document import RunDoc
from fabfile.errors import PipelineError
from fabfile.runs.store import RunDir, dir_name, list_runs, resolve


class ReportError(PipelineError):
    """A run that cannot be read or shown; the message names it."""


def runs_table(root: Path, fmt: str = "simple") -> str:
    """id, date, name, benchmarks, status of every run, oldest first (the text formats shorten
    long benchmark lists; json gives them all, space-separated). csv is one row per run with
    each benchmark's headline figures (bench.report.history), for change-point detectors."""
    _check(fmt)
    runs = list_runs(root)
    if fmt == "csv":
        return history.render_csv([_with_benchmarks(root, r) for r in runs])
    if not runs and fmt in ("simple", "github"):
        return f"no runs yet under {root}/"
    text = fmt in ("simple", "github")
    rows = [[r["run_id"], _date(r["started_at"]), r["name"],
             _names(r["benchmarks"]) if text else " ".join(r["benchmarks"]), r["status"]] for r in runs]
    return tables.plain_table(["run", "started (UTC)", "name", "benchmarks", "status"], rows, fmt)


def _with_benchmarks(root: Path, listed: dict[str, Any]) -> dict[str, Any]:
    """A listed run with its run.json's merged benchmarks (none while it is not collected; a run.json
    that cannot be read keeps its row, empty, its status saying why)."""
    path = root / listed["run_id"] / "run.json"
    if not path.is_file():
        return {**listed, "benchmarks": []}
    try:
        return {**listed, "benchmarks": result.load_run(path)["benchmarks"]}
    except result.ResultError as exc:
        return {**listed, "status": f"unreadable: {exc}", "benchmarks": []}


def _date(epoch: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if isinstance(epoch, (int, float)) else "-"


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")


def load(root: Path, ref: str | None) -> tuple[RunDir, RunDoc]:
    """A collected run: its directory and its run.json (upgraded to the current schema)."""
    run_dir = resolve(root, ref)
    path = run_dir.path / "run.json"
    if not path.is_file():
        raise ReportError(f"run {run_dir.run_id} has no run.json yet: run `inv collect --run {run_dir.run_id}`")
    try:
        return run_dir, result.load_run(path)
    except result.ResultError as exc:
        raise ReportError(str(exc)) from None


def report(root: Path, ref: str | None, fmt: str, detail: bool) -> str:
    _check(fmt)
    _, run = load(root, ref)
    verdicts = expect.render(run) if fmt in ("simple", "github") else ""
    return tables.report(run, fmt, detail=detail) + (f"\n\nexpectations:\n{verdicts}" if verdicts else "")


def compare(root: Path, base: str, new: str, fmt: str, fail_on: str | None = None) -> tuple[str, list[str]]:
    """``base`` and ``new``: one run each, or several comma-separated (their samples pooled).

    The table, and with ``fail_on`` (e.g. ``"5%"``) one line per benchmark whose throughput fell,
    or p99 rose, significantly and by more than that (bench.report.expect.regressions)."""
    _check(fmt)
    try:
        limit = expect.parse_percent(fail_on) if fail_on is not None else None
    except expect.ExpectError as exc:
        raise ReportError(str(exc)) from None
    base_runs = [load(root, ref)[1] for ref in _refs(base)]
    new_runs = [load(root, ref)[1] for ref in _refs(new)]
    labels = (_side_label(base_runs), _side_label(new_runs))
    try:
        comparisons = comparing.compare(base_runs, new_runs)
        table = comparing.render(comparisons, fmt, labels)
    except comparing.CompareError as exc:
        raise ReportError(str(exc)) from None
    if limit is None:
        return table, []
    what = {"ops/s": "throughput", "p99": "p99"}
    return table, [f"{c.benchmark}: {what[c.metric]} {c.change_pct:+.2f}% (p={c.p_value}) is beyond --fail-on {fail_on}"
                   for c in expect.regressions(comparisons, limit)]


def _refs(side: str) -> list[str]:
    refs = [r.strip() for r in side.split(",") if r.strip()]
    if not refs:
        raise ReportError(f"no run named in {side!r}")
    return refs


def _side_label(runs: Sequence[RunDoc]) -> str:
    return ", ".join(f"{r.get('run_id')} ({r.get('name')})" for r in runs)


def host_samples(run_dir: RunDir) -> dict[str, list[dict[str, Any]]]:
    try:
        return {host: host_metrics.parse_ndjson(run_dir.host_metrics_text(host), str(run_dir.host_metrics_path(host)))
                for host in run_dir.observed_hosts()}
    except host_metrics.MetricsError as exc:
        raise ReportError(str(exc)) from None


def plot(root: Path, ref: str | None, others: str | None = None) -> list[Path]:
    """Write the run's pictures into ``runs/<run-id>/plots/``; ``others`` join its spectra."""
    plots = _plots_module()
    run_dir, run = load(root, ref)
    other_runs = [load(root, r)[1] for r in _refs(others)] if others else []
    return plots.write_all(run, host_samples(run_dir), run_dir.path / "plots", others=other_runs,
                           file_stem=dir_name)


def _plots_module() -> Any:
    try:
        from bench.report import plots
    except ImportError as exc:
        raise ReportError(f"pictures need matplotlib ({exc}): pip install -e '.[plot]'") from None
    return plots


def write_html(root: Path, ref: str | None) -> Path:
    """``runs/<run-id>/report.html``: tables, expectations, time series, latency spectra, failures
    and warnings in one self-contained file (bench.report.html)."""
    run_dir, run = load(root, ref)
    pictures = {path.name: path.read_bytes() for path in plot(root, ref)}
    notes = tables.failure_lines(run) + host_metrics.warnings(run)
    out = run_dir.path / "report.html"
    out.write_text(html_page.page(run, pictures, notes=notes, file_stem=dir_name))
    return out


def _check(fmt: str) -> None:
    if fmt not in tables.FORMATS:
        raise ReportError(f"unknown format {fmt!r}; one of {', '.join(tables.FORMATS)}")
