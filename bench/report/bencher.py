"""A run in the Bencher Metric Format (export/bencher.json), for ``bencher run --adapter json``.

``{benchmark: {measure: {"value", "lower_value"?, "upper_value"?}}}``, one benchmark per
fleetbench benchmark, with the measures:

* ``throughput``: ops/s (Bencher's built-in Throughput measure, operations / second);
* ``latency-p50``, ``latency-p90``, ``latency-p99``, ``latency-p99.9``: nanoseconds, the unit of
  Bencher's built-in Latency measure (Bencher creates a measure named in BMF on first use).

A repeated benchmark's value is its folded figure (all repetitions together) and
``lower_value``/``upper_value`` the lowest and highest of its repetitions' own. A benchmark
that measured nothing is left out. The figures are bench.report.headline's.
"""

from __future__ import annotations

import json

from bench.report import headline
from bench.report.document import RunDoc

UNITS = {"ops/s": "ops/s", "us": "ns", "ops": "ops"}  # a figure's unit -> Bencher's


def measure_name(figure: headline.Figure) -> str:
    if figure is headline.THROUGHPUT:
        return "throughput"
    return f"latency-{figure.key}" if figure.unit == "us" else figure.key


def metrics(run: RunDoc) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for entry in run.get("benchmarks", ()):
        measures: dict[str, dict[str, float]] = {}
        for figure in headline.FIGURES:
            value = figure.read(entry)
            if value is None:
                continue
            unit = UNITS[figure.unit]
            metric = {"value": headline.in_unit(figure, value, unit)}
            spread = headline.spread(figure, entry)
            if spread is not None:
                metric["lower_value"], metric["upper_value"] = (headline.in_unit(figure, v, unit) for v in spread)
            measures[measure_name(figure)] = metric
        if measures:
            out[str(entry["name"])] = measures
    return out


def render(run: RunDoc) -> str:
    return json.dumps(metrics(run), indent=2, ensure_ascii=False) + "\n"
