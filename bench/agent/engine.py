"""The load loop: workers, batches, closed and open loop, warmup, redirects, stopping.

Everything is callback-driven on one event loop. A worker is one logical client (one TCP
connection per server node); it has at most one batch of ``pipeline`` ops in flight. When a
batch's last reply arrives the worker is handed its next batch straight from the reply
callback: no task, future or coroutine per batch, which is what lets one Python process keep
up with redis-benchmark.

Closed loop: a worker fires again as soon as its batch completes; latency is from send.
Open loop (``rate``): batches are due every ``pipeline / rate`` seconds whatever happens; a
due batch goes to a free worker or waits in a backlog, and its latency is measured from when
it was *due* (coordinated-omission corrected), its service time from when it was sent. A batch
sent late is late for one of two reasons, which the recorder counts apart: it waited in the
backlog (every worker had a request outstanding: the server was holding them), or a worker was
free and the loop itself woke late (the agent's CPU or event loop was the limit).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from bench.agent import cluster
from bench.agent.client import Conn, Dial, NodeConnection, SubBatch, describe, open_connection
from bench.agent.resp import ASKING
from bench.agent.stats import Recorder
from bench.agent.workloads import NextOps, Op

MAX_REDIRECTS = 5  # MOVED/ASK hops per op before it counts as an error
STALL_S = 30.0  # in-flight ops with no reply for this long is fatal
GRACE_S = 2.0  # after an interrupt, how long to wait for in-flight replies
PROGRESS_S = 10.0  # a progress line on stderr this often while measuring
WATCH_S = 1.0  # how often the watchdog looks for a stall, the measured start, progress
CONNECT_TIMEOUT_S = 10.0
_EARLY_S = 0.0015  # event-loop timers have ~1 ms resolution: wake this early, then spin


@dataclass
class Phase:
    """One continuous stretch of load: ``warmup_s`` unrecorded, then the measured part."""

    next_ops: NextOps
    pipeline: int
    iterations: int | None = None  # measured ops to issue (XOR duration_s)
    duration_s: float | None = None
    warmup_s: float = 0.0
    rate: float | None = None  # ops/s, open loop; None = closed loop
    recorder: Recorder | None = None  # None: nothing recorded (prefill)
    label: str = "measuring"  # for progress lines


class Batch:
    __slots__ = ("worker", "subs", "intended", "sent", "measured", "waited", "ok", "failed", "messages")

    def __init__(self, worker: Worker, intended: float, sent: float, measured: bool, waited: bool = False) -> None:
        self.worker = worker
        self.subs = 0  # sub-batches still awaiting replies
        self.intended = intended
        self.sent = sent
        self.measured = measured
        self.waited = waited  # open loop: it fell due with every worker busy and waited in the backlog
        self.ok = 0
        self.failed = 0
        self.messages: list[bytes] | None = None


class Worker:
    """One logical client: a lazily opened connection per node."""

    __slots__ = ("engine", "index", "conns")

    def __init__(self, engine: Engine, index: int) -> None:
        self.engine = engine
        self.index = index
        self.conns: list[Conn | None] = []

    def conn(self, node: int) -> Conn:
        conns = self.conns
        if node < len(conns):
            c = conns[node]
            if c is not None:
                return c
        return self.engine._open(self, node)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dial_resp(loop: asyncio.AbstractEventLoop, address: cluster.Address, label: str,
              complete: Callable[[SubBatch], None], lost: Callable[[str], None],
              auth: str | None = None) -> tuple[Conn, asyncio.Future[Any]]:
    """The default ``Dial``: a RESP connection to a Redis node (authenticated with ``auth``)."""
    conn = NodeConnection(label, complete, lost, auth)
    return conn, asyncio.ensure_future(open_connection(loop, address[0], address[1], conn, CONNECT_TIMEOUT_S))


class Engine:
    """Applies phases of load through ``connections`` workers.

    ``dial`` says how a worker reaches a node (default: RESP); ``min_stall_s`` raises
    ``STALL_S`` for requests that may legitimately take longer (an HTTP timeout of 60 s).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, router: cluster.Router, connections: int,
                 log: Callable[[str], None] = _log, clock: Callable[[], float] = time.perf_counter,
                 dial: Dial | None = None, min_stall_s: float | None = None, auth: str | None = None) -> None:
        self.loop = loop
        self.router = router
        self.log = log
        self.clock = clock
        self.dial = dial
        self.auth = auth  # the redis password: every RESP connection sends AUTH first
        self.min_stall_s = min_stall_s
        self.workers = [Worker(self, i) for i in range(connections)]
        self.fatal: str | None = None
        self.interrupted = False
        self._connecting: list[asyncio.Future[Any]] = []
        self._refreshing = False
        self._done: asyncio.Future[None] | None = None
        self._reset(Phase(next_ops=lambda n: [], pipeline=1))

    # ------------------------------------------------------------------ connections

    def _open(self, worker: Worker, node: int) -> Conn:
        address = self.router.nodes[node]
        label = cluster.format_address(address)
        if self.dial is not None:
            conn, opening = self.dial(self.loop, address, label, self._sub_done, self.fail)
        else:
            conn, opening = dial_resp(self.loop, address, label, self._sub_done, self.fail, self.auth)
        while len(worker.conns) <= node:
            worker.conns.append(None)
        worker.conns[node] = conn
        fut = asyncio.ensure_future(opening)
        fut.add_done_callback(functools.partial(self._connected, label))
        self._connecting.append(fut)
        return conn

    def _connected(self, label: str, fut: asyncio.Future[Any]) -> None:
        if fut in self._connecting:
            self._connecting.remove(fut)
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None:
            self.fail(f"cannot connect to {label}: {describe(exc)}")

    async def connect(self) -> None:
        """Open every worker's connection to every slot-owning node before any load starts."""
        for node in self.router.active_nodes():
            for w in self.workers:
                w.conn(node)
        pending = list(self._connecting)
        if pending:
            await asyncio.wait(pending)
        if self.fatal is not None:
            raise ConnectionError(self.fatal)

    def close(self) -> None:
        for w in self.workers:
            for c in w.conns:
                if c is not None:
                    c.close()
        for fut in self._connecting:
            fut.cancel()

    # ------------------------------------------------------------------ run control

    def _reset(self, phase: Phase) -> None:
        self.phase = phase
        self.next_ops = phase.next_ops
        self.pipeline = phase.pipeline
        self.rec = phase.recorder
        self.issuing = False
        self.inflight = 0
        self.budget: int | None = phase.iterations
        self.free: list[Worker] = []
        self.backlog: deque[tuple[float, int, bool]] = deque()
        self.t_begin = self.t_measure = 0.0
        self.t_end: float | None = None
        self.next_due = 0.0
        self._due_k = 0
        self.interval = 0.0
        self.last_progress = 0.0
        self._timer: asyncio.Handle | None = None
        self._watch: asyncio.Handle | None = None
        self._measuring = False
        self._next_report = 0.0
        self.done_ops = 0  # ops completed in this phase, recorded or not
        self.failed_ops = 0
        self.first_error: str | None = None

    async def run(self, phase: Phase) -> None:
        """Apply ``phase`` until its work or time is done, it is stopped, or a fatal error."""
        self._reset(phase)
        if self.fatal is not None or self.interrupted:
            return
        self._done = self.loop.create_future()
        now = self.clock()
        self.t_begin = now
        self.t_measure = now + phase.warmup_s
        if phase.duration_s is not None:
            self.t_end = self.t_measure + phase.duration_s
        self.last_progress = now
        self._next_report = now + PROGRESS_S
        self.issuing = self.budget is None or self.budget > 0
        if phase.warmup_s <= 0:
            self._begin_measuring(now)
        self._watch = self.loop.call_later(WATCH_S, self._watchdog)
        if phase.rate is None:
            for w in self.workers:
                if not self.issuing:
                    break
                self._fire_closed(w)
        else:
            self.interval = self.pipeline / phase.rate
            self.next_due = now
            self.free = list(reversed(self.workers))
            self._tick()
        self._maybe_finish()
        await self._done
        for handle in (self._timer, self._watch):
            if handle is not None:
                handle.cancel()
        if self.rec is not None and not self.rec.began:
            self._begin_measuring(self.clock())

    def _begin_measuring(self, now: float) -> None:
        if not self._measuring:
            self._measuring = True
            if self.rec is not None:
                self.rec.begin(self.t_measure, time.time() - (now - self.t_measure))

    @property
    def running(self) -> bool:
        """True while a phase is in progress."""
        return self._done is not None and not self._done.done()

    def stop(self) -> None:
        """Interrupt: issue nothing more, drop the backlog, wait briefly for in-flight replies."""
        self.interrupted = True
        if self._done is None or self._done.done():
            return
        self.issuing = False
        self.backlog.clear()
        self.loop.call_later(GRACE_S, self._finish)
        self._maybe_finish()

    def fail(self, message: str) -> None:
        """A fatal error (lost connection, stalled server): stop now, keep what was measured."""
        if self.fatal is None:
            self.fatal = message
        self.issuing = False
        self.backlog.clear()
        self._finish()

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _maybe_finish(self) -> None:
        if not self.issuing and self.inflight == 0 and not self.backlog:
            self._finish()

    def _watchdog(self) -> None:
        now = self.clock()
        stall = STALL_S if self.min_stall_s is None else max(STALL_S, self.min_stall_s)
        if self.inflight and now - self.last_progress > stall:
            self.fail(f"no reply from the server for {stall:g} s ({self.inflight} batches in flight)")
            return
        if not self._measuring and now >= self.t_measure:
            self._begin_measuring(now)
        if self._measuring and self.rec is not None:
            self.rec.tick(now)  # a second with no completions still closes (and is reported)
        if now >= self._next_report:
            self._next_report += PROGRESS_S
            secs = now - self.t_begin
            label = self.phase.label if self._measuring or self.rec is None else "warmup"
            self.log(f"{label}: {secs:.0f} s, {self.done_ops} ops ({self.done_ops / secs:,.0f}/s), "
                     f"{self.failed_ops} errors")
        self._watch = self.loop.call_later(WATCH_S, self._watchdog)

    # ------------------------------------------------------------------ issuing

    def _take(self, measured: bool) -> int:
        """How many ops the next batch may carry (0: the phase's work is all issued)."""
        if not measured or self.budget is None:
            return self.pipeline
        n = self.budget if self.budget < self.pipeline else self.pipeline
        self.budget -= n
        if self.budget <= 0:
            self.issuing = False
        return n

    def _fire_closed(self, w: Worker) -> None:
        now = self.clock()
        measured = now >= self.t_measure
        if measured and not self._measuring:
            self._begin_measuring(now)
        if self.t_end is not None and now >= self.t_end:
            self.issuing = False
            return
        n = self._take(measured)
        if n:
            self._fire(w, now, now, n, measured)

    def _tick(self) -> None:
        """Open loop: hand every batch that is due to a free worker, or backlog it."""
        self._timer = None
        if not self.issuing:
            return
        now = self.clock()
        while self.next_due <= now:
            due = self.next_due
            if self.t_end is not None and due >= self.t_end:
                self.issuing = False
                break
            measured = due >= self.t_measure
            if measured and not self._measuring:
                self._begin_measuring(now)
            n = self._take(measured)
            self._due_k += 1
            self.next_due = self.t_begin + self._due_k * self.interval  # no drift from summing
            if self.free:
                self._fire(self.free.pop(), due, now, n, measured)
            else:
                self.backlog.append((due, n, measured))
            if not self.issuing:
                break
        if self.issuing:
            delay = self.next_due - self.clock()
            if delay > _EARLY_S:
                self._timer = self.loop.call_later(delay - _EARLY_S, self._tick)
            else:
                self._timer = self.loop.call_soon(self._tick)
        else:
            self._maybe_finish()

    def _fire(self, w: Worker, intended: float, now: float, n: int, measured: bool, waited: bool = False) -> None:
        ops = self.next_ops(n)
        b = Batch(w, intended, now, measured, waited)
        self.inflight += 1
        self._send(w, b, ops)

    def _send(self, w: Worker, b: Batch, ops: list[Op]) -> None:
        router = self.router
        if router.single or len(ops) == 1:
            node = router.route(ops[0][0])
            if len(ops) == 1:
                op = ops[0]
                sub = SubBatch(b, ops, op[1], op[2])
            else:
                sub = SubBatch(b, ops, b"".join([o[1] for o in ops]), sum([o[2] for o in ops]))
            b.subs += 1
            w.conn(node).send(sub)
            return
        groups: dict[int, list[Op]] = {}
        route = router.route
        for op in ops:
            node = route(op[0])
            g = groups.get(node)
            if g is None:
                groups[node] = [op]
            else:
                g.append(op)
        b.subs += len(groups)
        for node, group in groups.items():
            w.conn(node).send(SubBatch(b, group, b"".join([o[1] for o in group]), sum([o[2] for o in group])))

    # ------------------------------------------------------------------ replies

    def _sub_done(self, sub: SubBatch) -> None:
        b = sub.batch
        if sub.errors is None:
            b.ok += len(sub.ops)
        else:
            self._sort_errors(b, sub)
        b.subs -= 1
        if b.subs == 0:
            self._batch_done(b)

    def _sort_errors(self, b: Batch, sub: SubBatch) -> None:
        """Decide per op: success, redirect (MOVED/ASK, resent within the same batch) or error."""
        ops = sub.ops
        shift = 1 if sub.asking else 0
        # reply index -> op index; ops of one reply each are the common case
        if sub.want - shift == len(ops):
            owner = list(range(len(ops)))
        else:
            owner = [i for i, o in enumerate(ops) for _ in range(o[2])]
        first: dict[int, bytes] = {}
        assert sub.errors is not None
        for reply, message in sub.errors:
            i = owner[max(reply - shift, 0)]
            if i not in first:
                first[i] = message
        b.ok += len(ops) - len(first)
        for i, message in first.items():
            if (message.startswith(b"MOVED ") or message.startswith(b"ASK ")) and sub.hops < MAX_REDIRECTS:
                self._redirect(b, ops[i], message, sub.hops + 1)
                continue
            b.failed += 1
            if b.messages is None:
                b.messages = [message]
            elif len(b.messages) < 5:
                b.messages.append(message)

    def _redirect(self, b: Batch, op: Op, message: bytes, hops: int) -> None:
        kind, slot, address = message.decode().split()[:3]
        addr = cluster.parse_address(address)
        if kind == "MOVED":
            node = self.router.learn(int(slot), addr)
            self._refresh_slots()
            sub = SubBatch(b, [op], op[1], op[2], hops=hops)
        else:
            node = self.router.node_index(addr)
            sub = SubBatch(b, [op], ASKING + op[1], op[2] + 1, asking=True, hops=hops)
        b.subs += 1
        b.worker.conn(node).send(sub)

    def _refresh_slots(self) -> None:
        """A MOVED means the slot map changed: fetch the whole map once, in the background."""
        if self._refreshing or self.router.single:
            return
        self._refreshing = True

        async def refresh() -> None:
            try:
                self.router.replace(await cluster.discover(list(self.router.nodes), auth=self.auth))
            except (OSError, asyncio.TimeoutError) as exc:
                self.log(f"slot map refresh failed (redirects still followed): {exc}")
            finally:
                self._refreshing = False

        asyncio.ensure_future(refresh())

    def _batch_done(self, b: Batch) -> None:
        now = self.clock()
        self.inflight -= 1
        self.last_progress = now
        self.done_ops += b.ok + b.failed
        if b.failed:
            self.failed_ops += b.failed
            if self.first_error is None and b.messages:
                self.first_error = b.messages[0].decode("utf-8", "replace")
        rec = self.rec
        if b.measured and rec is not None:
            rec.record(now, b.intended, b.sent, b.ok, b.failed, b.messages, b.waited)
        if self.issuing:
            if self.phase.rate is None:
                self._fire_closed(b.worker)
            elif self.backlog:
                due, n, measured = self.backlog.popleft()
                self._fire(b.worker, due, now, n, measured, waited=True)
            else:
                self.free.append(b.worker)
        elif self.backlog:
            due, n, measured = self.backlog.popleft()
            self._fire(b.worker, due, now, n, measured, waited=True)
        else:
            self.free.append(b.worker)
        if self.inflight == 0 and not self.issuing and not self.backlog:
            self._finish()
