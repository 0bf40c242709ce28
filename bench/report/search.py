"""A capacity search in run.json: its steps folded into one entry, its table.

The hosts ran the search (bench.agent.hostrun, decisions by bench.wire.search); each step's
agents left results labelled ``name#sk`` (bench.wire.labels.step_label), which the collect
merges like any benchmark (bench.report.merge.merge_benchmark: histograms added exactly).
:func:`fold` then replaces a search's step entries with one entry ``name``:

* its figures (ops, ops/s, latency, histogram, ...) are the found step's: the highest rate that
  met the SLO (the last step's when none did), so the benchmark table and every export show the
  capacity and what it looked like;
* ``agents``, ``agents_ok`` and ``failures`` count every step (a failure carries ``"step"``), so
  an agent lost in any step makes the run partial;
* ``search``: what was asked (``range`` [low, high], ``slo``, ``step_s``, ``precision``,
  ``late_share``) and what
  was found (``found``: the highest passing rate or None, ``last_pass``, ``first_fail``,
  ``status``: found | lowest-fails | not-saturated | unfinished, ``text``), and ``rows``: one per
  step in the order run (step, rate, intended_ops, sent_ops, sent_pct: the ops sent of those the
  rate intended, which must be 99%; achieved: the ops/s completed over the agents' time, its
  drain included; p50_us, p99_us, late_ops, late_pct, passed, limit, why);
* ``steps``: the step entries themselves (each with ``"step"``), where their timeseries live.

Each step's verdict is :func:`bench.wire.search.judge` replayed on its merged entry: the same
figures the coordinator judged (its histograms read by bench.wire.hdr give what hdrh gives), so
the rows say what the hosts decided. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from bench.report.document import BenchmarkEntry, RunDoc, SearchRow, SearchSection
from bench.wire import search
from bench.wire.labels import split_step

COLUMNS = (
    ("step", "", "right"), ("rate", ",", "right"), ("sent %", ".1f", "right"), ("achieved", ",.0f", "right"),
    ("p50 (ms)", ".3f", "right"),
    ("p99 (ms)", ".3f", "right"), ("late", ",", "right"), ("late %", ".2f", "right"), ("verdict", "", "left"),
    ("why", "", "left"),
)
HEADERS = [c[0] for c in COLUMNS]


def measured(entry: BenchmarkEntry, rate: float, spec: search.SearchSpec) -> search.Measured:
    """A merged step entry as bench.wire.search reads a step: intended ops are the rate over the
    step time, the agents those that succeeded."""
    latency = entry.get("latency_us") or {}
    return search.Measured(
        rate=rate, agents=int(entry.get("agents_ok") or 0), ops=int(entry.get("ops") or 0),
        intended=rate * spec.step_s, errors=int(entry.get("errors") or 0), late=int(entry.get("late_ops") or 0),
        late_busy=int(entry.get("late_busy_ops") or 0), late_loop=int(entry.get("late_loop_ops") or 0),
        seconds=float(entry.get("seconds") or 0.0),
        latency_us={k: float(latency.get(k) or 0.0) for k in search.LATENCY},
        failed=tuple(str(f.get("error")) for f in entry.get("failures") or () if not f.get("partial")))


def row(step: int, m: search.Measured, verdict: search.Verdict) -> SearchRow:
    sent = m.ops + m.errors
    return {"step": step, "rate": m.rate, "intended_ops": round(m.intended, 3), "sent_ops": sent,
            "sent_pct": round(100.0 * sent / m.intended, 3) if m.intended else None,
            "achieved": round(m.achieved, 3), "p50_us": m.latency_us.get("p50"),
            "p99_us": m.latency_us.get("p99"), "late_ops": m.late,
            "late_pct": round(100.0 * m.late / sent, 3) if sent else None, "passed": verdict.passed,
            "limit": verdict.limit, "why": verdict.why}


def fold(entries: Sequence[BenchmarkEntry], specs: Mapping[str, search.SearchSpec],
         rates: Mapping[str, float]) -> list[BenchmarkEntry]:
    """``entries`` with each search's step entries (``name#sk``) replaced by one entry ``name``, in
    the place of its first step (see the module docstring). ``specs``: each search by benchmark
    name; ``rates``: each step label's rate, as its agents' jobs said. A search entry that is
    already there (none of its steps left a record) keeps its place and gains its ``search``."""
    steps: dict[str, list[tuple[int, BenchmarkEntry]]] = {}
    out: list[BenchmarkEntry | str] = []
    for entry in entries:
        name, k = split_step(str(entry.get("name", "")))
        if k is None or name not in specs:
            out.append(entry)
            continue
        if name not in steps:
            steps[name] = []
            out.append(name)  # its place
        steps[name].append((k, entry))
    folded: list[BenchmarkEntry] = []
    for item in out:
        if isinstance(item, str):
            folded.append(_fold_one(item, sorted(steps[item], key=lambda p: p[0]), specs[item], rates))
        elif item.get("name") in specs and item.get("name") not in steps:  # no step left a record
            spec = specs[str(item["name"])]
            folded.append({**item, "search": _section(spec, search.outcome(spec, []), [])})
        else:
            folded.append(item)
    return folded


def _section(spec: search.SearchSpec, found: search.Outcome, rows: list[SearchRow]) -> SearchSection:
    """run.json's ``search`` of an entry: what was asked, what was found, every step."""
    return {"range": [spec.low, spec.high], "slo": [s.text for s in spec.slo], "step_s": spec.step_s,
            "precision": spec.precision, "late_share": spec.late_share, "found": found.rate,
            "last_pass": found.last_pass, "first_fail": found.first_fail, "status": found.status,
            "text": found.text, "rows": rows}


