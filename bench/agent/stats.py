"""What the measured phase records: counts, latency histograms and a per-second series.

Recording happens once per batch, not per op (``count`` = ops in the batch), into a plain
dict of microseconds -> count for the current second. A dict update is far cheaper than a
histogram's ``record_value``, and a second's distinct values are few, so at each second
boundary the dict gives that second's exact p50/p99 and is then folded into the run's
histograms (``bench.wire.hdr``, pure Python) in one pass over its distinct values.

Seconds are wall-clock seconds of the host (``[at, at + 1)`` in epoch seconds), not seconds
since the agent began, so the controller can add up the same second of every agent exactly:
each closed second carries its own encoded histogram (``bench.wire.progress``) and is handed
to ``on_second`` as it closes (the live view), besides being kept for the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bench.wire import hist
from bench.wire.result import Histograms, TimeseriesPoint

LATE_S = 0.001  # an open-loop op is "late" if sent more than this after its intended start
MAX_ERROR_SAMPLES = 5


def percentiles(counts: dict[int, int], total: int, ps: list[float]) -> list[int]:
    """Exact percentiles of a value -> count map (the smallest value covering p% of counts)."""
    if total <= 0:
        return [0 for _ in ps]
    targets = [max(1, math.ceil(p / 100.0 * total)) for p in ps]
    out: list[int] = []
    seen = 0
    items = sorted(counts.items())
    i = 0
    for target in targets:
        while seen < target and i < len(items):
            seen += items[i][1]
            i += 1
        out.append(items[i - 1][0] if i else items[0][0])
    return out


class Recorder:
    """Accumulates the measured phase. ``start`` is set when that phase begins."""

    def __init__(self, open_loop: bool, on_second: Callable[[TimeseriesPoint], None] | None = None) -> None:
        self.open_loop = open_loop
        self.on_second = on_second
        self.start = 0.0  # perf-counter seconds at the start of the measured phase
        self.started_at = time.time()  # that instant, epoch seconds (now, until it begins)
        self.began = False
        self.last_done = 0.0
        self.ops = 0
        self.errors = 0
        self.late_ops = 0
        # Why the late ones were late: they fell due while every connection had a request
        # outstanding and waited for one (the server held them all), or a connection was free and
        # the event loop itself woke or sent late (the agent's CPU or loop was the limit).
        self.late_busy_ops = 0
        self.late_loop_ops = 0
        self.error_samples: list[str] = []
        self.latency = hist.recorder()  # from intended start (closed loop: from send)
        self.service = hist.recorder() if open_loop else None  # from actual send
        self.series: list[TimeseriesPoint] = []
        self._sec = 0  # the open second, epoch seconds (once begun)
        self._first_sec = 0
        self._to_epoch = 0.0  # perf-counter seconds + this = epoch seconds
        self._lat: dict[int, int] = {}
        self._svc: dict[int, int] = {}
        self._sec_ops = 0
        self._sec_errors = 0
        self._sec_late = 0

    def begin(self, perf_now: float, epoch_now: float) -> None:
        self.start = perf_now
        self.last_done = perf_now
        self.started_at = epoch_now
        self._to_epoch = epoch_now - perf_now
        self._sec = self._first_sec = math.floor(epoch_now)
        self.began = True

    def record(self, done: float, intended: float, sent: float, ok: int, failed: int,
               messages: list[bytes] | None, waited: bool = False) -> None:
        """A batch of ``ok`` + ``failed`` ops that completed at ``done``; ``waited``: it fell due
        while every connection was busy and waited for one to free up (open loop)."""
        sec = math.floor(done + self._to_epoch)
        if sec > self._sec:
            self._roll(sec)
        self.last_done = done
        if ok:
            us = int((done - intended) * 1e6)
            lat = self._lat
            lat[us] = lat.get(us, 0) + ok
            self.ops += ok
            self._sec_ops += ok
            if self.open_loop:
                us = int((done - sent) * 1e6)
                svc = self._svc
                svc[us] = svc.get(us, 0) + ok
        if self.open_loop and sent - intended > LATE_S:
            self.late_ops += ok + failed
            self._sec_late += ok + failed
            if waited:
                self.late_busy_ops += ok + failed
            else:
                self.late_loop_ops += ok + failed
        if failed:
            self.errors += failed
            self._sec_errors += failed
            if messages and len(self.error_samples) < MAX_ERROR_SAMPLES:
                for m in messages:
                    text = m.decode("utf-8", "replace")
                    if text not in self.error_samples and len(self.error_samples) < MAX_ERROR_SAMPLES:
                        self.error_samples.append(text)

    def tick(self, perf_now: float) -> None:
        """Close the seconds that ended before ``perf_now`` even when no op completes (a stall),
        so the live view hears of them on time."""
        if self.began and math.floor(perf_now + self._to_epoch) > self._sec:
            self._roll(math.floor(perf_now + self._to_epoch))

    def _close(self, point: TimeseriesPoint) -> None:
        self.series.append(point)
        if self.on_second is not None:
            self.on_second(point)

    def _roll(self, new_sec: int) -> None:
        """Close the current second (and any empty ones up to ``new_sec``)."""
        p50, p99 = percentiles(self._lat, self._sec_ops, [50.0, 99.0])
        point: TimeseriesPoint = {"t": self._sec - self._first_sec, "at": self._sec, "ops": self._sec_ops,
                                  "errors": self._sec_errors, "p50": p50, "p99": p99}
        if self.open_loop:
            point["late"] = self._sec_late
        if self._lat:
            second = hist.recorder()
            second.record_counts(self._lat, hist.HIGHEST)  # values clamped into the histogram's range
            point["hist"] = hist.encode(second)
            self.latency.add(second)  # the second's buckets, not a second pass over its values
        if self.service is not None:
            self.service.record_counts(self._svc, hist.HIGHEST)
        self._close(point)
        for empty in range(self._sec + 1, new_sec):
            gap: TimeseriesPoint = {"t": empty - self._first_sec, "at": empty, "ops": 0, "errors": 0, "p50": 0,
                                    "p99": 0}
            if self.open_loop:
                gap["late"] = 0
            self._close(gap)
        self._sec = new_sec
        self._lat, self._svc = {}, {}
        self._sec_ops = self._sec_errors = self._sec_late = 0

    def finish(self) -> None:
        """Close the last second; call once, after the last ``record``."""
        if self.began and (self._sec_ops or self._sec_errors or not self.series):
            self._roll(self._sec + 1)

    def elapsed(self) -> float:
        return max(0.0, self.last_done - self.start) if self.began else 0.0

    def histograms(self) -> Histograms:
        out: Histograms = {"latency_us": hist.encode(self.latency)}
        if self.service is not None:
            out["service_us"] = hist.encode(self.service)
        return out
