"""A capacity search's decisions: judge a step, choose the next rate, say what was found.

A benchmark with ``search = { rate = [low, high], slo = [...], step = "20s", precision = "5%" }``
runs open-loop steps, each at one rate for ``step`` seconds, and looks for the highest rate that
still meets its SLO. The steps run on the hosts, and the host that coordinates the barrier
(bench.agent.barrier) decides, with the functions here, after every step:

* :func:`agent_summary` turns one agent's result into what a step needs of it (ops, intended
  ops, errors, late ops, its latency histogram), :func:`combine` adds summaries exactly (counts
  summed, histograms added: never averaged percentiles), :func:`measure` reads a combined one;
* :func:`judge`: a step passes when every SLO holds *and* the fleet really sent the rate
  (achieved >= 99% of intended, late ops < 1%, or the search's own ``late`` share); otherwise
  it says which side was the limit: the server (an SLO broken, or every connection busy waiting
  on it) or the load generator (its loop was late: more agents or hosts would be needed to
  measure the server);
* :func:`next_rate`: a ramp from ``low``, doubling, up to the first failure, then bisection
  between the last pass and the first fail until ``(fail - pass) / pass <= precision``;
* :func:`outcome`: the highest passing rate with its interval, or why there is none (the lowest
  rate already fails; the highest passes: the server was not saturated).

The controller's report (bench.report.search) replays :func:`judge` on the exactly merged steps,
so the table says what the hosts decided. Pure: no I/O. Python 3.9, stdlib only (agent pex).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.wire import hdr, hist

LATENCY = ("p50", "p90", "p99", "p99.9", "max", "mean")
COUNTS = ("ops/s", "errors", "error%")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
#: A step sent the rate when it achieved at least this share of the intended ops ...
ACHIEVED_SHARE = 0.99
#: ... and fewer than this share of its ops were sent late (a search may allow more: ``late``).
LATE_SHARE = 0.01
MAX_STEPS = 40


class SearchError(ValueError):
    """A search description or a step summary that is not what the contract says."""


@dataclass(frozen=True)
class Slo:
    """One SLO of a search, as checked on the hosts: ``metric op threshold`` (latency in us)."""

    text: str  # as the spawn file wrote it
    metric: str  # one of LATENCY or COUNTS
    op: str
    threshold: float  # microseconds for a latency

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "metric": self.metric, "op": self.op, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slo:
        slo = cls(str(data["text"]), str(data["metric"]), str(data["op"]), float(data["threshold"]))
        if slo.metric not in LATENCY + COUNTS or slo.op not in OPERATORS or not math.isfinite(slo.threshold):
            raise SearchError(f"slo {slo.text!r}: not a metric, operator and finite threshold of ours")
        return slo


@dataclass(frozen=True)
class SearchSpec:
    """What the plan tells the hosts about one search."""

    benchmark: str
    low: float  # ops/s of the whole benchmark
    high: float
    slo: tuple[Slo, ...]
    step_s: float
    precision: float  # a fraction: 0.05 for "5%"
    agents: int  # planned agents per step
    max_steps: int = MAX_STEPS
    late_share: float = LATE_SHARE  # a step with this share of its ops sent late or more did not send its rate

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "low": self.low, "high": self.high,
                "slo": [s.to_dict() for s in self.slo], "step_s": self.step_s, "precision": self.precision,
                "agents": self.agents, "max_steps": self.max_steps, "late_share": self.late_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpec:
        try:
            spec = cls(str(data["benchmark"]), float(data["low"]), float(data["high"]),
                       tuple(Slo.from_dict(s) for s in data["slo"]), float(data["step_s"]),
                       float(data["precision"]), int(data["agents"]), int(data.get("max_steps", MAX_STEPS)),
                       float(data.get("late_share", LATE_SHARE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchError(f"search: {exc}") from None
        if not (0 < spec.low < spec.high and spec.step_s > 0 and 0 < spec.precision < 1 and spec.agents > 0
                and spec.max_steps > 0 and 0 < spec.late_share <= 1):
            raise SearchError("search: needs 0 < low < high, a positive step, 0 < precision < 1, agents > 0")
        return spec


def planned_steps(low: float, high: float, precision: float) -> int:
    """The most steps a search takes: the ramp's doublings from low to high, then the bisections
    down to the precision (a bound for leases and timeouts, not a promise)."""
    ramp = math.ceil(math.log2(high / low)) + 1
    bisect = math.ceil(math.log2(1 / precision)) + 1
    return min(MAX_STEPS, ramp + bisect)


# -- what a step measured -----------------------------------------------------------------------


def _histogram() -> hdr.Histogram:
    return hist.recorder()


def _decode(text: str) -> hdr.Histogram:
    try:
        return hdr.decode(text, hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS)
    except hdr.DecodeError as exc:
        raise SearchError(f"histogram: {exc}") from None


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SearchError(f"{key} {str(value)[:40]!r} is not a count")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise SearchError(f"{key} {str(value)[:40]!r} is not a number")
    return float(value)


def empty_summary() -> dict[str, Any]:
    """What a host without agents in a step reports."""
    return {"agents": 0, "failed": [], "ops": 0, "intended": 0.0, "errors": 0, "late": 0, "late_busy": 0,
            "late_loop": 0, "seconds": 0.0, "hist": hist.encode(_histogram())}


def agent_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a step needs of one agent's result (bench.wire.result): its intended ops are its
    job's rate over its job's duration (the ops it was to send in the measured window)."""
    job = result.get("job") or {}
    rate, duration = job.get("rate"), job.get("duration_s")
    intended = float(rate) * float(duration) if isinstance(rate, (int, float)) and isinstance(
        duration, (int, float)) else 0.0
    late = _count(result, "late_ops")
    return {"agents": 1, "failed": [str(result["fatal"])] if result.get("fatal") else [],
            "ops": _count(result, "ops"), "intended": intended, "errors": _count(result, "errors"), "late": late,
            "late_busy": _count(result, "late_busy_ops"), "late_loop": _count(result, "late_loop_ops"),
            "seconds": _number(result, "elapsed_s"),
            "hist": str((result.get("histograms") or {}).get("latency_us") or hist.encode(_histogram()))}


