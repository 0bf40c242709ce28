"""The SSH transport under every fleet connection: paramiko's, made cheaper per host.

A fleet holds one paramiko Transport (and its thread) per host; what that thread costs is
controller CPU multiplied by the fleet. The changes here keep paramiko's protocol, ciphers
and host-key checks as they are and remove work that did nothing for us: a socket that woke
the thread ten times a second while idle, a timer thread per connection to time the
handshake, two system calls per received packet, and debug text built for no logger.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import paramiko
from paramiko.packet import Packetizer

_Transport: Any = paramiko.Transport  # its private parts are not in the type stubs
_Packetizer: Any = Packetizer

#: How long the transport thread's socket read waits before it looks around (paramiko: 0.1 s).
#: It looks for: a close (ours wakes it at once, see FleetSocket.close), a keepalive due (see
#: FleetTransport.set_keepalive), the handshake's deadline (15 s) and a rekey to start while
#: only sending (after 512 MiB). None needs a tenth of a second, and each wakeup cost ~0.1 ms
#: of CPU on a loaded machine: 0.8 ms per host per second of an idle fleet.
IDLE_WAKE_S = 5.0
#: What one socket read takes from the kernel at most: a burst of packets in one system call.
RECV_BYTES = 1 << 14
#: Session channels (commands) open at once on one connection. OpenSSH's stock MaxSessions is
#: 10 and sshd refuses the 11th ("administratively prohibited"): past this, a new one waits
#: for one to close (up to SESSION_WAIT_S).
MAX_SESSIONS = 8
SESSION_WAIT_S = 120.0
#: sshd frees a closed session only after the packets it read with our close: a new session
#: asked for in the same breath may still be refused for it. Asked again after these pauses.
SESSION_RETRIES_S = (0.05, 0.1, 0.2, 0.4, 0.8)


class FleetSocket:
    """A connected TCP socket for one SSH session.

    * Reads are buffered: paramiko reads each packet in two pieces (its first block, then the
      rest), each a ``recv``; here one ``recv`` takes what has arrived and serves both.
    * Every read from the kernel is acknowledged at once (TCP_QUICKACK, Linux). sshd leaves
      Nagle's algorithm on for sessions without a terminal, so after one small packet it holds
      back the next until the first is acknowledged, and Linux delays that acknowledgement by
      up to 40 ms: the first channel after login waited 40 ms on every connection.
    * ``close`` shuts the socket down first, which wakes the transport thread blocked in
      ``recv`` (a bare close does not on Linux): it ends at once, not at its next timeout.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._quickack = hasattr(socket, "TCP_QUICKACK") and sock.family in (socket.AF_INET, socket.AF_INET6)
        # One buffer per connection, filled in place: a fresh 64 KiB bytes per read, sliced per
        # packet, grew a 128-host fleet's peak RSS by a quarter (malloc arenas kept the pieces).
        self._buffer = bytearray(RECV_BYTES)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0  # what of _buffer is still to be served

    def recv(self, size: int) -> bytes:
        if self._start == self._end:
            if size >= RECV_BYTES:  # a large packet's rest: straight from the socket
                data = self._sock.recv(size)
                self._ack()
                return data
            self._end = self._sock.recv_into(self._buffer)  # 0 at EOF: b"" is served below
            self._start = 0
            self._ack()
        take = min(size, self._end - self._start)
        data = bytes(self._view[self._start:self._start + take])
        self._start += take
        return data

    def _ack(self) -> None:
        if self._quickack:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected (any more): nothing to wake
            pass
        self._sock.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's own
        return getattr(self._sock, name)


