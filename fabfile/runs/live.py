"""The live fleet-wide view of a running phase: one picture of all its agents, every second.

It is fed, not polled: whatever brings agents' output back calls

* :meth:`LiveView.feed` with each per-second record (``bench.wire.progress``) of an agent,
* :meth:`LiveView.agent_line` with each of its log lines,
* :meth:`LiveView.agent_state` when it ends (``"done"`` or ``"failed"``, with the error),

as the follower of a run on the hosts does (fabfile.runs.follow, from each agent's stderr file
as its host writes it). Agents are named ``(benchmark, agent_num)``.

Per benchmark it shows: how far it is (measured seconds of its duration, or ops done of its
total), agents running/done/failed, and the figures of every complete second since the line
before (a window of about LOG_EVERY_S): ops/s over them, p50 and p99 of the exact merge of their
histograms over all agents (bench.report.seconds.window), errors, late ops (open loop), and the
worst second's p99 beside them. A window, not one second: a server that stalls for 1 s in every
5 s shows in the window's p99 and its worst second, where a single second picked every 10 s
would miss it. A second is complete once every agent still running has reported it (an agent
more than LAG_S behind the newest second is not waited for).

On a terminal the view is redrawn in place every second (rich's Live), with the last complete
second's figures beside the last window's (a window closes every LOG_EVERY_S); in a log (no
TTY, or CI) it prints one line per benchmark every LOG_EVERY_S and a last one when the phase ends.
An agent's own log lines are printed only with ``verbose``, or, when that agent fails, its
last lines with the error.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from bench.report.seconds import Second, SecondsError, aligned, window
from fabfile.terminal import printable

LOG_EVERY_S = 10.0
REDRAW_S = 1.0
LAG_S = 2  # seconds an agent may trail the newest second before the view stops waiting for it
TAIL_LINES = 20  # an agent's last log lines kept, to show when it fails
KEEP_SECONDS = 8  # merged seconds kept per benchmark once a window has shown them

Agent = tuple[str, int]  # (benchmark, agent_num)


@dataclass(frozen=True)
class Planned:
    """What the view knows of a benchmark before it starts."""

    name: str
    agents: int
    duration_s: float | None = None  # the measured window, when it is timed
    iterations: int | None = None  # all agents' ops together, when it is counted


def planned(jobs: Iterable[Any]) -> list[Planned]:
    """One Planned per benchmark of a phase's jobs (objects with benchmark, duration_s, iterations)."""
    by_name: dict[str, list[Any]] = {}
    for job in jobs:
        by_name.setdefault(job.benchmark, []).append(job)
    out = []
    for name, mine in by_name.items():
        counted = [j.iterations for j in mine if j.iterations is not None]
        out.append(Planned(name, len(mine), mine[0].duration_s, sum(counted) if counted else None))
    return out


@dataclass
class _AgentState:
    host: str = "?"
    state: str = "starting"  # starting | running | done | failed
    last_at: int | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


@dataclass
class _Bench:
    plan: Planned
    seconds: dict[int, Second] = field(default_factory=dict)
    first_at: int | None = None
    newest_at: int | None = None
    ops: int = 0
    errors: int = 0
    shown: dict[str, Any] | None = None  # the last complete second's summary
    window: dict[str, Any] | None = None  # the last window shown (bench.report.seconds.window)
    logged_to: int | None = None  # the last second a window has shown