def combine(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The exact sum of step summaries (a host's agents, or the fleet's hosts): counts added,
    histograms added bucket by bucket, the longest agent's seconds."""
    merged = _histogram()
    out = empty_summary()
    failed: list[str] = []
    for part in parts:
        for key in ("agents", "ops", "errors", "late", "late_busy", "late_loop"):
            out[key] += _count(part, key)
        out["intended"] += _number(part, "intended")
        out["seconds"] = max(out["seconds"], _number(part, "seconds"))
        failed += [str(f)[:200] for f in (part.get("failed") or [])][:10]
        merged.add(_decode(str(part.get("hist", ""))))
    out["failed"] = failed[:10]
    out["hist"] = hist.encode(merged)
    return out


@dataclass(frozen=True)
class Measured:
    """A step's figures, read from its combined summary (or from a merged run.json entry)."""

    rate: float  # intended ops/s of the step
    agents: int
    ops: int
    intended: float
    errors: int
    late: int
    late_busy: int
    late_loop: int
    seconds: float
    latency_us: dict[str, float] = field(default_factory=dict)  # LATENCY keys
    failed: tuple[str, ...] = ()

    @property
    def achieved(self) -> float:
        """ops/s the fleet achieved."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def value(self, metric: str) -> float:
        if metric in LATENCY:
            return float(self.latency_us.get(metric, 0.0))
        if metric == "ops/s":
            return self.achieved
        if metric == "errors":
            return float(self.errors)
        return 100.0 * self.errors / (self.ops + self.errors) if self.ops + self.errors else 0.0


def measure(rate: float, summary: Mapping[str, Any]) -> Measured:
    """The figures of a combined summary at ``rate``."""
    histogram = _decode(str(summary.get("hist", "")))
    latency = {key: float(histogram.value_at_percentile(float(key[1:]))) for key in LATENCY if key.startswith("p")}
    latency["max"] = float(histogram.max_value())
    latency["mean"] = round(histogram.mean(), 3)
    return Measured(rate, _count(summary, "agents"), _count(summary, "ops"), _number(summary, "intended"),
                    _count(summary, "errors"), _count(summary, "late"), _count(summary, "late_busy"),
                    _count(summary, "late_loop"), _number(summary, "seconds"), latency,
                    tuple(str(f) for f in summary.get("failed") or ()))


# -- judging a step -----------------------------------------------------------------------------

PASS = "pass"
SERVER = "server"  # an SLO broke, or every connection was busy waiting on the server
GENERATOR = "generator"  # the fleet could not send the rate: its agents' loops were late
INCOMPLETE = "incomplete"  # agents missing or failed: the step says nothing


@dataclass(frozen=True)
class Verdict:
    rate: float
    passed: bool
    limit: str  # PASS, SERVER, GENERATOR or INCOMPLETE
    why: str
    achieved: float

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "passed": self.passed, "limit": self.limit, "why": self.why,
                "achieved": round(self.achieved, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(float(data["rate"]), bool(data["passed"]), str(data["limit"]), str(data["why"]),
                   float(data["achieved"]))


def _shown(metric: str, value: float) -> str:
    if metric in LATENCY:
        return f"{metric} {_ms(value)}"
    if metric == "error%":
        return f"error% {value:.3g}%"
    if metric == "errors":
        return f"errors {int(value)}"
    return f"ops/s {value:,.0f}"


def _rate(ops_per_s: float) -> str:
    """A rate as the search asked for it: whole ops/s, or to a tenth where it bisected that finely."""
    return f"{ops_per_s:,.0f}" if float(ops_per_s).is_integer() else f"{ops_per_s:,.1f}"


def _ms(us: float) -> str:
    return f"{us / 1000:.3g} ms" if us >= 1000 else f"{us:.0f} us"


def judge(spec: SearchSpec, m: Measured) -> Verdict:
    """Pass, or which side was the limit and why (see the module docstring)."""
    if m.agents < spec.agents or m.failed or m.ops + m.errors == 0:
        reasons = [f"{spec.agents - m.agents} of {spec.agents} agents did not report"] if m.agents < spec.agents else []
        reasons += [f"an agent failed: {f}" for f in m.failed[:2]]
        return Verdict(m.rate, False, INCOMPLETE, "; ".join(reasons) or "no op completed", m.achieved)
    broken = [s for s in spec.slo if not OPERATORS[s.op](m.value(s.metric), s.threshold)]
    short = m.intended > 0 and m.ops + m.errors < ACHIEVED_SHARE * m.intended
    late = m.late >= spec.late_share * max(1.0, m.intended or m.ops + m.errors)
    sent = (f"sent {m.ops + m.errors:,} of {m.intended:,.0f} intended ops ({m.achieved:,.0f} ops/s), "
            f"{m.late:,} late")
    if broken:
        why = "SLO broken: " + ", ".join(f"{_shown(s.metric, m.value(s.metric))} (needs {s.text})" for s in broken)
        return Verdict(m.rate, False, SERVER, why + (f"; {sent}" if short or late else ""), m.achieved)
    if not short and not late:
        return Verdict(m.rate, True, PASS, "SLO met at the full rate", m.achieved)
    if m.late_busy > m.late_loop:
        return Verdict(m.rate, False, SERVER, f"the server could not keep the rate: {sent}, "
                                              "every connection busy waiting on it", m.achieved)
    return Verdict(m.rate, False, GENERATOR, f"the load generator was the limit, not the server: {sent}"
                                             + (" (its event loop was late)" if m.late_loop else ""), m.achieved)


# -- choosing the next rate ---------------------------------------------------------------------


def _bounds(steps: Sequence[Verdict]) -> tuple[float | None, float | None]:
    """(last pass, first fail): the lowest failing rate, and the highest pass below it."""
    fails = [s.rate for s in steps if not s.passed]
    first_fail = min(fails) if fails else None
    passes = [s.rate for s in steps if s.passed and (first_fail is None or s.rate < first_fail)]
    return (max(passes) if passes else None), first_fail


def _round(rate: float, low: float, high: float) -> float:
    """A rate as it is asked for: whole ops/s once the interval allows it."""
    return float(round(rate)) if high - low >= 2 else round(rate, 3)


def next_rate(spec: SearchSpec, steps: Sequence[Verdict]) -> float | None:
    """The rate of the next step, or None when the search is over."""
    if not steps:
        return spec.low
    if steps[-1].limit == INCOMPLETE or len(steps) >= spec.max_steps:
        return None
    last_pass, first_fail = _bounds(steps)
    if last_pass is None:
        return None  # the lowest rate failed (the ramp starts there)
    if first_fail is None:
        return None if last_pass >= spec.high else min(spec.high, _round(2 * last_pass, last_pass, spec.high))
    if (first_fail - last_pass) / last_pass <= spec.precision:
        return None
    mid = _round((last_pass + first_fail) / 2, last_pass, first_fail)
    return mid if last_pass < mid < first_fail else None


# -- what was found -----------------------------------------------------------------------------

FOUND = "found"
LOWEST_FAILS = "lowest-fails"
NOT_SATURATED = "not-saturated"
UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Outcome:
    status: str  # FOUND, LOWEST_FAILS, NOT_SATURATED or UNFINISHED
    rate: float | None  # the highest passing rate (None: none passed)
    last_pass: float | None
    first_fail: float | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "rate": self.rate, "last_pass": self.last_pass,
                "first_fail": self.first_fail, "text": self.text}


def outcome(spec: SearchSpec, steps: Sequence[Verdict]) -> Outcome:
    """What the steps found, said the way a user needs it."""
    last_pass, first_fail = _bounds(steps)
    if not steps:
        return Outcome(UNFINISHED, None, None, None, "no step ran")
    failed = {s.rate: s for s in steps if not s.passed}
    if steps[-1].limit == INCOMPLETE:
        return Outcome(UNFINISHED, last_pass, last_pass, first_fail,
                       f"stopped at {_rate(steps[-1].rate)} ops/s: {steps[-1].why}"
                       + (f"; the highest rate that passed was {_rate(last_pass)} ops/s" if last_pass else ""))
    if last_pass is None:
        where = failed[first_fail] if first_fail is not None else steps[0]
        return Outcome(LOWEST_FAILS, None, None, first_fail,
                       f"the lowest rate already fails: at {_rate(where.rate)} ops/s, {where.why}")
    if first_fail is None:
        top = max((s for s in steps if s.passed), key=lambda s: s.rate)
        if last_pass >= spec.high:
            return Outcome(NOT_SATURATED, last_pass, last_pass, None,
                           f"the highest rate passed: the server was not saturated; the load generator reached "
                           f"{top.achieved:,.0f} ops/s (raise the search's upper rate)")
        return Outcome(UNFINISHED, last_pass, last_pass, None,
                       f"stopped after {len(steps)} steps without a failure; {_rate(last_pass)} ops/s passed")
    fail = failed[first_fail]
    interval = (first_fail - last_pass) / last_pass
    text = (f"{_rate(last_pass)} ops/s meets the SLO; {_rate(first_fail)} does not "
            f"({interval:.1%} apart, precision {spec.precision:.0%}): {fail.why}")
    if fail.limit == GENERATOR:
        text += f"; the server's capacity is at least {_rate(last_pass)} ops/s (more agents would measure it)"
    status = FOUND if interval <= spec.precision else UNFINISHED
    return Outcome(status, last_pass, last_pass, first_fail, text)
