"""The agent's result and the failure record: what comes back from each agent, defined once.

The agent builds an :class:`AgentResult` (``bench.agent.result.build``), writes it to ``--out``
on its host and prints it as the last line of stdout (JSON, keys sorted, no spaces). The
controller keeps, per agent, an :class:`AgentRecord` in the run store: the result when there
is one, and a :class:`Failure` when the agent did not succeed (no result, a non-zero exit, or a
result with ``fatal``). ``bench.report.merge`` reads both back. These are TypedDicts, not
classes: the JSON on disk is the dict itself, byte for byte, and old run stores stay readable.

Format history (``schema`` of a result, ``RESULT_SCHEMA``):

* ``fleetbench.agent-result/1`` -- the first version: run_id, benchmark, workload, agent_num,
  agents, host, python, fleetbench, event_loop ("asyncio" | "uvloop"), started_at (epoch s of
  the measured phase), elapsed_s, ops, errors, error_samples, histograms (``latency_us``, and
  ``service_us`` in open loop: each a ``bench.wire.hist.encode`` text), timeseries (one point
  per second: t, ops, errors, p50, p99), job (the :class:`bench.wire.job.AgentJob` as run,
  params complete); ``late_ops`` in open loop only, ``fatal`` (a message) and ``interrupted``
  (true) only when they happened. Added within version 1 (optional, so older results still
  read): a timeseries point's ``at`` (the host's wall-clock second it covers; ``t`` then counts
  from the agent's first such second) and ``hist`` (that second's encoded histogram, absent for
  a second without ops), the per-second records of ``bench.wire.progress``; with them the merge
  adds the same second of every agent exactly (``bench.report.seconds``). Later still, in open
  loop: a point's ``late`` (ops of that second sent late), and the result's ``late_busy_ops``
  and ``late_loop_ops``, which split ``late_ops`` by cause: busy, the op fell due while every
  connection had a request outstanding and waited for one (the server was the limit); loop, a
  connection was free and the agent's event loop woke late (its CPU or loop was the limit).
  Readers treat a result without them as "cause not known".

A failure record (no version: it never leaves the controller's run store) is agent_num, host,
error and stderr_tail; the merge adds ``partial`` for an agent whose result has fatal or
interrupted, and ``repetition`` when it folds repeats.
"""

from __future__ import annotations

from typing import Any, TypedDict

RESULT_SCHEMA = "fleetbench.agent-result/1"


class _HistogramsRequired(TypedDict):
    latency_us: str  # from the intended start of each op (closed loop: from send)


class Histograms(_HistogramsRequired, total=False):
    service_us: str  # open loop only: from the actual send


class _PointRequired(TypedDict):
    t: int  # seconds since the start of the measured phase
    ops: int
    errors: int
    p50: int  # microseconds, exact for that second
    p99: int


class TimeseriesPoint(_PointRequired, total=False):
    at: int  # the wall-clock second it covers, [at, at + 1) epoch seconds on the agent's host
    hist: str  # that second's encoded histogram (absent when it had no ops)
    late: int  # open loop: ops of that second sent late (absent from older agents)


class _ResultRequired(TypedDict):
    schema: str  # RESULT_SCHEMA
    run_id: str
    benchmark: str
    workload: str
    agent_num: int
    agents: int
    host: str
    python: str
    fleetbench: str
    event_loop: str
    started_at: float
    elapsed_s: float
    ops: int
    errors: int
    error_samples: list[str]
    histograms: Histograms
    timeseries: list[TimeseriesPoint]
    job: dict[str, Any]  # AgentJob.to_dict(): its JSON is the job's own format


class AgentResult(_ResultRequired, total=False):
    late_ops: int  # open loop only
    late_busy_ops: int  # open loop: of late_ops, those that waited because every connection was busy
    late_loop_ops: int  # open loop: of late_ops, those late although a connection was free
    fatal: str  # why the agent stopped early; what it measured is still here
    interrupted: bool  # stopped by a signal


class _FailureRequired(TypedDict):
    agent_num: int
    host: str | None
    error: str  # one line: why there is no (complete) result
    stderr_tail: str  # the end of the agent's stderr


class Failure(_FailureRequired, total=False):
    partial: bool  # set by the merge: the agent's result has fatal or interrupted
    repetition: int  # set by the merge when it folds repetitions


class _RecordRequired(TypedDict):
    benchmark: str  # the job's benchmark (label)


class AgentRecord(_RecordRequired, total=False):
    """One agent's file in the run store (``agents/<benchmark>/agent-N.json``)."""

    result: AgentResult | None  # present, maybe None, when the agent failed
    failure: Failure  # present when the agent did not succeed
    host: str  # the fleet's name of the host it ran on (the result's "host" is the host's own hostname)
