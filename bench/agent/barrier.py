"""Phases in order across hosts, with no controller: a barrier on one agent host.

Every host run connects to the coordinator (a small TCP server inside one host run, on that
host's fleet address), proves it holds the run's token (handed over in the 0600 plan file, never
on a command line), and measures its clock offset to the coordinator NTP-style. At each step k
each host says ``arrive k``; once every live participant has, the coordinator answers all of
them ``start k at T`` (T in the coordinator's clock, a little in the future), and each host
converts T to its own clock. The host run takes two steps per phase (every host done with the
previous phase; every host's agents ready) and one more at the end, so the hosts finish together.

A participant that says nothing for ``host_timeout_s`` (a frozen or lost host) is dropped, so
it stalls nobody; if it comes back it is a participant again. A host that cannot reach the
coordinator for ``host_timeout_s`` goes on alone (its phases start when it is ready).

Wire: one JSON object per line. ``hello {token, host}`` -> ``welcome {t}``; ``time {id}`` ->
``time {id, t}``; ``beat``; ``arrive {phase}`` -> later ``start {phase, at, dropped}``;
``leave``. Both sides send ``beat`` every ``BEAT_S``.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import time
from typing import Any, Callable

BEAT_S = 1.0
TIME_SAMPLES = 8
MAX_LINE = 1 << 16


class BarrierState:
    """The coordinator's bookkeeping, without sockets (so it can be tested with a fake clock)."""

    def __init__(self, participants: list[str], lead_s: float, host_timeout_s: float, now: float) -> None:
        self.lead_s = lead_s
        self.host_timeout_s = host_timeout_s
        self.last_seen = {name: now for name in participants}  # the start counts as a sign of life
        self.arrived: dict[str, int] = {}
        self.left: set[str] = set()
        self.dropped: dict[str, str] = {}
        self.releases: dict[int, float] = {}  # phase -> start time (coordinator clock)

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

    def poll(self, now: float) -> list[int]:
        """Drop the silent, release every phase all live participants have reached; the newly
        released phases."""
        for host, seen in self.last_seen.items():
            if host not in self.dropped and host not in self.left and now - seen > self.host_timeout_s:
                self.dropped[host] = f"silent for {now - seen:.0f} s"
        released = []
        waiting = sorted({p for h, p in self.arrived.items() if h not in self.left} - set(self.releases))
        for phase in waiting:
            if all(self.arrived.get(h, -1) >= phase for h in self.live()):
                self.releases[phase] = now + self.lead_s
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


class Coordinator:
    """The barrier server: ``start()`` binds and serves in threads; ``close()`` stops it."""

    def __init__(self, bind: str, port: int, token: str, participants: list[str], *, lead_s: float,
                 host_timeout_s: float, clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.clock = clock
        self.state = BarrierState(participants, lead_s, host_timeout_s, clock())
        self.lock = threading.Lock()
        self.waiting: dict[str, tuple[_Lines, int]] = {}  # host -> (its connection, phase it waits for)
        self.server = socket.create_server((bind, port), reuse_port=False)
        self.server.settimeout(0.5)
        self.closed = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.getsockname()[:2]

    def start(self) -> Coordinator:
        for target in (self._accept, self._tick):
            threading.Thread(target=target, daemon=True).start()
        return self

    def close(self) -> None:
        self.closed.set()
        self.server.close()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"dropped": dict(self.state.dropped), "left": sorted(self.state.left),
                    "releases": {str(k): v for k, v in self.state.releases.items()}}

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                sock, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(self.state.host_timeout_s + BEAT_S)
        conn = _Lines(sock)
        try:
            hello = conn.recv()
            host = str((hello or {}).get("host", ""))
            token = str((hello or {}).get("token", ""))
            if not hmac.compare_digest(token.encode(), self.token.encode()) or host not in self.state.last_seen:
                conn.send({"op": "refused", "error": "bad token or unknown host"})
                return
            conn.send({"op": "welcome", "t": self.clock()})
            while not self.closed.is_set():
                message = conn.recv()
                if message is None:
                    return
                self._handle(host, conn, message)
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def _handle(self, host: str, conn: _Lines, message: dict[str, Any]) -> None:
        op = message.get("op")
        now = self.clock()
        if op == "time":
            conn.send({"op": "time", "id": message.get("id"), "t": now})
        with self.lock:
            if op == "arrive":
                phase = int(message["phase"])
                self.state.arrive(host, phase, now)
                self.waiting[host] = (conn, phase)
            elif op == "leave":
                self.state.leave(host)
                self.waiting.pop(host, None)
            else:
                self.state.seen(host, now)
        self._release()

    def _tick(self) -> None:
        while not self.closed.wait(BEAT_S / 4):
            self._release()
            with self.lock:
                conns = {id(c): c for c, _ in self.waiting.values()}
            for c in conns.values():
                try:
                    c.send({"op": "beat"})
                except OSError:
                    pass

    def _release(self) -> None:
        with self.lock:
            self.state.poll(self.clock())
            due = [(host, conn, phase) for host, (conn, phase) in self.waiting.items() if phase in self.state.releases]
            for host, _, _ in due:
                del self.waiting[host]
            dropped = sorted(self.state.dropped)
        for _host, conn, phase in due:
            try:
                conn.send({"op": "start", "phase": phase, "at": self.state.releases[phase], "dropped": dropped})
            except OSError:
                pass  # it reconnects and arrives again: the release is kept for it


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

    def arrive(self, phase: int, stopping: Callable[[], bool] = lambda: False) -> tuple[float, list[str]]:
        """Block until phase ``phase`` may start; (its start in this host's clock, dropped hosts).
        Without a coordinator: (now, [])."""
        while self.alone is None and not stopping():
            if self.conn is None and not self.connect():
                break
            assert self.conn is not None
            try:
                self.conn.send({"op": "arrive", "phase": phase})
                message = self._wait_start(self.conn, phase, stopping)
                if message is not None:
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
