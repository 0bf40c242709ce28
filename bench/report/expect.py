"""Expectations: what a benchmark must reach, checked against its merged result.

A benchmark in the spawn file may say::

    expect = ["p99 < 5ms", "ops/s > 100000", "errors == 0"]

Each expectation is ``METRIC OP NUMBER[UNIT]``:

* latency ``p50`` ``p90`` ``p99`` ``p99.9`` ``max`` ``mean``, with a unit: ``us``, ``ms`` or ``s``
  (read from the benchmark's merged latency histogram, all agents and repetitions together);
* ``ops/s`` (the benchmark's throughput), ``errors`` (failed ops, a whole number) and
  ``error%`` (failed ops in percent of all ops; a trailing ``%`` on the number is allowed);
* ``rate``: the highest rate a capacity search found to meet its SLO (bench.report.search);
  a search that found none (its lowest rate failed) measured nothing;
* OP one of ``<`` ``<=`` ``>`` ``>=`` ``==`` ``!=``.

bench.spawn.expectations parses them (an :class:`ExpectError` names a malformed one);
:func:`check` gives each expectation's verdict with the measured value. A benchmark that measured
nothing (every agent failed) fails every expectation: nothing was shown to hold.

``inv compare --fail-on 5%`` uses :func:`regressions`: the comparisons whose throughput fell, or
whose p99 rose, significantly (bench.report.compare's Mann-Whitney test) and by more than 5%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from bench.report.document import BenchmarkEntry, KeptVerdict, RunDoc
from bench.spawn.expectations import LATENCY, OPERATORS, UNITS, Expectation, ExpectError


@dataclass(frozen=True)
class Verdict:
    benchmark: str
    expectation: Expectation
    measured: float | None  # in the expectation's own unit; None: nothing measured
    passed: bool
    short: str | None = None  # why it is not judged: some of the benchmark's agents failed

    @property
    def measured_text(self) -> str:
        text = self._value_text()
        return f"{text}, but {self.short}" if self.short and self.measured is not None else text

    def _value_text(self) -> str:
        e = self.expectation
        if self.measured is None:
            return "not measured"
        if e.metric == "rate":
            return f"found rate = {self.measured:,.0f} ops/s"
        if e.metric in LATENCY:
            return f"{e.metric} = {_number(self.measured)}{e.unit}"
        if e.metric == "error%":
            return f"error% = {_number(self.measured)}%"
        if e.metric == "errors":
            return f"errors = {int(self.measured)}"
        return f"ops/s = {self.measured:,.0f}"

    def to_dict(self) -> KeptVerdict:
        return {"expect": self.expectation.text, "passed": self.passed, "measured": self.measured,
                "measured_text": self.measured_text}


def measured(entry: BenchmarkEntry, e: Expectation) -> float | None:
    """The entry's value of ``e.metric`` in ``e``'s unit, or None when it measured nothing."""
    if e.metric == "rate":
        section = entry.get("search")
        found = section["found"] if section is not None else None
        return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else None
    latency = entry.get("latency_us") or {}
    ops, errors = int(entry.get("ops") or 0), int(entry.get("errors") or 0)
    if e.metric in LATENCY:
        if not latency.get("count"):
            return None
        return float(latency[e.metric]) / UNITS[e.unit]
    if not entry.get("agents_ok") and not ops and not errors:
        return None
    if e.metric == "ops/s":
        return float(entry.get("ops_per_s") or 0.0)
    if e.metric == "errors":
        return float(errors)
    return 100.0 * errors / (ops + errors) if ops + errors else 0.0


def check(entry: BenchmarkEntry, expectations: Sequence[Expectation]) -> list[Verdict]:
    """Each expectation's verdict. A benchmark that some of its agents failed (lost hosts
    included) fails them all: what it measured is not what was asked for."""
    name = str(entry.get("name"))
    planned, ok = entry.get("agents"), entry.get("agents_ok")
    short = (f"{planned - ok} of {planned} agents failed" if isinstance(planned, int) and isinstance(ok, int)
             and ok < planned else None)
    verdicts = []
    for e in expectations:
        value = measured(entry, e)
        passed = short is None and value is not None and OPERATORS[e.op](value, e.threshold)
        verdicts.append(Verdict(name, e, value, passed, short))
    return verdicts


def apply(run: RunDoc, wanted: Mapping[str, Sequence[Expectation]]) -> list[Verdict]:
    """Check each benchmark of ``run`` against its expectations (``wanted``, by benchmark name)
    and keep the verdicts in its entry, as ``"expectations"`` (see :meth:`Verdict.to_dict`)."""
    verdicts: list[Verdict] = []
    for entry in run.get("benchmarks", ()):
        mine = wanted.get(str(entry.get("name")))
        if mine:
            checked = check(entry, mine)
            entry["expectations"] = [v.to_dict() for v in checked]
            verdicts += checked
    return verdicts


def failed(run: RunDoc) -> list[tuple[str, KeptVerdict]]:
    """(benchmark, verdict) of every failed expectation kept in ``run``."""
    return [(str(e.get("name")), v) for e in run.get("benchmarks", ()) for v in e.get("expectations") or ()
            if not v.get("passed")]


def render(run: RunDoc) -> str:
    """The expectations kept in ``run``, one row each; "" when it has none."""
    rows = [[e.get("name"), v.get("expect"), v.get("measured_text"), "ok" if v.get("passed") else "FAILED"]
            for e in run.get("benchmarks", ()) for v in e.get("expectations") or ()]
    if not rows:
        return ""
    return tabulate(rows, headers=["benchmark", "expect", "measured", "verdict"], tablefmt="simple")


def _number(value: float) -> str:
    """Four significant digits, never in exponent form: 0.004123, 4.99, 4990, 120000."""
    if value == 0:
        return "0"
    decimals = min(6, max(0, 3 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# ---------------------------------------------------------------------------------------------
# inv compare --fail-on


def parse_percent(text: object) -> float:
    """``"5%"`` or ``"5"`` -> 5.0."""
    raw = str(text).strip()
    number = raw[:-1] if raw.endswith("%") else raw
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ExpectError(f"--fail-on {text!r} is not a percentage like 5%")
    return value


def regressions(comparisons: Sequence[Any], limit_pct: float) -> list[Any]:
    """The bench.report.compare comparisons that fail ``--fail-on limit_pct``: throughput down,
    or p99 up, significantly and by more than ``limit_pct`` percent."""
    out = []
    for c in comparisons:
        if c.verdict != "worse" or c.change_pct is None:
            continue
        if (c.metric == "ops/s" and -c.change_pct > limit_pct) or (c.metric == "p99" and c.change_pct > limit_pct):
            out.append(c)
    return out
