"""``run``: one job from start to result. Side effects live here; the parts are pure or small.

Order: check the job and build the workload (exit 2 on any problem, before touching the
network), pick the event loop, find the nodes (CLUSTER SLOTS, or the workload's own: HTTP
servers, in-process calls), open every connection, run
the unrecorded prefill if the workload has one, then warmup + measured phase, and always
emit a result, even after a fatal error or a signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from bench.agent import cluster, workloads
from bench.agent.engine import Engine, Phase
from bench.agent.result import build, emit
from bench.agent.stats import Recorder
from bench.wire import progress
from bench.wire.job import AgentJob, InvalidJob
from bench.wire.result import TimeseriesPoint

EXIT_OK, EXIT_FATAL, EXIT_INVALID = 0, 1, 2
PREFILL_BYTES_IN_FLIGHT = 1 << 20  # per connection, so big values do not balloon memory


Log = Callable[[str], None]


def make_logger(job: AgentJob) -> Log:
    prefix = f"fleetbench-agent[{job.agent_num}/{job.agents}@{socket.gethostname()}]"

    def log(message: str) -> None:
        # stderr may be a pipe whose reader is gone (an SSH session that ended): a log line is
        # never worth the result, so a failed write is dropped.
        try:
            print(f"{prefix} {message}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    return log


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop if it is importable (about 2x the ops/s at pipeline 1), else asyncio's own.

    ``FLEETBENCH_NO_UVLOOP=1`` forces asyncio's loop, to compare the two.
    """
    if os.environ.get("FLEETBENCH_NO_UVLOOP", "") not in ("", "0"):
        return asyncio.new_event_loop(), "asyncio"
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


def raise_fd_limit(needed: int, log: Log) -> None:
    """Lift the soft open-files limit (often 1024) towards the hard one when the job needs it:
    every worker holds one socket per node."""
    try:
        import resource
    except ImportError:  # not on Linux; nothing to do
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log(f"warning: cannot raise the open-files limit from {soft} to {target}: {exc}")
        return
    if target < needed:
        log(f"warning: {needed} sockets wanted but the open-files limit is {target}")