def dial(host: str, port: int, timeout: float) -> FleetSocket:
    """The TCP connection for an SSH session, with Nagle off: SSH does its own batching, and
    our small writes (a channel request, then its command) must not wait for an ack."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return FleetSocket(sock)


class DeadlinePacketizer(_Packetizer):
    """paramiko's Packetizer, timing the handshake with a deadline instead of a timer thread.

    paramiko starts a ``threading.Timer`` per connection for its handshake timeout and cancels
    it after every message once the handshake is done: a thread per host, and a lock and a
    condition per message. The deadline is checked where paramiko checks its timer (each time
    a read returns or times out), so a handshake times out as before."""

    _handshake_deadline: float | None = None
    _handshake_done = False

    def start_handshake(self, timeout: float) -> None:
        if self._handshake_deadline is None:
            self._handshake_deadline = time.monotonic() + float(timeout)

    def handshake_timed_out(self) -> bool:
        deadline = self._handshake_deadline
        return deadline is not None and not self._handshake_done and time.monotonic() > deadline

    def complete_handshake(self) -> None:
        if self._handshake_deadline is not None:
            self._handshake_done = True


class FleetTransport(_Transport):
    """paramiko's Transport, asking for AES-GCM first, waking only when there is work, timing
    its handshake without a thread, and skipping unlogged debug text.

    With a CTR cipher paramiko computes each packet's HMAC with Python's hmac module and
    checks each received one in a pure-Python constant-time loop; GCM authenticates inside
    the cipher (OpenSSH >= 6.2 has it; a server without it negotiates CTR as before). sshd
    sends a debug message on login when authorized_keys has options, which paramiko
    escapes byte by byte in Python only to log it at DEBUG level.
    """

    _preferred_ciphers = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                          *(c for c in _Transport._preferred_ciphers if "gcm" not in c))
    _active_check_timeout = IDLE_WAKE_S

    def __init__(self, sock: Any, *args: Any, **kwargs: Any):
        kwargs.setdefault("packetizer_class", DeadlinePacketizer)
        super().__init__(sock, *args, **kwargs)
        self._sessions = threading.BoundedSemaphore(MAX_SESSIONS)
        self._session_ids: set[int] = set()
        self._sessions_lock = threading.Lock()  # not paramiko's: it may hold that one when a channel closes

    def open_channel(self, kind: str, *args: Any, **kwargs: Any) -> paramiko.Channel:
        """paramiko's, holding at most MAX_SESSIONS session channels open at once."""
        if kind != "session":
            return super().open_channel(kind, *args, **kwargs)
        if not self._sessions.acquire(timeout=SESSION_WAIT_S):
            raise paramiko.SSHException(f"{MAX_SESSIONS} sessions stayed open on this connection for "
                                        f"{SESSION_WAIT_S:.0f} s (sshd allows 10 by default)")
        try:
            for pause in (*SESSION_RETRIES_S, None):
                try:
                    channel = super().open_channel(kind, *args, **kwargs)
                    break
                except paramiko.ChannelException:  # refused: sessions of ours it has not freed yet?
                    if pause is None or not self.is_active():
                        raise
                time.sleep(pause)
        except BaseException:
            self._sessions.release()
            raise
        with self._sessions_lock:
            self._session_ids.add(channel.get_id())
        if channel.closed:  # closed before it was counted: its _unlink_channel has been and gone
            self._uncount(channel.get_id())
        return channel

    def _unlink_channel(self, chanid: int) -> None:
        super()._unlink_channel(chanid)  # once per channel, when it closes
        self._uncount(chanid)

    def _uncount(self, chanid: int) -> None:
        with self._sessions_lock:
            counted = chanid in self._session_ids
            self._session_ids.discard(chanid)
        if counted:
            self._sessions.release()

    def set_keepalive(self, interval: int) -> None:
        """paramiko's keepalive every ``interval`` seconds, looked for often enough to be sent
        at most half an interval late (paramiko only looks when its socket read times out)."""
        super().set_keepalive(interval)
        self.sock.settimeout(wake_interval(interval))

    def _parse_debug(self, m: paramiko.Message) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            super()._parse_debug(m)


def wake_interval(keepalive_s: float) -> float:
    """How long the transport's socket read may wait with keepalives every ``keepalive_s``
    seconds (0: none): half of that, between 0.5 s and IDLE_WAKE_S."""
    return IDLE_WAKE_S if keepalive_s <= 0 else min(IDLE_WAKE_S, max(0.5, keepalive_s / 2))


def output_event(channel: paramiko.Channel) -> threading.Event:
    """An event set when ``channel`` has output to read (on either stream) or has reached
    EOF or closed, including when its connection is lost; cleared only by a read that empties
    a buffer. So a reader that drains both streams before it waits misses nothing, and sleeps
    while the command is quiet. (``select`` on a channel makes an OS pipe per channel, which
    paramiko writes and reads on every packet; a poll loop wakes whether or not there is work.)
    """
    arrived = threading.Event()
    channel.in_buffer.set_event(arrived)
    channel.in_stderr_buffer.set_event(arrived)
    return arrived
