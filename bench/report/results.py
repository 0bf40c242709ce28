"""Agent results as the merge reads them: checked key by key, then one agent's figures.

Results and failure records come back from the run store, which may hold anything, so every
figure the merge (``bench.report.merge``) uses is checked here first: a result that is not one
benchmark's, a count that is not a count, a histogram that does not decode or was recorded with
other settings is a :class:`ResultError` naming the benchmark, the agent and the key.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from hdrh.histogram import HdrHistogram

from bench.errors import FleetbenchError
from bench.wire import hist
from bench.wire.result import RESULT_SCHEMA, AgentResult, Failure

# late_ops split by cause (bench.wire.result): waited for a busy connection, or the agent's loop was late
LATE_CAUSES = ("late_busy_ops", "late_loop_ops")

_REQUIRED = ("schema", "benchmark", "workload", "agent_num", "agents", "host", "elapsed_s", "ops", "errors",
             "histograms")


class ResultError(FleetbenchError, ValueError):
    """Agent results that cannot be merged, or a run.json that cannot be loaded."""


@dataclass(frozen=True)
class AgentFigures:
    """What the merge takes from one agent's result, every figure checked."""

    latency: HdrHistogram  # its own latency histogram
    service: HdrHistogram | None  # open loop: its service-time histogram
    ops: int
    errors: int
    elapsed: float
    late_ops: int  # 0 when it does not say
    late_causes: dict[str, int]  # LATE_CAUSES, 0 where it does not say
    says_late: bool  # it reports late_ops (an open-loop agent)
    says_causes: bool  # it reports every one of LATE_CAUSES
    status: str  # "ok" | "fatal" | "interrupted"


def read_agent(name: str, result: AgentResult) -> AgentFigures:
    """The checked figures of one (compatible, see :func:`check_compatible`) result."""
    who = agent_who(name, result)
    histograms = result["histograms"]
    latency = decode(histograms.get("latency_us"), f"{who}: histograms.latency_us")
    service = histograms.get("service_us")
    service_histogram = decode(service, f"{who}: histograms.service_us") if service is not None else None
    return AgentFigures(
        latency=latency, service=service_histogram,
        ops=count(result, "ops", who), errors=count(result, "errors", who), elapsed=duration(result, who),
        late_ops=count(result, "late_ops", who, default=0),
        late_causes={key: count(result, key, who, default=0) for key in LATE_CAUSES},
        says_late="late_ops" in result, says_causes=all(key in result for key in LATE_CAUSES),
        status=agent_status(result))


def agent_status(result: AgentResult) -> str:
    """"fatal" or "interrupted" when the agent stopped early (its data is merged all the same), else "ok"."""
    if result.get("fatal"):
        return "fatal"
    if result.get("interrupted"):
        return "interrupted"
    return "ok"


def agent_num_key(item: Mapping[str, Any]) -> tuple[int, Any]:
    """Sorts results and failures by agent_num, any malformed one last (it is refused later)."""
    num = item.get("agent_num")
    return (0, num) if isinstance(num, int) else (1, str(num))


def agent_who(name: str, result: Mapping[str, Any]) -> str:
    return f"benchmark {name!r}: agent {result.get('agent_num')} on {result.get('host')}"


def failure_record(failure: Failure, name: str) -> Failure:
    """A failure record reduced to its four keys, with defaults for a missing error or stderr."""
    if not isinstance(failure, Mapping) or "agent_num" not in failure:
        raise ResultError(f"benchmark {name!r}: a failure lacks agent_num: {failure!r}")
    return {"agent_num": failure["agent_num"], "host": failure.get("host"),
            "error": str(failure.get("error") or "failed"), "stderr_tail": str(failure.get("stderr_tail") or "")}


# ---------------------------------------------------------------------------------------------
# One benchmark's results, together