class SecondsOut:
    """Where each closed second goes (bench.wire.progress): a marked stderr line, and a line in
    the records file beside ``--out`` (if any), for a controller that follows a detached run."""

    def __init__(self, out_path: str | None, log: Log) -> None:
        self.file = None
        if out_path:
            try:
                self.file = open(progress.records_path(out_path), "w")  # noqa: SIM115 (open for the run)
            except OSError as exc:
                log(f"warning: cannot write the per-second records: {exc}")

    def emit(self, record: TimeseriesPoint) -> None:
        line = progress.to_line(record)
        try:  # a stderr whose reader is gone (see make_logger) costs the live view, not the run
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if self.file is not None:
            self.file.write(line[len(progress.MARK):] + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def build_plan(job: AgentJob) -> workloads.Plan:
    if job.workload not in workloads.REGISTRY:
        raise InvalidJob("workload", f"{job.workload!r} is not implemented by this agent "
                         f"(it has: {', '.join(sorted(workloads.REGISTRY))})")
    ctx = workloads.Context(params=job.params, agent_num=job.agent_num, agents=job.agents,
                            connections=job.connections, pipeline=job.pipeline, targets=tuple(job.targets),
                            server_kind=job.server_kind, auth=job.auth)
    try:
        return workloads.build(job.workload, ctx)
    except ValueError as exc:
        raise InvalidJob("params", str(exc)) from None


START_POLL_S = 0.002  # how often a ready agent looks for its start file


async def start_time(job: AgentJob, start_file: str | None, stopped: Callable[[], bool]) -> float | None:
    """When the measured window opens: ``job.start_at``, or with a start file the time written
    there by the host run once every agent of the phase is ready (we say we are by creating
    ``<start_file>.ready``). None: at once (no start given, or stopped while waiting)."""
    if start_file is None:
        return job.start_at
    with open(start_file + ".ready", "w"):
        pass
    while not stopped():
        try:
            with open(start_file) as f:
                text = f.read().strip()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        await asyncio.sleep(START_POLL_S)
    return None


async def wait_until(start_at: float | None, warmup_s: float, log: Log) -> None:
    """Sleep so that the measured window opens at ``start_at`` (the instant every agent of a
    phase shares); late, begin at once and say by how much."""
    if start_at is None:
        return
    delay = start_at - warmup_s - time.time()
    if delay < 0:
        log(f"warning: ready {-delay * 1000:.0f} ms after the phase's start time; starting now")
        return
    if delay > 0.002:
        await asyncio.sleep(delay - 0.002)
    while time.time() < start_at - warmup_s:  # the last ms: event-loop timers are coarse
        pass


def run(job: AgentJob, out_path: str | None, start_file: str | None = None) -> int:
    """Run a checked job (params complete); print the result; return the exit code."""
    return AgentRun(job, out_path, start_file).run()


class AgentRun:
    """One job's run on its own event loop: the steps in order (``_main``), a signal's stop
    (``_on_signal``), and the result that is always written (``_report``)."""

    def __init__(self, job: AgentJob, out_path: str | None, start_file: str | None) -> None:
        self.job, self.out_path, self.start_file = job, out_path, start_file
        self.log = make_logger(job)
        self.plan = build_plan(job)  # InvalidJob propagates to the CLI: exit 2
        self.targets = [cluster.parse_address(t) for t in job.targets]
        self.loop, self.loop_name = new_loop()
        asyncio.set_event_loop(self.loop)
        self.seconds = SecondsOut(out_path, self.log)
        self.rec = Recorder(open_loop=job.rate is not None, on_second=self.seconds.emit)
        self.engine: Engine | None = None
        self.signal = 0
        self.fatal: str | None = None
        self.task: asyncio.Task[None] | None = None

    def run(self) -> int:
        self.task = self.loop.create_task(self._main())
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._on_signal, signum)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # an SSH session ending is not a reason to stop
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError is an OSError
            self.fatal = str(exc) or type(exc).__name__
        except Exception as exc:  # a bug: still report what was measured, with the cause
            traceback.print_exc(file=sys.stderr)
            self.fatal = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            if self.engine is not None:
                self.engine.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(signum)
            self.loop.run_until_complete(asyncio.sleep(0))  # let transports close
            self.loop.close()
        return self._report()

    async def _main(self) -> None:
        engine = self.engine = await self._connect()
        await self._prefill(engine)
        if engine.fatal is not None or engine.interrupted:
            return
        start_at = await start_time(self.job, self.start_file, lambda: bool(self.signal))
        if self.signal:
            return
        await self._measure(engine, start_at)

    async def _connect(self) -> Engine:
        job = self.job
        engine = Engine(self.loop, await self._router(), job.connections, self.log, dial=self.plan.dial,
                        min_stall_s=self.plan.min_stall_s, auth=job.auth)
        self.engine = engine  # a signal from here on stops it
        nodes = len(engine.router.active_nodes())
        raise_fd_limit(job.connections * nodes + 64, self.log)
        await engine.connect()
        self.log(f"{self.loop_name}: {job.connections} connections x {nodes} node(s) open; {self.plan.describe}")
        return engine

    async def _router(self) -> cluster.Router:
        job = self.job
        if self.plan.dial is not None:  # the workload reaches its own nodes (HTTP, in-process calls)
            return cluster.DirectRouter(self.plan.nodes)
        if job.server_kind != "redis-cluster":
            return cluster.Router(self.targets[:1])
        router = cluster.Router([], await cluster.discover(self.targets, auth=job.auth))
        if router.covered < cluster.SLOTS:
            self.log(f"warning: the cluster serves only {router.covered} of {cluster.SLOTS} slots")
        return router

    async def _prefill(self, engine: Engine) -> None:
        plan = self.plan
        if plan.prefill is None or plan.prefill_ops <= 0:
            return
        value_size = int(self.job.params.get("value_size", 64))
        depth = max(1, min(64, PREFILL_BYTES_IN_FLIGHT // (value_size + 64)))
        self.log(f"prefill: {plan.prefill_ops} ops, pipeline {depth} (not recorded)")
        await engine.run(Phase(next_ops=plan.prefill, pipeline=depth, iterations=plan.prefill_ops, label="prefill"))
        if engine.failed_ops:
            self.log(f"warning: prefill: {engine.failed_ops} of {engine.done_ops} ops failed "
                     f"(first: {engine.first_error})")

    async def _measure(self, engine: Engine, start_at: float | None) -> None:
        job = self.job
        await wait_until(start_at, job.warmup_s, self.log)
        work = f"{job.iterations} ops" if job.iterations is not None else f"{job.duration_s:g} s"
        mode = f"open loop at {job.rate:g} ops/s" if job.rate is not None else "closed loop"
        self.log(f"measuring {work} ({mode}, pipeline {job.pipeline}"
                 + (f", after {job.warmup_s:g} s warmup)" if job.warmup_s else ")"))
        await engine.run(Phase(next_ops=self.plan.next_ops, pipeline=job.pipeline, iterations=job.iterations,
                               duration_s=job.duration_s, warmup_s=job.warmup_s, rate=job.rate, recorder=self.rec))

    def _on_signal(self, signum: int) -> None:
        if self.signal:
            return
        self.signal = signum
        self.log(f"got signal {signum}: stopping")
        engine = self.engine
        if engine is not None and engine.running:
            engine.stop()
        else:
            assert self.task is not None
            self.task.cancel()
            if engine is not None:
                engine.interrupted = True

    def _report(self) -> int:
        """The result, always (first: a closed stderr must not cost it), then the exit code."""
        engine, rec = self.engine, self.rec
        fatal = self.fatal or (engine.fatal if engine is not None else None)
        interrupted = bool(self.signal) or (engine is not None and engine.interrupted)
        rec.finish()
        self.seconds.close()
        result = build(self.job, rec, fatal=fatal, interrupted=interrupted, event_loop=self.loop_name)
        elapsed = rec.elapsed()
        rate = rec.ops / elapsed if elapsed > 0 else 0.0
        wrote = emit(result, self.out_path)
        if fatal:
            self.log(f"fatal: {fatal}")
        self.log(f"done: {rec.ops} ops, {rec.errors} errors in {elapsed:.2f} s ({rate:,.0f} ops/s)"
                 + (" [interrupted]" if interrupted else ""))
        if fatal or not wrote:
            return EXIT_FATAL
        if interrupted:
            return 128 + int(self.signal or signal.SIGINT)
        return EXIT_OK
