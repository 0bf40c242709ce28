"""Phases in order across hosts, with no controller: a barrier on one agent host.

Every host run connects to the coordinator (a small TCP server inside one host run, on that
host's fleet address), proves it holds the run's token (handed over in the 0600 plan file, never
on a command line), and measures its clock offset to the coordinator NTP-style. At each step k
each host says ``arrive k``; once every live participant has, the coordinator answers all of
them ``start k at T`` (T in the coordinator's clock, a little in the future), and each host
converts T to its own clock. The host run takes two steps per phase (every host done with the
previous phase; every host's agents ready) and one more at the end, so the hosts finish together.

A participant that says nothing for ``host_timeout_s`` (a frozen or lost host) is dropped, so
it stalls nobody; if it comes back it is a participant again. Silence is measured on a monotonic
clock: a step of the coordinator's wall clock drops nobody and releases no phase. A host that cannot reach the
coordinator for ``host_timeout_s`` goes on alone (its phases start when it is ready).

A capacity search (bench.wire.search) decides here too: each host's arrival after a search step
carries what its agents measured (``search``), and the coordinator's ``decide`` (given by the
host run it lives in) turns every host's part into the decision the release hands to all of them
(``decision``: the next rate, or the end). A host that comes back after the release gets the same.

Wire: one JSON object per line. ``hello {token, host}`` -> ``welcome {t}``; ``time {id}`` ->
``time {id, t}``; ``beat``; ``arrive {phase, search?}`` -> later ``start {phase, at, dropped,
decision?}``; ``leave``. Both sides send ``beat`` every ``BEAT_S``. A connection speaks only for the host
its hello named, and only until that host says hello again on another connection. Strangers are
bounded (``Coordinator``): nobody on the fleet network can end the barrier or use up the host
run's file descriptors by connecting.
"""

from __future__ import annotations

import hmac
import json
import selectors
import socket
import threading
import time
from typing import Any, Callable

BEAT_S = 1.0
TIME_SAMPLES = 8
MAX_LINE = 1 << 20  # an arrival may carry a search step's summary (its histogram encoded)
MAX_HELLO = 4096  # bytes a stranger may send before its hello is complete
HELLO_WAIT_S = 5.0  # seconds a connection may take to say hello
MAX_PENDING = 64  # connections waiting to say hello at once (every host of a big fleet connects at the start)
MAX_OUTBOX = 1 << 16  # bytes queued for a participant that reads nothing, before it is cut off
ACCEPTS_PER_TURN = 64  # a flood of connections is taken in turns with the participants' messages
ACCEPT_BACKOFF_S = 0.1  # a failed accept (EMFILE, ENFILE, ECONNABORTED, ...) pauses accepting this long


class BarrierState:
    """The coordinator's bookkeeping, without sockets (so it can be tested with a fake clock).

    Two clocks: ``now`` is monotonic (who is silent, and for how long: a wall-clock step must
    never make every host look silent and release a phase), ``wall`` is the coordinator's wall
    clock, the one the start times it hands out are in (the hosts convert them with their offset).
    """

    def __init__(self, participants: list[str], lead_s: float, host_timeout_s: float, now: float) -> None:
        self.lead_s = lead_s
        self.host_timeout_s = host_timeout_s
        self.last_seen = {name: now for name in participants}  # the start counts as a sign of life
        self.arrived: dict[str, int] = {}
        self.left: set[str] = set()
        self.dropped: dict[str, str] = {}
        self.releases: dict[int, float] = {}  # phase -> start time (coordinator's wall clock)

    def seen(self, host: str, now: float) -> None:
        if host in self.last_seen:
            self.last_seen[host] = now
            self.dropped.pop(host, None)  # back: a participant again

    def arrive(self, host: str, phase: int, now: float) -> None:
        self.seen(host, now)
        if host in self.last_seen:
            self.arrived[host] = max(phase, self.arrived.get(host, -1))

    def leave(self, host: str) -> None:
        self.left.add(host)

    def live(self) -> list[str]:
        return [h for h in self.last_seen if h not in self.left and h not in self.dropped]

    def poll(self, now: float, wall: float) -> list[int]:
        """Drop the silent (``now``: monotonic), release every phase all live participants have
        reached, to start at ``wall + lead_s``; the newly released phases."""
        for host, seen in self.last_seen.items():
            if host not in self.dropped and host not in self.left and now - seen > self.host_timeout_s:
                self.dropped[host] = f"silent for {now - seen:.0f} s"
        released = []
        waiting = sorted({p for h, p in self.arrived.items() if h not in self.left} - set(self.releases))
        for phase in waiting:
            if all(self.arrived.get(h, -1) >= phase for h in self.live()):
                self.releases[phase] = wall + self.lead_s
                released.append(phase)
        return released


