"""A run as github-action-benchmark's custom JSON: two files, one per direction.

The action (``benchmark-action/github-action-benchmark``) reads a list of
``{"name", "unit", "value", "range"?, "extra"?}`` and takes one ``tool`` per file, which says
whether bigger or smaller is better, so a run gives two lists:

* ``customBiggerIsBetter`` (export/github-action-benchmark.bigger.json): each benchmark's
  throughput, ``"<benchmark> throughput"`` in ops/s;
* ``customSmallerIsBetter`` (export/github-action-benchmark.smaller.json): its latency
  percentiles, ``"<benchmark> p50"`` .. ``"<benchmark> p99.9"`` in ms.

The figures are bench.report.headline's. A repeated benchmark's ``range`` is ``"± h"``, h half
the spread of its repetitions (the form the action reads back as a number); ``extra`` (the
chart's tooltip) names the run and its agents, ops and errors. A benchmark that measured nothing
is left out; a run that measured nothing gives ``[]``, which the action refuses.
"""

from __future__ import annotations

import json
from typing import Any

from bench.report import headline
from bench.report.document import BenchmarkEntry, RunDoc

BIGGER, SMALLER = "customBiggerIsBetter", "customSmallerIsBetter"
UNITS = {"ops/s": "ops/s", "us": "ms", "ops": "ops"}  # a figure's unit -> the unit the charts show
_NAMES = {headline.THROUGHPUT.key: "throughput"}


def entries(run: RunDoc, tool: str) -> list[dict[str, Any]]:
    """The list for one tool (BIGGER or SMALLER)."""
    if tool not in (BIGGER, SMALLER):
        raise ValueError(f"tool {tool!r} is not {BIGGER} or {SMALLER}")
    figures = [f for f in headline.FIGURES if f.bigger_is_better == (tool == BIGGER)]
    out: list[dict[str, Any]] = []
    for entry in run.get("benchmarks", ()):
        for figure in figures:
            value = figure.read(entry)
            if value is None:
                continue
            unit = UNITS[figure.unit]
            item: dict[str, Any] = {"name": f"{entry['name']} {_NAMES.get(figure.key, figure.key)}", "unit": unit,
                                    "value": headline.in_unit(figure, value, unit)}
            spread = headline.spread(figure, entry)
            if spread is not None:
                low, high = (headline.in_unit(figure, v, unit) for v in spread)
                item["range"] = f"± {(high - low) / 2:.3f}"
            item["extra"] = _extra(run, entry)
            out.append(item)
    return out


def render(run: RunDoc, tool: str) -> str:
    return json.dumps(entries(run, tool), indent=2, ensure_ascii=False) + "\n"


def files(run: RunDoc) -> dict[str, str]:
    return {"github-action-benchmark.bigger.json": render(run, BIGGER),
            "github-action-benchmark.smaller.json": render(run, SMALLER)}


def _extra(run: RunDoc, entry: BenchmarkEntry) -> str:
    lines = [f"run {run.get('run_id', '')}",
             f"{entry.get('agents_ok', 0)}/{entry.get('agents', 0)} agents, {entry.get('ops', 0)} ops, "
             f"{entry.get('errors', 0)} errors in {float(entry.get('seconds') or 0.0):.1f} s"]
    if entry.get("repeat"):
        lines.append(f"{entry['repeat']} repetitions")
    return "\n".join(lines)
