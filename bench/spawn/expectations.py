"""Expectations as the spawn file writes them: what a benchmark must reach.

A benchmark may say::

    expect = ["p99 < 5ms", "ops/s > 100000", "errors == 0"]

Each expectation is ``METRIC OP NUMBER[UNIT]``:

* latency ``p50`` ``p90`` ``p99`` ``p99.9`` ``max`` ``mean``, with a unit: ``us``, ``ms`` or ``s``;
* ``ops/s`` (the benchmark's throughput), ``errors`` (failed ops, a whole number) and
  ``error%`` (failed ops in percent of all ops; a trailing ``%`` on the number is allowed);
* ``rate``: the highest rate a capacity search found to meet its SLO (a benchmark with
  ``search`` only), in ops/s;
* OP one of ``<`` ``<=`` ``>`` ``>=`` ``==`` ``!=``.

:func:`parse` refuses anything else with an :class:`ExpectError` naming the culprit. Judging them
against a merged result is the reporter's (bench.report.expect).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

LATENCY = ("p50", "p90", "p99", "p99.9", "max", "mean")
COUNTS = ("ops/s", "errors", "error%", "rate")
UNITS = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0}  # in microseconds
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_FORM = re.compile(r"\s*(?P<metric>[a-z0-9/%.]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<number>[0-9]+(?:\.[0-9]+)?)"
                   r"\s*(?P<unit>[a-z%]*)\s*\Z")


class ExpectError(ValueError):
    """A malformed expectation; the message names it and says what is allowed."""


@dataclass(frozen=True)
class Expectation:
    text: str  # as written
    metric: str  # one of LATENCY or COUNTS
    op: str
    threshold: float  # as written, in ``unit`` for a latency
    unit: str  # "us" | "ms" | "s" for a latency, "" otherwise


def parse(text: object) -> Expectation:
    if not isinstance(text, str):
        raise ExpectError(f"{text!r} is not a string like \"p99 < 5ms\"")
    match = _FORM.match(text)
    if match is None:
        raise ExpectError(f"{text!r} is not METRIC OP NUMBER[UNIT] (e.g. \"p99 < 5ms\", \"ops/s > 100000\", "
                          f"\"errors == 0\"); operators: {' '.join(sorted(OPERATORS))}")
    metric, op, number, unit = match.group("metric", "op", "number", "unit")
    value = float(number)
    if metric in LATENCY:
        if unit not in UNITS:
            raise ExpectError(f"{text!r}: a latency needs a unit, one of {', '.join(UNITS)} (e.g. \"{metric} < 5ms\")")
        return Expectation(text, metric, op, value, unit)
    if metric not in COUNTS:
        raise ExpectError(f"{text!r}: unknown metric {metric!r}; one of {', '.join(LATENCY + COUNTS)}")
    if unit and not (metric == "error%" and unit == "%"):
        raise ExpectError(f"{text!r}: {metric} takes a plain number, not {unit!r}")
    if metric == "errors" and not value.is_integer():
        raise ExpectError(f"{text!r}: errors is a whole number")
    return Expectation(text, metric, op, value, "")


def parse_all(texts: object) -> tuple[Expectation, ...]:
    """A list of expectations; an ExpectError names the first bad one by its index."""
    if not isinstance(texts, (list, tuple)):
        raise ExpectError(f"{texts!r} is not a list of expectations like [\"p99 < 5ms\"]")
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(parse(text))
        except ExpectError as exc:
            raise ExpectError(f"[{i}]: {exc}") from None
    return tuple(out)