def best_offset(samples: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(offset, rtt) from (sent, their time, received) samples: the one with the shortest round
    trip, assuming their clock was read half way. offset = their clock - ours."""
    sent, theirs, received = min(samples, key=lambda s: s[2] - s[0])
    return theirs - (sent + received) / 2.0, received - sent


class _Lines:
    """A socket as JSON lines, thread-safe for writing. Its own buffer, so a read timeout
    (``socket.timeout``) leaves it usable, unlike a ``makefile`` reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.lock:
            self.sock.sendall(data)

    def recv(self) -> dict[str, Any] | None:
        """The next message; None when the peer closed. Raises socket.timeout, OSError, ValueError."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ValueError("line too long")
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not an object")
        return message

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Peer:
    """One connection to the coordinator: a stranger until its hello names a participant."""

    def __init__(self, sock: socket.socket, address: str, since: float) -> None:
        self.sock = sock
        self.address = address
        self.since = since  # monotonic: when it connected (its hello is due within HELLO_WAIT_S)
        self.host: str | None = None
        self.inbox = b""
        self.outbox = bytearray()


class Coordinator:
    """The barrier server: ``start()`` binds and serves in one thread; ``close()`` stops it.

    A stranger on the fleet network cannot take it down, nor starve the host run it lives in of
    file descriptors: every connection is read side by side in one thread (a silent one holds up
    nobody), at most ``MAX_PENDING`` wait to say hello at once (the oldest makes room) and each
    gets ``HELLO_WAIT_S`` to do it, a participant has one connection (a new hello replaces the
    old), and a failed accept (out of descriptors, a connection aborted before it was taken) is
    waited out, never the end of the barrier. A connection speaks only for the host it said
    hello as: a message naming another host closes it.
    """

    def __init__(self, bind: str, port: int, token: str, participants: list[str], *, lead_s: float,
                 host_timeout_s: float, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 decide: Callable[[int, dict[str, Any]], Any] | None = None) -> None:
        self.token = token
        # step, {host: what it sent with its arrival} -> the decision its release carries
        self.decide = decide
        self.parts: dict[int, dict[str, Any]] = {}  # step -> host -> its arrival's ``search``
        self.decisions: dict[int, Any] = {}
        self.clock = clock  # wall: the times handed to the hosts
        self.monotonic = monotonic  # liveness: who is silent, hello deadlines, beats
        self.state = BarrierState(participants, lead_s, host_timeout_s, monotonic())
        self.lock = threading.Lock()
        self.waiting: dict[str, int] = {}  # host -> the phase it waits for
        self.members: dict[str, _Peer] = {}  # host -> its one connection
        self.pending: dict[socket.socket, _Peer] = {}  # connections that have not said hello yet
        self.refused = 0  # connections closed without a welcome
        self.accept_error: str | None = None  # the last failed accept (waited out)
        self.server = socket.create_server((bind, port), reuse_port=False)
        self.server.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ, None)
        self.accepting_again: float | None = None  # monotonic: accept paused until then
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.getsockname()[:2]

    def start(self) -> Coordinator:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.closed.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5 * BEAT_S)
        if self.thread is None or not self.thread.is_alive():
            self._close_all()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"dropped": dict(self.state.dropped), "left": sorted(self.state.left),
                    "releases": {str(k): v for k, v in self.state.releases.items()}}

    # -- the loop --

    def _loop(self) -> None:
        next_beat = self.monotonic()
        try:
            while not self.closed.is_set():
                now = self.monotonic()
                due = [next_beat] + [p.since + HELLO_WAIT_S for p in self.pending.values()]
                if self.accepting_again is not None:
                    due.append(self.accepting_again)
                events = self.selector.select(max(0.0, min(min(due) - now, BEAT_S / 4)))
                with self.lock:
                    server_ready = False
                    for key, mask in events:
                        if key.data is None:
                            server_ready = True
                        elif key.data.sock.fileno() >= 0:  # not dropped earlier in this turn
                            self._service(key.data, mask)
                    now = self.monotonic()
                    if server_ready:
                        self._accept_some(now)
                    self._expire(now)
                    if now >= next_beat:
                        next_beat = now + BEAT_S / 4
                        for host in self.waiting:
                            if host in self.members:
                                self._send(self.members[host], {"op": "beat"})
                    self._release()
        finally:
            self._close_all()

    def _close_all(self) -> None:
        for peer in [*self.pending.values(), *self.members.values()]:
            self._close(peer)
        try:
            self.selector.close()
        except (OSError, ValueError):
            pass
        self.server.close()

    def _accept_some(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, peer_address = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, aborted, ...: wait it out, then go on
                self.accept_error = f"{exc.strerror or exc} (errno {exc.errno})"
                self.selector.unregister(self.server)
                self.accepting_again = now + ACCEPT_BACKOFF_S
                return
            sock.setblocking(False)
            peer = _Peer(sock, str(peer_address[0]), now)
            self.pending[sock] = peer
            self.selector.register(sock, selectors.EVENT_READ, peer)
            self._service(peer, selectors.EVENT_READ)  # its hello may be here already
            if len(self.pending) > MAX_PENDING:  # the oldest waiter makes room
                self._refuse(min(self.pending.values(), key=lambda p: p.since))

    def _expire(self, now: float) -> None:
        for peer in [p for p in self.pending.values() if now - p.since > HELLO_WAIT_S]:
            self._refuse(peer)
        if self.accepting_again is not None and now >= self.accepting_again:
            self.accepting_again = None
            self.selector.register(self.server, selectors.EVENT_READ, None)

    def _service(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if not mask & selectors.EVENT_READ or peer.sock.fileno() < 0:
            return
        try:
            chunk = peer.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(peer)
            return
        peer.inbox += chunk
        while b"\n" in peer.inbox and peer.sock.fileno() >= 0:
            line, peer.inbox = peer.inbox.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self._drop(peer)
                return
            self._handle(peer, message)
        if len(peer.inbox) > (MAX_LINE if peer.host is not None else MAX_HELLO):
            self._drop(peer)

    def _handle(self, peer: _Peer, message: dict[str, Any]) -> None:
        now = self.monotonic()
        if peer.host is None:
            self._hello(peer, message, now)
            return
        host = peer.host
        if message.get("host", host) != host:  # a connection speaks for its own host only
            self._close(peer)
            return
        op = message.get("op")
        if op == "time":
            self._send(peer, {"op": "time", "id": message.get("id"), "t": self.clock()})
        if op == "arrive":
            try:
                phase = int(message["phase"])
            except (KeyError, TypeError, ValueError):
                self._close(peer)
                return
            if isinstance(message.get("search"), dict) and phase not in self.state.releases:
                self.parts.setdefault(phase, {})[host] = message["search"]
            self.state.arrive(host, phase, now)
            self.waiting[host] = phase
        elif op == "leave":
            self.state.leave(host)
            self.waiting.pop(host, None)
        else:
            self.state.seen(host, now)

    def _hello(self, peer: _Peer, message: dict[str, Any], now: float) -> None:
        host = str(message.get("host", ""))
        token = str(message.get("token", ""))
        if (message.get("op") != "hello" or not hmac.compare_digest(token.encode(), self.token.encode())
                or host not in self.state.last_seen):
            try:
                peer.sock.send(b'{"op": "refused", "error": "bad token or unknown host"}\n')
            except OSError:
                pass
            self._refuse(peer)
            return
        del self.pending[peer.sock]
        old = self.members.get(host)
        if old is not None:  # it reconnected: the old connection no longer speaks for it
            self._close(old)
        peer.host = host
        self.members[host] = peer
        self.state.seen(host, now)
        self._send(peer, {"op": "welcome", "t": self.clock()})

    def _send(self, peer: _Peer, message: dict[str, Any]) -> None:
        if peer.sock.fileno() < 0:
            return
        peer.outbox += (json.dumps(message) + "\n").encode()
        if len(peer.outbox) > MAX_OUTBOX:  # it reads nothing: a reconnect will start it afresh
            self._close(peer)
            return
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        try:
            sent = peer.sock.send(peer.outbox) if peer.outbox else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(peer)
            return
        del peer.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.outbox else 0)
        if self.selector.get_key(peer.sock).events != events:
            self.selector.modify(peer.sock, events, peer)

    def _drop(self, peer: _Peer) -> None:
        """A connection that broke the protocol: a stranger is refused, a participant reconnects."""
        if peer.host is None:
            self._refuse(peer)
        else:
            self._close(peer)

    def _refuse(self, peer: _Peer) -> None:
        self.refused += 1
        self._close(peer)

    def _close(self, peer: _Peer) -> None:
        if peer.sock.fileno() < 0:
            return
        self.pending.pop(peer.sock, None)
        if peer.host is not None and self.members.get(peer.host) is peer:
            del self.members[peer.host]
        try:
            self.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        peer.sock.close()

    def _release(self) -> None:
        for phase in self.state.poll(self.monotonic(), self.clock()):
            parts = self.parts.pop(phase, None)
            if parts is not None and self.decide is not None:
                try:
                    self.decisions[phase] = self.decide(phase, parts)
                except Exception as exc:  # a bad part must not end the barrier: the search ends, saying why
                    self.decisions[phase] = {"next": None, "error": f"{type(exc).__name__}: {exc}"}
        dropped = sorted(self.state.dropped)
        for host, phase in [(h, p) for h, p in self.waiting.items() if p in self.state.releases]:
            del self.waiting[host]
            peer = self.members.get(host)
            if peer is not None:  # else it reconnects and arrives again: the release is kept for it
                message = {"op": "start", "phase": phase, "at": self.state.releases[phase], "dropped": dropped}
                if phase in self.decisions:
                    message["decision"] = self.decisions[phase]
                self._send(peer, message)


class Participant:
    """One host run's side. ``connect()`` (hello + clock offset), then ``arrive(k)`` per phase."""

    def __init__(self, address: str, port: int, token: str, host: str, *, host_timeout_s: float,
                 log: Callable[[str], None] = lambda m: None, clock: Callable[[], float] = time.time) -> None:
        self.target = (address, port)
        self.token = token
        self.host = host
        self.host_timeout_s = host_timeout_s
        self.log = log
        self.clock = clock
        self.offset_s: float | None = None
        self.rtt_s: float | None = None
        self.alone: str | None = None  # why this host goes on without the barrier
        self.decision: Any = None  # what the last release decided (a search step's), if anything
        self.conn: _Lines | None = None
        self._beating = threading.Event()
        self._beater: threading.Thread | None = None

    def _beat(self) -> None:
        """A sign of life every BEAT_S, also while this host's agents run (no other traffic then)."""
        while not self._beating.wait(BEAT_S):
            conn = self.conn
            if conn is not None:
                try:
                    conn.send({"op": "beat"})
                except OSError:
                    pass

    def connect(self, give_up_after: float | None = None) -> bool:
        """Connect (retrying for ``give_up_after`` seconds, default host_timeout_s); measure the
        clock offset the first time. False (and ``alone`` set) if the coordinator never answered."""
        deadline = time.monotonic() + (self.host_timeout_s if give_up_after is None else give_up_after)
        last = "no attempt"
        while True:
            try:
                self._open()
                if self._beater is None:
                    self._beater = threading.Thread(target=self._beat, daemon=True)
                    self._beater.start()
                return True
            except (OSError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                self.alone = f"cannot reach the coordinator at {self.target[0]}:{self.target[1]}: {last}"
                self.log(f"barrier: {self.alone}; this host goes on alone")
                return False
            time.sleep(0.5)

    def _open(self) -> None:
        sock = socket.create_connection(self.target, timeout=5)
        sock.settimeout(self.host_timeout_s)
        conn = _Lines(sock)
        try:
            conn.send({"op": "hello", "token": self.token, "host": self.host})
            reply = conn.recv()
            if not reply or reply.get("op") != "welcome":
                raise ValueError(f"refused by the coordinator: {(reply or {}).get('error', 'closed')}")
            if self.offset_s is None:
                samples = []
                for i in range(TIME_SAMPLES):
                    sent = self.clock()
                    conn.send({"op": "time", "id": i})
                    answer = self._next(conn, "time")
                    samples.append((sent, float(answer["t"]), self.clock()))
                self.offset_s, self.rtt_s = best_offset(samples)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _next(self, conn: _Lines, op: str) -> dict[str, Any]:
        while True:
            message = conn.recv()
            if message is None:
                raise ConnectionError("the coordinator closed the connection")
            if message.get("op") == op:
                return message

    def to_local(self, coordinator_time: float) -> float:
        return coordinator_time - (self.offset_s or 0.0)

    def arrive(self, phase: int, stopping: Callable[[], bool] = lambda: False,
               search: dict[str, Any] | None = None) -> tuple[float, list[str]]:
        """Block until phase ``phase`` may start; (its start in this host's clock, dropped hosts).
        Without a coordinator: (now, []). ``search``: what this host measured in a search step,
        for the coordinator's decision (then in :attr:`decision`; None without one)."""
        self.decision = None
        while self.alone is None and not stopping():
            if self.conn is None and not self.connect():
                break
            assert self.conn is not None
            try:
                self.conn.send({"op": "arrive", "phase": phase, **({"search": search} if search is not None else {})})
                message = self._wait_start(self.conn, phase, stopping)
                if message is not None:
                    self.decision = message.get("decision")
                    return self.to_local(float(message["at"])), list(message.get("dropped", []))
            except (OSError, ValueError) as exc:
                self.log(f"barrier: lost the coordinator ({str(exc) or type(exc).__name__}); reconnecting")
                self.conn.close()
                self.conn = None
        return self.clock(), []

    def _wait_start(self, conn: _Lines, phase: int, stopping: Callable[[], bool]) -> dict[str, Any] | None:
        """Beats every BEAT_S while it waits; a coordinator silent for host_timeout_s is lost."""
        conn.sock.settimeout(BEAT_S)
        last_heard = time.monotonic()
        try:
            while not stopping():
                try:
                    message = conn.recv()
                except socket.timeout:
                    message = {"op": "quiet"}
                if message is None:
                    raise ConnectionError("the coordinator closed the connection")
                if message.get("op") == "start" and int(message.get("phase", -1)) == phase:
                    return message
                if message.get("op") != "quiet":
                    last_heard = time.monotonic()
                elif time.monotonic() - last_heard > self.host_timeout_s:
                    raise ConnectionError(f"no word from the coordinator for {self.host_timeout_s:g} s")
            return None
        finally:
            conn.sock.settimeout(self.host_timeout_s)

    def leave(self) -> None:
        self._beating.set()
        if self.conn is not None:
            try:
                self.conn.send({"op": "leave"})
            except OSError:
                pass
            self.conn.close()
            self.conn = None