class LiveView:
    def __init__(self, out: TextIO | None = None, *, verbose: bool = False, tty: bool | None = None,
                 offsets: Mapping[str, float] | None = None, clock: Callable[[], float] = time.monotonic,
                 log_every_s: float = LOG_EVERY_S, redraw_s: float | None = REDRAW_S) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self.tty = is_interactive(self.out) if tty is None else tty
        self.offsets = dict(offsets or {})
        self.clock = clock
        self.log_every_s = log_every_s
        self.redraw_s = redraw_s  # None: no ticker thread (the caller calls tick())
        self._lock = threading.RLock()
        self._print_lock = threading.Lock()
        self._benches: dict[str, _Bench] = {}
        self._agents: dict[Agent, _AgentState] = {}
        self._started = 0.0
        self._last_log = 0.0
        self._live: Live | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._ended = False  # the phase has ended: its last, cut-short second is shown too

    # -- what the drivers call ----------------------------------------------------------------

    def start_phase(self, benchmarks: Iterable[Planned]) -> None:
        with self._lock:
            self._benches = {p.name: _Bench(p) for p in benchmarks}
            self._agents = {(b.plan.name, n): _AgentState() for b in self._benches.values()
                            for n in range(b.plan.agents)}
            self._started = self._last_log = self.clock()
            self._ended = False
        if self.tty:
            console = Console(file=self.out, force_terminal=True)
            self._live = Live(self._table(), console=console, auto_refresh=False, transient=False,
                              redirect_stdout=self.out is sys.stdout, redirect_stderr=False)
            self._live.start()
        self._stop.clear()
        if self.redraw_s is not None:
            self._ticker = threading.Thread(target=self._run_ticker, args=(self.redraw_s,), name="live-view",
                                            daemon=True)
            self._ticker.start()

    def feed(self, agent: Agent, host: str, record: Mapping[str, Any]) -> None:
        """One per-second record of ``agent`` (running on ``host``)."""
        at = record.get("at")
        if not isinstance(at, int):
            return
        with self._lock:
            bench, state = self._benches.get(agent[0]), self._agent(agent)
            if bench is None:
                return
            state.host = host
            if state.state == "starting":
                state.state = "running"
            key = aligned(at, self.offsets.get(host))
            state.last_at = key if state.last_at is None else max(state.last_at, key)
            if bench.first_at is None or key < bench.first_at:
                bench.first_at = key
            bench.newest_at = key if bench.newest_at is None else max(bench.newest_at, key)
            try:
                bench.seconds.setdefault(key, Second(key)).add(record, f"{agent[0]}#{agent[1]}")
            except SecondsError:
                return  # a torn record: the live view skips it, the result has the real data
            bench.ops += int(record.get("ops") or 0)
            bench.errors += int(record.get("errors") or 0)
            self._advance(bench)

    def agent_line(self, agent: Agent, host: str, line: str) -> None:
        """One log line of ``agent``: printed with ``verbose``, else kept for if it fails."""
        with self._lock:
            state = self._agent(agent)
            state.host = host
            state.lines.append(line)
        if self.verbose:
            self._print(f"[{host} {agent[0]}#{agent[1]}] {line}")

    def agent_state(self, agent: Agent, state: str, error: str | None = None) -> None:
        with self._lock:
            agent_state = self._agent(agent)
            agent_state.state = state
            bench = self._benches.get(agent[0])
            if bench is not None:
                self._advance(bench)
            tail = list(agent_state.lines)
        if state == "failed":
            lines = [f"agent {agent[0]}#{agent[1]} on {agent_state.host} failed: {error or 'no result'}"]
            if not self.verbose:  # verbose printed them already
                lines += [f"  [{agent_state.host} {agent[0]}#{agent[1]}] {line}" for line in tail]
            self._print("\n".join(lines))

    def tick(self) -> None:
        """Redraw (terminal), and when LOG_EVERY_S has passed close a window (printing the log
        lines when not on a terminal)."""
        now = self.clock()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            text = self._close_windows()
            if self._live is None:
                self._print(text)
        if self._live is not None:
            self._live.update(self._table(), refresh=True)

    def end_phase(self) -> None:
        with self._lock:
            self._ended = True
            for b in self._benches.values():  # the last second is cut short by the window's end:
                last_full = b.seconds.get((b.newest_at or 0) - 1)  # show the one before it
                if last_full is not None:
                    b.shown = last_full.summary()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        text = self._close_windows()
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None
        else:
            self._print(text)

    # -- what it shows ------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """One line per benchmark: the log form of the view, over the seconds since the last line
        (as the next line would show them, without closing that window)."""
        with self._lock:
            return [self._line(b, self._pending(b)) for b in self._benches.values()]

    def _close_windows(self) -> str:
        """The log lines, each benchmark's window then closed: the next starts after it."""
        with self._lock:
            for b in self._benches.values():
                w = self._pending(b)
                if w is not b.window and w is not None:
                    b.window, b.logged_to = w, w["last"]
            return "\n".join(self._line(b, b.window) for b in self._benches.values())

    def _line(self, b: _Bench, w: Mapping[str, Any] | None) -> str:
        return f"[live] {b.plan.name}: {self._progress(b)}; agents {self._counts(b)}; {self._figures(b, w)}"

    def _pending(self, b: _Bench) -> dict[str, Any] | None:
        """The complete seconds since the last window, merged; the last window if none is new.
        Once the phase has ended, through its last second too: cut short by the end, it still
        holds ops (all of them, for a benchmark shorter than a second) the last line must show."""
        first = b.first_at if b.logged_to is None else b.logged_to + 1
        last = b.newest_at if self._ended else (b.shown["at"] if b.shown is not None else None)
        if last is None or first is None or last < first:
            return b.window
        return window(first, last, b.seconds)

    def _table(self) -> Table:
        table = Table(title=f"fleetbench live, {self.clock() - self._started:.0f} s", title_justify="left")
        # the last second, then the last window's p99 and its worst second's (as in the log lines)
        for column in ("benchmark", "progress", "agents run/done/failed", "ops/s", "p50", "p99",
                       f"p99 / worst s, last {self.log_every_s:g} s", "errors"):
            table.add_column(column, justify="left" if column in ("benchmark", "progress") else "right")
        with self._lock:
            for b in self._benches.values():
                s, w = b.shown or {}, b.window
                running, done, failed = self._count_states(b)
                table.add_row(b.plan.name, self._progress(b), f"{running}/{done}/{failed}",
                              f"{s['ops']:,}" if s else "-", _ms(s.get("p50")), _ms(s.get("p99")),
                              f"{_ms(w['p99'])} / {_ms(w['worst_p99'])}" if w else "-", f"{b.errors:,}")
        return table

    def _progress(self, b: _Bench) -> str:
        elapsed = self.clock() - self._started
        running, _, _ = self._count_states(b)
        if b.plan.iterations is not None:
            return f"{b.ops + b.errors:,} of {b.plan.iterations:,} ops ({elapsed:.0f} s)"
        if not running:
            return f"ended ({elapsed:.0f} s)"
        if b.first_at is None or b.shown is None:
            return f"starting ({elapsed:.0f} s)"
        # seconds the window has touched; it began within its first one, so this may run one ahead
        measured = b.shown["at"] - b.first_at + 1
        if b.plan.duration_s:
            measured = min(measured, math.ceil(b.plan.duration_s))
            return f"{measured} s of {b.plan.duration_s:g} s, {max(0.0, b.plan.duration_s - measured):.0f} s left"
        return f"{measured} s"

    def _count_states(self, b: _Bench) -> tuple[int, int, int]:
        states = [s.state for (name, _), s in self._agents.items() if name == b.plan.name]
        return (sum(1 for s in states if s in ("starting", "running")), states.count("done"), states.count("failed"))

    def _counts(self, b: _Bench) -> str:
        running, done, failed = self._count_states(b)
        return f"{running} running, {done} done, {failed} failed"

    def _figures(self, b: _Bench, w: Mapping[str, Any] | None) -> str:
        if w is None:
            return f"no complete second yet, {b.errors:,} errors"
        late = f", {w['late']:,} late" if w["late"] is not None else ""
        return (f"{w['ops_per_s']:,.0f} ops/s, p50 {_ms(w['p50'])}, p99 {_ms(w['p99'])} over the last "
                f"{w['seconds']} s, worst second p99 {_ms(w['worst_p99'])}; {w['errors']:,} errors{late} "
                f"in them ({b.errors:,} errors in all)")

    # -- internals ----------------------------------------------------------------------------

    def _agent(self, agent: Agent) -> _AgentState:
        return self._agents.setdefault(agent, _AgentState())

    def _advance(self, b: _Bench) -> None:
        """Move b.shown to the newest second every running agent has reported."""
        if b.newest_at is None:
            return
        waiting = [s.last_at for (name, _), s in self._agents.items()
                   if name == b.plan.name and s.state == "running" and s.last_at is not None
                   and s.last_at >= b.newest_at - LAG_S]
        complete = min(waiting) if waiting else b.newest_at
        if complete in b.seconds and (b.shown is None or complete >= b.shown["at"]):
            b.shown = b.seconds[complete].summary()
        if b.logged_to is None:
            return  # no window has shown any second yet: keep them all for the first
        for old in [at for at in b.seconds if at < complete - KEEP_SECONDS and at <= b.logged_to]:
            del b.seconds[old]

    def _run_ticker(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.tick()
            except Exception as exc:  # the view must never take the run down
                self._print(f"warning: live view: {type(exc).__name__}: {exc}")
                return

    def _print(self, text: str) -> None:
        if not text:
            return
        text = printable(text)  # agents' lines and errors come from hosts: shown, never obeyed
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            with self._print_lock:  # one write per line: two hosts' lines never glued into one
                self.out.write(text + "\n")
                self.out.flush()


def is_interactive(out: TextIO) -> bool:
    """A terminal that is not CI's (CI=true: a log, even on a pseudo-terminal)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _ms(us: Any) -> str:
    if not isinstance(us, (int, float)):
        return "-"
    return f"{us / 1000:.3g} ms" if us < 999_500 else f"{us / 1e6:.3g} s"  # not "1e+03 ms"