def check_compatible(name: str, results: Sequence[AgentResult], failed: Sequence[Failure],
                     workload: str | None, agents: int | None) -> int:
    """Refuse results that are not one benchmark's; return the number of agents planned."""
    for result in results:
        _check_shape(name, result)
    _check_agreement(name, results, workload, agents)
    nums = [r["agent_num"] for r in results] + [f["agent_num"] for f in failed]
    _check_agent_nums(name, nums)
    planned = agents if agents is not None else (results[0]["agents"] if results else len(failed))
    if not isinstance(planned, int) or planned < len(nums):
        raise ResultError(f"benchmark {name!r}: {len(nums)} agents reported but {planned!r} were planned")
    return planned


def _check_shape(name: str, result: AgentResult) -> None:
    """One result: an object of this benchmark, of RESULT_SCHEMA, with every required key."""
    if not isinstance(result, Mapping):
        raise ResultError(f"benchmark {name!r}: an agent result is not an object")
    who = agent_who(name, result)
    lacking = [k for k in _REQUIRED if k not in result]
    if lacking:
        raise ResultError(f"{who}: result lacks {', '.join(lacking)}")
    if result["schema"] != RESULT_SCHEMA:
        raise ResultError(f"{who}: result schema {result['schema']!r} is not {RESULT_SCHEMA!r}")
    if result["benchmark"] != name:
        raise ResultError(f"{who}: result is for benchmark {result['benchmark']!r}")
    if not isinstance(result["histograms"], Mapping):
        raise ResultError(f"{who}: histograms is not an object")


def _check_agreement(name: str, results: Sequence[AgentResult], workload: str | None, agents: int | None) -> None:
    """Every result (and the plan, where given) names one workload, one run and one agent count."""
    for key, given in (("workload", workload), ("run_id", None), ("agents", agents)):
        seen = {r.get(key) for r in results}
        if given is not None:
            seen.add(given)
        if len(seen) > 1:
            raise ResultError(f"benchmark {name!r}: agents disagree on {key}: "
                              f"{', '.join(sorted(repr(s) for s in seen))}")


def _check_agent_nums(name: str, nums: Sequence[Any]) -> None:
    """Each agent_num a non-negative integer, and each one once, over results and failures."""
    odd = [n for n in nums if not isinstance(n, int) or isinstance(n, bool) or n < 0]
    if odd:
        raise ResultError(f"benchmark {name!r}: agent_num {odd[0]!r} is not a non-negative integer")
    duplicated = sorted(n for n, times in Counter(nums).items() if times > 1)
    if duplicated:
        raise ResultError(f"benchmark {name!r}: agent_num {', '.join(map(str, duplicated))} reported more than once")


# ---------------------------------------------------------------------------------------------
# Figures


def count(result: Mapping[str, Any], key: str, who: str, default: int | None = None) -> int:
    """``result[key]`` as a count (a non-negative int a histogram can hold)."""
    value = result.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hist.MAX_TOTAL_COUNT:
        raise ResultError(f"{who}: {key} {value!r} is not a count")
    return value


def duration(result: Mapping[str, Any], who: str) -> float:
    """``elapsed_s`` as a finite non-negative number of seconds."""
    value = result.get("elapsed_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ResultError(f"{who}: elapsed_s {value!r} is not a duration")
    return float(value)


def is_number(value: Any) -> TypeGuard[float]:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Histograms


def decode(text: Any, what: str) -> HdrHistogram:
    """An encoded histogram, refused unless it has bench.wire.hist's settings (only those add exactly)."""
    if not isinstance(text, str):
        raise ResultError(f"{what}: expected an encoded histogram, got {type(text).__name__}")
    try:
        decoded = hist.decode(text)
    except Exception as e:  # hdrh raises assorted types (binascii, zlib, its own, TypeError)
        raise ResultError(f"{what}: not a valid encoded histogram ({type(e).__name__}: {e})") from None
    settings = (decoded.lowest_trackable_value, decoded.highest_trackable_value, decoded.significant_figures)
    if settings != (hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS):
        raise ResultError(f"{what}: histogram settings (lowest, highest, digits) {settings} differ from "
                          f"bench.wire.hist's {(hist.LOWEST, hist.HIGHEST, hist.SIGNIFICANT_DIGITS)}")
    return decoded