def _fold_one(name: str, steps: Sequence[tuple[int, BenchmarkEntry]], spec: search.SearchSpec,
              rates: Mapping[str, float]) -> BenchmarkEntry:
    verdicts: list[search.Verdict] = []
    rows: list[SearchRow] = []
    for k, entry in steps:
        rate = float(rates.get(str(entry.get("name")), 0.0))
        m = measured(entry, rate, spec)
        verdict = search.judge(spec, m)
        verdicts.append(verdict)
        rows.append(row(k, m, verdict))
    found = search.outcome(spec, verdicts)
    shown = next((e for (_, e), v in zip(steps, verdicts, strict=True) if v.passed and v.rate == found.rate),
                 steps[-1][1])
    entry = cast(BenchmarkEntry, {key: value for key, value in shown.items() if key != "timeseries"})
    entry["name"] = name
    entry["agents"] = sum(int(e.get("agents") or 0) for _, e in steps)
    entry["agents_ok"] = sum(int(e.get("agents_ok") or 0) for _, e in steps)
    entry["failures"] = [cast(Any, {**f, "step": k}) for k, e in steps for f in e.get("failures") or ()]
    entry["agent_results"] = [{**r, "step": k} for k, e in steps for r in e.get("agent_results") or ()]
    entry["search"] = _section(spec, found, rows)
    entry["steps"] = [{**e, "step": k} for k, e in steps]
    return entry


def tables(run: RunDoc) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) of each search in ``run``: its steps, and in the title what was found."""
    out = []
    for entry in run.get("benchmarks", ()):
        found = entry.get("search")
        if found is None:
            continue
        rows = [[r.get("step"), _whole(r.get("rate")), r.get("sent_pct"), r.get("achieved"), _ms(r.get("p50_us")),
                 _ms(r.get("p99_us")),
                 r.get("late_ops"), r.get("late_pct"), "pass" if r.get("passed") else f"FAIL ({r.get('limit')})",
                 r.get("why")] for r in found.get("rows") or ()]
        slo = ", ".join(str(s) for s in found.get("slo") or ())
        out.append((f"capacity search {entry.get('name')} (SLO {slo}): {found.get('text')}", HEADERS, rows))
    return out


def _whole(rate: Any) -> Any:
    """A rate as asked for: an int when whole (so the table shows no decimals it never had)."""
    return int(rate) if isinstance(rate, float) and rate.is_integer() else rate


def _ms(us: Any) -> float | None:
    return None if us is None else float(us) / 1000
