"""The exact per-second merge: one wall-clock second of every agent of a benchmark, added up.

Each agent closes its measured window into wall-clock seconds of its own host's clock, each with
its own HdrHistogram (``bench.wire.progress``). Here the same second of every agent is merged by
adding the histograms' counts, so the second's p50 and p99 are those of all its ops together,
as if one histogram had recorded them all. No percentile is ever averaged.

Clock offsets: where the clock offset of the host that ran an agent was measured (seconds the
host's clock is ahead of the run's reference: the barrier coordinator's, for a run that lives on
the hosts), its seconds are moved onto the reference clock first, to the nearest whole
second (:func:`aligned`); a second's histogram cannot be split, so an offset well under a second
(NTP) changes nothing and a larger one moves whole seconds. Without offsets, hosts' clocks are
taken as they are.

Used by the run merge (run.json's ``timeseries``, the plots, the OpenMetrics export) and by the
controller's live view, which feeds it records as they arrive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

from bench.report.document import MergedSecond
from bench.wire import hist

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class SecondsError(ValueError):
    """A per-second record that cannot be merged; the message names it."""


def aligned(at: int, offset_s: float | None) -> int:
    """The controller's second for host second ``at`` of a host whose clock is ``offset_s`` ahead."""
    return at if not offset_s or not math.isfinite(offset_s) else round(at - offset_s)  # NaN/inf: not measured


class Second:
    """One wall-clock second, accumulated over the agents that report it."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.agents = 0
        self.ops = 0
        self.errors = 0
        self.late: int | None = None  # ops sent late (open loop); None: no record said
        self.histogram = hist.new()

    def add(self, record: Mapping[str, Any], who: str = "a record") -> None:
        ops, errors, late = record.get("ops", 0), record.get("errors", 0), record.get("late", 0)
        for key, value in (("ops", ops), ("errors", errors), ("late", late)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SecondsError(f"{who}: second {self.at}: {key} {value!r} is not a count")
        self.agents += 1
        self.ops += ops
        self.errors += errors
        if "late" in record:
            self.late = (self.late or 0) + late
        text = record.get("hist")
        if text is None:
            return
        try:
            part = hist.decode(text)
        except Exception as exc:  # hdrh raises bare ValueError/TypeError/zlib errors on bad input
            raise SecondsError(f"{who}: second {self.at}: undecodable histogram ({exc})") from None
        if part.get_total_count():  # adding an empty one would reset min to 0 (an hdrh quirk)
            self.histogram.add(part)

    def summary(self) -> dict[str, Any]:
        """agents, ops, errors, p50 p90 p99 p99.9, max, mean (microseconds) of this second."""
        out: dict[str, Any] = {"at": self.at, "agents": self.agents, "ops": self.ops, "errors": self.errors}
        count = self.histogram.get_total_count()
        values = hist.percentiles(self.histogram, PERCENTILES)
        out.update({hist.percentile_key(p): values[p] for p in PERCENTILES})
        out["max"] = self.histogram.get_max_value() if count else 0
        out["mean"] = round(self.histogram.get_mean_value(), 3) if count else 0.0
        return out


def has_histograms(results: Sequence[Mapping[str, Any]]) -> bool:
    """True when every result's seconds are wall-clock seconds (``at``) that carry their own
    histograms (agents from before this have ``t`` and the agent's own p50/p99 only)."""
    return all(isinstance(p, Mapping) and isinstance(p.get("at"), int)
               and (p.get("hist") is not None or not p.get("ops"))
               for r in results for p in (r.get("timeseries") or ()))


def merge(name: str, results: Sequence[Mapping[str, Any]],
          offsets: Mapping[int, float] | None = None) -> list[MergedSecond]:
    """The benchmark's seconds, merged across ``results`` (agent results with per-second records).

    Each point: ``t`` (seconds from the benchmark's measured start, the earliest agent's
    ``started_at``, to the start of this second: the first second usually began before it, so
    its ``t`` is negative), ``at`` (the second, epoch seconds on the controller's clock),
    ``agents`` (how many reported it), ``ops``, ``errors``, ``p50`` ``p90`` ``p99`` ``p99.9``,
    ``max``, ``mean`` (microseconds, from the merged histogram) and ``exact``: true.
    """
    offsets = offsets or {}
    seconds: dict[int, Second] = {}
    starts: list[float] = []
    for result in results:
        who = f"benchmark {name!r} agent {result.get('agent_num')!r}"
        # By agent, not by the result's "host": that is the host's own hostname, which many hosts
        # of one fleet may share (a cloud image's default); the plan knows where each agent ran.
        offset = offsets.get(result.get("agent_num", -1))
        if isinstance(result.get("started_at"), (int, float)):
            starts.append(float(result["started_at"]) - (offset or 0.0))
        for point in result.get("timeseries") or ():
            at = point.get("at") if isinstance(point, Mapping) else None
            if not isinstance(at, int) or isinstance(at, bool):
                raise SecondsError(f"{who}: timeseries point {point!r} has no whole second 'at'")
            key = aligned(at, offset)
            seconds.setdefault(key, Second(key)).add(point, who)
    start = min(starts) if starts else (min(seconds) if seconds else 0.0)
    merged: list[MergedSecond] = []
    for at in sorted(seconds):
        point = seconds[at].summary()  # every key of a MergedSecond but t and exact
        merged.append(cast(MergedSecond, {"t": round(at - start, 6), **point, "exact": True}))
    return merged


def window(first: int, last: int, seconds: Mapping[int, Second]) -> dict[str, Any]:
    """Seconds ``first`` .. ``last`` (inclusive) of one benchmark as one: the exact merge of their
    histograms (a stall's slow ops count as much as they would in the run's own histogram), and
    the worst second beside it.

    ``seconds``: merged seconds by ``at``; a second missing from it had no ops. Returns
    ``first``, ``last``, ``seconds`` (how many), ``ops``, ``ops_per_s`` (over all of them),
    ``errors``, ``late`` (None when no record said), ``p50`` ``p90`` ``p99`` ``p99.9`` ``max``
    (microseconds), and ``worst_at`` / ``worst_p99``: the second with the highest p99 (None
    when no second had ops).
    """
    merged = Second(first)
    count = max(0, last - first + 1)
    worst_at: int | None = None
    worst_p99 = 0
    late: int | None = None
    for at in range(first, last + 1):
        second = seconds.get(at)
        if second is None:
            continue
        merged.ops += second.ops
        merged.errors += second.errors
        if second.late is not None:
            late = (late or 0) + second.late
        if second.histogram.get_total_count():
            merged.histogram.add(second.histogram)
            p99 = hist.percentiles(second.histogram, (99.0,))[99.0]
            if worst_at is None or p99 > worst_p99:
                worst_at, worst_p99 = at, p99
    out = merged.summary()
    del out["at"], out["agents"], out["mean"]
    out.update({"first": first, "last": last, "seconds": count, "late": late,
                "ops_per_s": merged.ops / count if count else 0.0,
                "worst_at": worst_at, "worst_p99": worst_p99 if worst_at is not None else None})
    return out
