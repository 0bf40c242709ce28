"""Following host runs: stream what the hosts write, ride out lost links, fetch what was missed.

One thread per host polls its run directory (fabfile.runs.hostrun.poll_command) about once a
second: the host run's state, the new bytes of each agent's stderr, each result once it exists,
the host metrics since the last poll. An agent's per-second records (bench.wire.progress, on its
stderr) feed the fleet-wide live view (fabfile.runs.live), its other lines are kept for if it
fails (shown with ``verbose``). Everything lands in the local run directory as it arrives, so a
controller killed at any moment leaves what it had, and a later ``inv collect`` fetches the rest
from the hosts (nothing a host finished is lost).

What a host sends is bounded (the limits are bench.wire.hostrun's): of a stderr the
last STDERR_KEEP_BYTES are kept (a poll skips a flood on the host), a result over
MAX_RESULT_BYTES is refused as that agent's failure, a poll's whole answer is capped; records
are scrubbed of every secret the controller knows.

and checked (bench.wire.hostrun): a malformed answer or state is that host's error, named.

A host that stops answering is said once, with why ("lost tb4, retrying ... (timed out)"),
retried with backoff for ``reconnect_for`` seconds, and greeted when it is back ("tb4 back after
45 s"); the offsets make the next poll fetch exactly what was missed. A host still silent after
that is recorded lost. One the barrier gave up (dropped by the coordinator, or the coordinator
its hosts went on without: frozen or dead, not merely cut off from us) is recorded lost after
``host_timeout`` once every other host has finished.

A host that answers is not enough: its host run's heartbeat (state.json's ``updated_at``,
rewritten every bench.wire.hostrun.HEARTBEAT_S) must move. One that stands still for
``host_timeout`` (a stopped or stuck process), a run directory that is gone, a host run that
wrote no state within ``host_timeout`` of its start, or a state that stays unreadable that long:
each is given up like a lost host, with the reason, and its agents are recorded failed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from bench.wire import progress
from bench.wire.hostrun import (
    ECHO_LINE_BYTES,
    MAX_RESULT_BYTES,
    RECORD_LINE_BYTES,
    STDERR_KEEP_BYTES,
    HostState,
    WireError,
    check_state,
)
from bench.wire.labels import split_step
from bench.wire.result import AgentRecord, AgentResult, Failure
from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import RemoteError, tail
from fabfile.remote.streams import ByteTail, HostDataError, LineCutter, mib
from fabfile.runs import hostrun
from fabfile.runs.live import LiveView, Planned
from fabfile.runs.observe import LOG_KEEP_BYTES, METRICS_KEEP_BYTES, keep_log, log_command, unpack
from fabfile.runs.store import RunDir, write_json
from fabfile.servers.nodes import LOG, START_LOG, Node
from fabfile.terminal import printable, scrub, scrub_data

Echo = Callable[[str], None]
MAX_BACKOFF_S = 15.0
QUEUED_PER_PHASE = 10_000  # lines and records kept for a phase the view has not reached (its start)


def backoff(attempt: int, left_s: float) -> float:
    """Seconds before reconnect attempt ``attempt`` (0-based): 1, 2, 4, 8, then every 15 s,
    never past the time left."""
    return max(0.0, min(MAX_BACKOFF_S, 2.0 ** attempt, left_s))


def duration_text(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def launched_phase(state: Mapping[str, Any]) -> int | None:
    """The latest phase of which the host run has launched an agent. Not its ``phase``: a host
    without agents in a phase reaches the next one at once, while the others still measure."""
    phases = [a["phase"] for a in (state.get("agents") or {}).values()
              if isinstance(a, Mapping) and isinstance(a.get("phase"), int) and a.get("state") != "pending"]
    return max(phases) if phases else None


class AgentStream:
    """What we have of one agent's stderr file on its host: its kept tail, and how far into the
    file we are (bytes taken or skipped), cut into lines long enough for a per-second record."""

    def __init__(self) -> None:
        self.tail = ByteTail(STDERR_KEEP_BYTES)
        self.lines = LineCutter(RECORD_LINE_BYTES)
        self.offset = 0

    def take(self, start: int, data: bytes) -> list[str]:
        """The whole lines that ``data`` (the file's bytes from ``start``) completes. A ``start``
        past our offset: the host skipped a flood; the line it cut through is not shown."""
        if start < self.offset:
            return []  # not what we asked for (the file shrank?): ignored
        if start > self.offset:
            self.tail.skip(start - self.offset)
            self.lines = LineCutter(RECORD_LINE_BYTES)
        self.tail.feed(data)
        self.offset = start + len(data)
        return self.lines.feed(data)

    def log_lines(self) -> list[str]:
        """The kept stderr without the per-second records (they are data, in the result too)."""
        return [line for line in self.tail.text("bytes of stderr").splitlines() if progress.parse_line(line) is None]


def _kept_stderr(h: HostFollow, key: str) -> list[str]:
    """What an agent's record keeps of its stderr: its log lines, scrubbed."""
    return [scrub(line) for line in (h.stderr[key].log_lines() if key in h.stderr else [])]


def shown(line: str) -> str:
    """A log line as the live view shows it: cut (a long line must not flood the terminal),
    scrubbed, every control character made visible (say()'s cleaning: a host's text is shown,
    never obeyed by the terminal)."""
    if len(line) > ECHO_LINE_BYTES:
        line = line[:ECHO_LINE_BYTES] + f" [... {len(line) - ECHO_LINE_BYTES} more characters of this line not shown]"
    return printable(line)


@dataclass
class HostFollow:
    name: str
    state: dict[str, Any] | None = None
    missing: bool = False  # the host has no such run
    stderr: dict[str, AgentStream] = field(default_factory=dict)  # agent key -> its stderr so far
    results: dict[str, AgentResult | None] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # agent key -> why its result was not taken
    recorded: set[str] = field(default_factory=set)
    facts: bool = False
    dead: bool = False  # its host run's process is gone without having ended the run
    lost_since: float | None = None
    last_answer: float | None = None  # monotonic time of its last answer: a loss is counted from there
    lost_for: float = 0.0  # the last loss's length
    gave_up: str | None = None
    finished: bool = False
    first_poll: float | None = None  # monotonic: when it first answered (no state by host_timeout: given up)
    beat: float | None = None  # the heartbeat (state's updated_at) last seen
    beat_moved: float | None = None  # monotonic: when it last moved
    bad_state: str | None = None  # why the last state.json read was refused (read again next poll)
    bad_since: float | None = None
    log_tail: str = ""  # the end of hostrun.log while there is no state
    said: set[str] = field(default_factory=set)  # notes said once (clock offset, alone)
    unreachable: bool = False  # given up for not answering (not for what it answered)
    polls: int = 0

    @property
    def status(self) -> str | None:
        status = (self.state or {}).get("status")
        # without a state, "dead" means nothing yet (the pid is read from it): _not_running decides
        return "failed" if self.dead and self.state is not None and status not in hostrun.TERMINAL else status


def agent_record(host: str, agent: Mapping[str, Any], result: AgentResult | None, stderr: str,
                 refused: str | None = None) -> AgentRecord:
    """The local agent record (store.RunDir.write_agent) of an agent the host run is done with;
    ``refused``: why its result file was not taken."""
    benchmark = str(agent.get("benchmark"))
    code = agent.get("exit_code")
    if result is not None and code == 0 and not result.get("fatal"):
        return {"benchmark": benchmark, "host": host, "result": result}
    reasons = {"stopped": "stopped: the run was stopped before it ended (what it measured is kept)",
               "timeout": "stopped: it ran past the agent timeout",
               "pending": "never started: the run ended before its phase",
               "running": "lost: the host run ended while it ran"}
    if isinstance(code, int) and code < 0 and result is None:
        error = f"the agent was killed by a signal ({-code}) and wrote no result"
    else:
        fatal = result.get("fatal") if result is not None else None
        error = fatal or refused or reasons.get(str(agent.get("state"))) or (
            f"exit status {code}" + (" and no result" if result is None else ""))
    failure: Failure = {"agent_num": int(agent.get("agent_num", -1)), "host": host, "error": error,
                        "stderr_tail": tail(stderr)}
    return {"benchmark": benchmark, "host": host, "failure": failure, "result": result}


class Follower:
    def __init__(self, fleet: Fleet, run_dir: RunDir, hosts: Sequence[str], *, nodes: Sequence[Mapping[str, Any]],
                 expected: Mapping[str, Sequence[Mapping[str, Any]]], echo: Echo, renew: bool, reconnect_for: float,
                 host_timeout: float, poll_s: float = 1.0, stream: bool = True,
                 phases: Sequence[Sequence[str]] = (), write: bool = True,
                 planned: Sequence[Sequence[Planned]] = (), view: LiveView | None = None):
        self.fleet = fleet
        self.run_dir = run_dir
        self.run_id = run_dir.run_id
        self.hosts = {name: HostFollow(name) for name in hosts}
        self.nodes = [Node(**n) for n in nodes]
        self.expected = expected  # host -> the agents its plan gave it (benchmark, agent_num)
        self.echo = echo
        self.renew = renew
        self.reconnect_for = reconnect_for
        self.host_timeout = host_timeout
        self.poll_s = poll_s
        self.stream = stream
        self.halt = threading.Event()
        self.phases = [list(p) for p in phases]
        self.write = write  # False (status): read the hosts' states, write nothing locally
        self.planned = [list(p) for p in planned]  # per phase, what the live view shows
        self.view = view  # None: nothing is shown of the agents (status, collect)
        self._announced: set[int] = set()
        self._launched = -1  # the latest phase any host has launched an agent of
        self._queued: dict[int, deque[Callable[[], None]]] = {}  # for the view, by phase not shown yet
        self._viewing = False  # the view shows a phase
        self._lock = threading.Lock()

    # -- the whole fleet --

    def follow(self) -> None:
        """Until every host's run has ended and been fetched, or the host is recorded lost."""
        threads = [threading.Thread(target=self._follow_host, args=(h,), daemon=True) for h in self.hosts.values()]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # short slices: Ctrl-C is seen at once
        finally:
            self.halt.set()
            self._show_the_rest()
            self._end_view()

    def fetch_once(self) -> None:
        """One pass over every host (collect): what each finished, whatever state it is in."""
        def one(h: HostFollow) -> None:
            try:
                self._connect(h.name)
                self._poll(h)
                if h.state is not None and self.write:
                    self._poll(h)  # now knowing its agents: their files
                if h.status in hostrun.TERMINAL and self.write:
                    self._fetch_logs(h)
                if h.missing:  # answers, but its run is gone: lost for good, not merely unreachable
                    h.gave_up = self._not_running(h, time.monotonic())
            except Exception as exc:  # any way of not answering (paramiko has many): unreachable
                h.gave_up = f"unreachable: {str(exc) or type(exc).__name__}"
        threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in self.hosts.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.host_timeout + self.fleet.settings.connect_timeout + 30)

    def stop(self, timeout: float) -> None:
        """Ask every host we can reach to stop the run (Ctrl-C)."""
        def one(name: str) -> None:
            try:
                self._connect(name)
                hostrun.exec_with_stdin(self.fleet[name], hostrun.stop_command(self.run_id), b"", timeout)
            except Exception as exc:  # tell and go on: the others must still be asked
                self.echo(f"warning: could not ask {name} to stop: {str(exc) or type(exc).__name__}")
        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in self.hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + self.fleet.settings.connect_timeout)

    def lost(self) -> list[str]:
        return [h.name for h in self.hosts.values() if h.gave_up]

    def clock(self) -> dict[str, dict[str, Any]]:
        return {h.name: h.state["clock"] for h in self.hosts.values() if h.state and h.state.get("clock")}

    def statuses(self) -> dict[str, str | None]:
        return {h.name: h.status for h in self.hosts.values()}

    def alone(self) -> dict[str, dict[str, str]]:
        """host -> {phase: why}: the phases each host started without the barrier coordinator."""
        out = {}
        for h in self.hosts.values():
            phases = (h.state or {}).get("alone_phases")
            if isinstance(phases, dict) and phases:
                out[h.name] = {str(k): str(v) for k, v in phases.items()}
        return out

    # -- one host --

    def _follow_host(self, h: HostFollow) -> None:
        attempt = 0
        while not self.halt.is_set():
            try:
                self._connect(h.name)
                self._poll(h)
            except Exception as exc:  # any way of not answering (paramiko has many) is a lost host
                now = time.monotonic()
                why = printable(str(exc) or type(exc).__name__)
                if h.lost_since is None:
                    h.lost_since = h.last_answer or now
                    attempt = 0
                    self.echo(f"lost {h.name}, retrying for up to {duration_text(self.reconnect_for)} ... ({why})")
                lost_for = now - h.lost_since
                if lost_for >= self.reconnect_for or self._given_up_by_the_fleet(h, lost_for):
                    h.unreachable = True
                    self._give_up(h, f"no answer for {duration_text(lost_for)} ({why})",
                                  f"after {duration_text(lost_for)}")
                    return
                self._drop(h.name)
                self.halt.wait(backoff(attempt, self.reconnect_for - lost_for))
                attempt += 1
                continue
            h.last_answer = time.monotonic()
            if h.lost_since is not None:
                h.lost_for = h.last_answer - h.lost_since
                self.echo(f"{h.name} back after {duration_text(h.lost_for)}")
                h.lost_since = None
            if h.finished:
                self._record_lost(h, "its host run ended without a word of it (not in its state)")
                self._fetch_logs(h)
                return
            reason = self._not_running(h, h.last_answer)
            if reason is not None:
                self._give_up(h, reason, "")
                return
            self.halt.wait(self.poll_s)

    def _give_up(self, h: HostFollow, reason: str, after: str) -> None:
        """Stop following ``h``: it is recorded lost, with ``reason``, and so are its agents we
        have no record of."""
        h.gave_up = reason
        self.echo(f"gave up on {h.name}{' ' + after if after else ''}: {reason}; recorded lost; "
                  f"`inv collect --run {self.run_id}` fetches what it finished once it is back")
        self._record_lost(h)
        self._announce(None)  # the view may wait for this host no more

    def _not_running(self, h: HostFollow, now: float) -> str | None:
        """Why a host that answers is not running this run any more (None: it is, or may be)."""
        if h.missing:
            return f"its run directory ~/{hostrun.run_path(self.run_id)} is gone (wiped, or the host was rebuilt)"
        if h.status in hostrun.TERMINAL:
            return None
        if h.state is None:
            waited = now - (h.first_poll or now)
            if waited < self.host_timeout:
                return None
            log = f"; its log ends: {h.log_tail}" if h.log_tail else ""
            return (f"its host run wrote no state in {duration_text(waited)}"
                    + (f" (its state.json: {h.bad_state})" if h.bad_state else "") + log)
        if h.bad_state and h.bad_since is not None and now - h.bad_since >= self.host_timeout:
            return f"its state.json has been unreadable for {duration_text(now - h.bad_since)}: {h.bad_state}"
        if h.beat_moved is not None and now - h.beat_moved >= self.host_timeout:
            return (f"stalled: its host run's heartbeat stopped {duration_text(now - h.beat_moved)} ago "
                    f"(--host-timeout {self.host_timeout:g} s; the process is stopped or stuck)")
        return None

    def _given_up_by_the_fleet(self, h: HostFollow, lost_for: float) -> bool:
        """Frozen or dead rather than cut off from us: the coordinator dropped it too, and every
        other host is done."""
        if lost_for < self.host_timeout:
            return False
        others = [o for o in self.hosts.values() if o is not h]
        if not others or not all(o.finished or o.gave_up for o in others):
            return False
        for o in others:
            barrier = (o.state or {}).get("barrier") or {}
            if h.name in (barrier.get("dropped") or {}):
                return True
            coordinator = ((o.state or {}).get("clock") or {}).get("coordinator")
            if coordinator == h.name and ((o.state or {}).get("alone_phases") or barrier.get("alone")):
                return True  # the coordinator its hosts went on without
        return False

    def _connect(self, name: str) -> None:
        self.fleet.reconnect(name, self.host_timeout)

    def _drop(self, name: str) -> None:
        self.fleet.drop(name)

    def _poll(self, h: HostFollow) -> None:
        offsets: dict[str, int] = {}
        have = self.run_dir.host_metrics_size(h.name)
        if have < METRICS_KEEP_BYTES:  # past it: the rest stays on the host
            offsets[hostrun.METRICS] = have
        if not h.facts:
            offsets[hostrun.FACTS] = 0
        keys = list((h.state or {}).get("agents", {}))
        h.polls += 1
        turn = h.polls % len(keys) if keys else 0  # each agent first in turn: a poll's budget is shared fairly
        for key in keys[turn:] + keys[:turn]:
            if key not in h.recorded:
                offsets[f"{key}.stderr"] = h.stderr[key].offset if key in h.stderr else 0
                if h.results.get(key) is None and key not in h.refused:
                    offsets[f"{key}.json"] = 0
        if not self.write:
            offsets = {}
        command = hostrun.poll_command(self.run_id, offsets, self.renew)
        limit = hostrun.poll_bytes(list(offsets))
        data = unpack(hostrun.exec_with_stdin(self.fleet[h.name], command, b"", self.host_timeout, limit=limit),
                      limit, f"{h.name}'s run files")
        files = hostrun.parse_poll(data)
        now = time.monotonic()
        if h.first_poll is None:
            h.first_poll = now
        h.missing = files is None
        if files is None:
            return
        if not self.write:
            if hostrun.STATE in files:
                self._take_state(h, files[hostrun.STATE][1], now)
            h.dead = files.get(hostrun.ALIVE, (0, b"1"))[1].strip() == b"0"
            return
        later = {p for p, (start, _) in files.items() if p.endswith(".json") and start > 0}  # over the poll's budget
        self._take(h, files, asked={p[:-len(".json")] for p in offsets if p.endswith(".json") and p not in later},
                   now=now)

    def _take_state(self, h: HostFollow, data: bytes, now: float) -> bool:
        """A state.json as read; False (the last good one kept) when it is refused: read again
        next poll, and given up only if it stays so for host_timeout (:meth:`_not_running`)."""
        try:
            checked: HostState = check_state(data, h.name)
        except WireError as exc:
            if h.bad_state is None:
                h.bad_since = now
            h.bad_state = str(exc)
            return False
        h.bad_state = h.bad_since = None
        h.state = checked.data
        if checked.updated_at != h.beat or h.beat_moved is None:
            h.beat, h.beat_moved = checked.updated_at, now
        for note in checked.notes:
            self._say_once(h, note, f"warning: {note}")
        if checked.alone:
            self._say_once(h, "alone", f"{h.name} went on without the barrier coordinator ({checked.alone}): "
                                       "its phases start when it is ready, not with the others'")
        return True

    def _say_once(self, h: HostFollow, key: str, text: str) -> None:
        if key not in h.said:
            h.said.add(key)
            self.echo(printable(text))

    def _take(self, h: HostFollow, files: Mapping[str, tuple[int, bytes]], asked: set[str] | None = None,
              now: float | None = None) -> None:
        """One poll's files. An agent is recorded once it has ended and its result file was
        asked for (so "no result" is a fact, not a file not yet asked about); ``asked`` None:
        every agent's was."""
        if hostrun.STATE in files and self._take_state(h, files[hostrun.STATE][1],
                                                       time.monotonic() if now is None else now):
            write_json(self.run_dir.host_dir(h.name) / "hostrun.json", h.state)
            clock = (h.state or {}).get("clock") or {}
            if self.view is not None and isinstance(clock.get("offset_s"), (int, float)):
                self.view.offsets[h.name] = -float(clock["offset_s"])  # how far its clock is ahead
        if hostrun.LOG in files:
            h.log_tail = printable(files[hostrun.LOG][1].decode(errors="replace").strip()[-400:])
        if hostrun.FACTS in files:
            try:
                self.run_dir.write_host_facts(h.name, json.loads(files[hostrun.FACTS][1]))
                h.facts = True
            except ValueError:
                pass  # being written: next time
        offset, metrics = files.get(hostrun.METRICS, (0, b""))
        complete = metrics[:metrics.rfind(b"\n") + 1]
        if complete and offset == self.run_dir.host_metrics_size(h.name):
            self.run_dir.append_host_metrics(h.name, complete)
        agents = (h.state or {}).get("agents", {})
        for key, agent in agents.items():
            self._take_stderr(h, key, agent, files.get(f"{key}.stderr"))
            if f"{key}.json" in files and files[f"{key}.json"][0] == 0:  # else: there, sent next time
                self._take_result(h, key, files[f"{key}.json"][1])
        if hostrun.ALIVE in files:
            h.dead = files[hostrun.ALIVE][1].strip() == b"0"
        ended = h.status in hostrun.TERMINAL
        for key, agent in agents.items():
            known = asked is None or key in asked or h.results.get(key) is not None
            if key not in h.recorded and known and (agent.get("state") in hostrun.AGENT_ENDED or ended):
                self._record(h, key, agent)
        h.finished = ended and h.state is not None and all(k in h.recorded for k in agents)
        self._announce(launched_phase(h.state or {}))  # after this poll's records: they end the phase shown

    def _take_result(self, h: HostFollow, key: str, data: bytes) -> None:
        if len(data) > MAX_RESULT_BYTES:
            h.refused[key] = f"its result is larger than {mib(MAX_RESULT_BYTES)}: refused"
            return
        try:
            result = json.loads(data)
        except (ValueError, RecursionError):
            result = None  # being written, or garbage: the merge names what is wrong with the last one
        h.results[key] = cast(AgentResult, result) if isinstance(result, dict) else None

    def _announce(self, launched: int | None) -> None:
        """``benchmark <names> ...`` once, when the first agent of a phase is launched (every
        host is done with the one before) and every agent of the phases before it is recorded
        (or its host given up: so the view of a phase shows how it ended); the live view moves
        on to it."""
        if not self.stream:
            return
        with self._lock:
            if launched is not None:
                self._launched = max(self._launched, launched)
            phase = self._launched
            if not 0 <= phase < len(self.phases) or phase in self._announced or not self._recorded_before(phase):
                return
            self._show_phase(phase)

    def _show_the_rest(self) -> None:
        """At the end: each phase the view never reached though its agents said something (a
        host was lost before the phase before it was recorded), in order."""
        with self._lock:
            for phase in sorted(k for k in self._queued if k > max(self._announced, default=-1)):
                self._show_phase(phase)

    def _show_phase(self, phase: int) -> None:
        """``benchmark <names> ...``, the view on ``phase``, and what its agents said before (with
        self._lock held)."""
        self._announced.add(phase)
        self._end_view()
        self.echo(f"benchmark {', '.join(self.phases[phase])} ...")
        if self.view is not None and phase < len(self.planned):
            self.view.start_phase(self.planned[phase])
            self._viewing = True
        for show in self._queued.pop(phase, ()):
            show()
        for older in [k for k in self._queued if k < phase]:
            del self._queued[older]

    def _recorded_before(self, phase: int) -> bool:
        earlier = {name for names in self.phases[:phase] for name in names}
        for host, agents in self.expected.items():
            h = self.hosts.get(host)
            if h is None or h.gave_up:
                continue
            if any(a.get("benchmark") in earlier and not a.get("search")  # a search's agents are its steps'
                   and f"{a.get('dir')}/agent-{a.get('agent_num')}" not in h.recorded for a in agents):
                return False
        return True

    def _end_view(self) -> None:
        if self.view is not None and self._viewing:
            self._viewing = False
            self.view.end_phase()

    def _take_stderr(self, h: HostFollow, key: str, agent: Mapping[str, Any], part: tuple[int, bytes] | None) -> None:
        if part is None:
            return
        lines = h.stderr.setdefault(key, AgentStream()).take(*part)
        if not self.stream or self.view is None:
            return
        view = self.view
        # a search's steps are one benchmark in the view: its seconds, step after step
        name = (split_step(str(agent.get("benchmark")))[0], int(agent.get("agent_num", -1)))
        for line in lines:
            record = progress.parse_line(line)
            if record is not None:
                self._to_view(agent, partial(view.feed, name, h.name, record))
            else:
                self._to_view(agent, partial(view.agent_line, name, h.name, shown(line)))

    def _to_view(self, agent: Mapping[str, Any], show: Callable[[], None]) -> None:
        """Show now, or, for an agent of a phase the view has not reached yet (its host polled
        first), when it does (:meth:`_announce`)."""
        phase = agent.get("phase")
        with self._lock:
            if isinstance(phase, int) and phase > max(self._announced, default=-1):
                self._queued.setdefault(phase, deque(maxlen=QUEUED_PER_PHASE)).append(show)
                return
        show()

    def _record(self, h: HostFollow, key: str, agent: Mapping[str, Any]) -> None:
        lines = _kept_stderr(h, key)
        result = h.results.get(key)
        if result is not None:
            job = self._public_job(h.name, agent, result)
            result = {**result, "job": job} if job is not None else result  # its own echo holds the secrets
        record: AgentRecord = scrub_data(agent_record(h.name, agent, result, "\n".join(lines), h.refused.get(key)))
        self.run_dir.write_agent(str(agent["benchmark"]), int(agent["agent_num"]), record, lines)
        h.recorded.add(key)
        view = self.view
        if view is not None and self.stream:
            # stopped by us: not a failure; never started: one, unless the run was stopped
            failed = "failure" in record and agent.get("state") != "stopped" and not (
                agent.get("state") == "pending" and h.status in ("stopped", "abandoned"))
            error = record["failure"]["error"] if failed else None
            name, step = split_step(str(agent["benchmark"]))
            if step is None or failed:  # a search's agent is done once its search is: the view's end says so
                self._to_view(agent, lambda: view.agent_state((name, int(agent["agent_num"])),
                                                              "failed" if failed else "done", error))

    def _public_job(self, host: str, agent: Mapping[str, Any],
                    result: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The agent's job as the plan recorded it, without secrets (meta.json's host_run.agents);
        a search step's is its search's, with the step's label and the rate its result ran at."""
        name, step = split_step(str(agent.get("benchmark")))
        for planned in self.expected.get(host, ()):
            if (planned.get("benchmark"), planned.get("agent_num")) == (name, agent.get("agent_num")):
                job = planned.get("job")
                if not isinstance(job, Mapping):
                    return None
                if step is None:
                    return dict(job)
                ran = (result or {}).get("job") or {}
                rate = ran.get("rate") if isinstance(ran, Mapping) else None
                return {**job, "benchmark": agent.get("benchmark"),
                        "rate": rate if isinstance(rate, (int, float)) else None}
        return None

    def _record_lost(self, h: HostFollow, error: str | None = None) -> None:
        """A failure record for each of its planned agents we have no record of (a later collect
        that reaches the host replaces it with what the agent wrote there): every planned agent
        ends done, failed or lost, with the reason."""
        for agent in self.expected.get(h.name, ()):
            key = f"{agent['dir']}/agent-{agent['agent_num']}"
            if key in h.recorded or agent.get("search"):  # a search's steps are judged without them
                continue
            lines = _kept_stderr(h, key)
            failure: Failure = {"agent_num": int(agent["agent_num"]), "host": h.name,
                                "stderr_tail": tail("\n".join(lines)),
                                "error": error or (
                                    f"lost the connection to {h.name} ({h.gave_up}); its result stays on the host"
                                    if h.unreachable else f"gave up on {h.name}: {h.gave_up}")}
            record: AgentRecord = {"benchmark": str(agent["benchmark"]), "host": h.name, "failure": failure,
                                   "result": None}
            self.run_dir.write_agent(record["benchmark"], int(agent["agent_num"]), record, lines)
            view = self.view
            if view is not None and self.stream:
                self._to_view({"phase": self._phase_of(record["benchmark"])},
                              partial(view.agent_state, (record["benchmark"], int(agent["agent_num"])), "failed",
                                      failure["error"]))

    def _phase_of(self, benchmark: str) -> int | None:
        return next((k for k, names in enumerate(self.phases) if benchmark in names), None)

    def _fetch_logs(self, h: HostFollow) -> None:
        """Each server node's logs on this host (fabfile.runs.observe), once its run has ended."""
        for node in (n for n in self.nodes if n.host == h.name):
            for log in (LOG, START_LOG):
                try:
                    # gzip'd on the host; raw (no gzip there) it is at most the log's last bytes
                    data = hostrun.exec_with_stdin(self.fleet[h.name], log_command(f"{node.dir}/{log}"), b"",
                                                   self.host_timeout, limit=LOG_KEEP_BYTES + (1 << 20))
                    keep_log(self.run_dir, h.name, f"{node.port}-{log}.gz", data)
                except (RemoteError, OSError, EOFError, HostDataError) as exc:
                    self.echo(f"warning: {h.name}: no server log {node.port}-{log}: {exc}")
