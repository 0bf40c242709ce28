"""The one seam between fleetbench and its hosts: what it asks of a host, and that over SSH.

Everything that acts on a host (servers/, ship/, runs/, stages/) takes a :class:`Host` and asks
it for three things: run a command and get its exit status and output (``run``); run one with
bytes on its stdin and at most so many bytes of output back (``run_input``: plans and polls);
start one to stream into and read lines from (``start``: a push's ``cat``, a relay hop).
:class:`SshHost` is the one implementation, over a paramiko channel of an open connection:
every channel loop of fleetbench is here. Unit tests hand the same code a fake host.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko
from fabric import Connection

from fabfile.remote.streams import ByteTail, HostDataError, mib
from fabfile.remote.transport import output_event

#: Longest wait between looks at a quiet channel: a safety net, output, EOF and close wake the reader.
POLL_S = 0.5
#: After a command's stdout has ended: how long its exit status may take (run_input).
EXIT_STATUS_S = 10.0
#: What run_input keeps of a command's stderr (its end): only a tail of it is ever shown.
STDERR_TAIL_BYTES = 1 << 16
READ_BYTES = 1 << 16


@dataclass(frozen=True)
class Output:
    """What a command left: its exit status (-1: none came, the connection was lost) and output."""

    exited: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class TimedOut(Exception):
    """``Host.run``'s command did not end within its timeout; ``output`` is what it had said."""

    def __init__(self, command: str, timeout: float | None, output: Output):
        self.command = command
        self.timeout = timeout
        self.output = output
        super().__init__(f"`{command[:80]}` did not end within {timeout} s")


class HostLost(OSError):
    """The host cannot be asked: not connected, the connection failed, or it stopped answering."""


class Process(Protocol):
    """A command started on a host, its stdin open to us (``Host.start``). ``send`` raises
    OSError (or EOFError) when the command stopped reading or the connection went."""

    #: True once its stdout has ended.
    ended: bool

    def send(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def read_line(self, timeout: float) -> bytes | None:
        """Its next line of stdout (without the newline); None when none came in ``timeout``
        seconds or stdout ended first (``ended`` says which, ``unread`` holds a partial line)."""
        ...

    @property
    def unread(self) -> bytes: ...

    def exit_status(self, wait: bool = True) -> int | None:
        """Its exit status (-1: the connection was lost); None when ``wait`` is False and it has not exited."""
        ...

    def stderr(self) -> bytes:
        """What it has written to stderr so far and not yet taken."""
        ...

    def connected(self) -> bool:
        """Whether the connection it runs over is still up."""
        ...

    def close(self) -> None: ...


class Host(Protocol):
    """A host fleetbench acts on. Commands are shell lines, every argument already quoted."""

    @property
    def name(self) -> str:
        """How messages name the host: the destination the user gave."""
        ...

    def run(self, command: str, *, timeout: float | None = None) -> Output:
        """Run ``command`` without stdin; raises TimedOut after ``timeout`` seconds."""
        ...

    def run_input(self, command: str, data: bytes, *, timeout: float, limit: int) -> Output:
        """Run ``command`` with ``data`` on its stdin. Its stdout beyond ``limit`` bytes is
        refused (HostDataError: a host cannot fill our memory); HostLost when the host does not
        answer for ``timeout`` seconds, or the connection is not open or fails."""
        ...

    def start(self, command: str) -> Process:
        """Start ``command``, to stream into and read from."""
        ...


def with_path(c: Connection, command: str) -> str:
    """``command`` with the host's bundled python first on its PATH, when it has one."""
    bin_dir = getattr(c, "fleetbench_path", "")
    return f"PATH={shlex.quote(bin_dir)}:\"$PATH\"; export PATH; {command}" if bin_dir else command


def host_name(c: Connection) -> str:
    """How a connection's host is named in messages: the destination the user gave."""
    return getattr(c, "fleetbench_name", None) or c.original_host


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def drain(channel: paramiko.Channel, *, deadline: float | None = None, idle: float | None = None,
          limit: int | None = None, err_limit: int | None = None, what: str = "") -> tuple[bytes, bytes, bool]:
    """Read an exec'd channel's stdout and stderr as they come (in this thread, woken by one
    event) until its stdout ends (True) or ``deadline`` passes (False). TimeoutError when
    nothing came for ``idle`` seconds; HostDataError past ``limit`` bytes of stdout (``what``
    names the command); only the last ``err_limit`` bytes of stderr are kept."""
    out = bytearray()
    err = ByteTail(err_limit if err_limit is not None else 1 << 62)
    arrived = output_event(channel)
    last = time.monotonic()
    while True:
        ended = channel.eof_received or channel.closed  # before draining: data precedes EOF
        while channel.recv_ready():
            out += channel.recv(READ_BYTES)
            last = time.monotonic()
            if limit is not None and len(out) > limit:
                raise HostDataError(f"{what} sent more than {mib(limit)}; refused")
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(READ_BYTES))
            last = time.monotonic()
        if ended:
            return bytes(out), err.kept(), True
        now = time.monotonic()
        waits = [POLL_S]
        if deadline is not None:
            if now >= deadline:
                return bytes(out), err.kept(), False
            waits.append(deadline - now)
        if idle is not None:
            if now - last >= idle:
                raise TimeoutError(f"nothing came for {idle:g} s")
            waits.append(idle - (now - last))
        arrived.wait(min(waits))


def exec_output(c: Connection, command: str, timeout: float | None = None) -> tuple[Output, bool]:
    """Run ``command`` (as it is) on a new channel of ``c``'s open transport, no stdin: its
    output and exit status (-1 if the connection is lost), and whether it ended in ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    channel = c.transport.open_session(timeout=c.connect_timeout)
    try:
        channel.exec_command(command)
        channel.shutdown_write()
        out, err, _ = drain(channel, deadline=deadline)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        finished = channel.status_event.wait(left)
    finally:
        channel.close()
    return Output(channel.exit_status, out, err), finished


class ChannelProcess:
    """A command on a paramiko channel of an open connection (:meth:`SshHost.start`)."""

    def __init__(self, c: Connection, command: str):
        self._connection = c
        self.channel = c.transport.open_session()
        self.channel.exec_command(with_path(c, command))  # the host's bundled python, if any
        self._buffer = b""
        self.ended = False

    def send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except paramiko.SSHException as exc:  # the transport went: the Process contract says OSError
            raise HostLost(_why(exc)) from None

    def close_stdin(self) -> None:
        self.channel.shutdown_write()

    def read_line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    return None
                self.channel.settimeout(left)
                try:
                    chunk = self.channel.recv(READ_BYTES)
                except TimeoutError:
                    continue
                if not chunk:
                    self.ended = True
                    return None
                self._buffer += chunk
        finally:
            self.channel.settimeout(None)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    @property
    def unread(self) -> bytes:
        return self._buffer

    def exit_status(self, wait: bool = True) -> int | None:
        if not wait and not self.channel.exit_status_ready():
            return None
        return self.channel.recv_exit_status()

    def stderr(self) -> bytes:
        err = bytearray()
        while self.channel.recv_stderr_ready():
            err += self.channel.recv_stderr(READ_BYTES)
        return bytes(err)

    def connected(self) -> bool:
        transport = self._connection.transport
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.channel.close()


class SshHost:
    """A :class:`Host` over an SSH connection (a fleet's, host-key checked: fabfile.remote.ssh)."""

    def __init__(self, c: Connection):
        self.connection = c

    @property
    def name(self) -> str:
        return host_name(self.connection)

    def __repr__(self) -> str:
        return f"SshHost({self.name!r})"

    def run(self, command: str, *, timeout: float | None = None) -> Output:
        c = self.connection
        if not c.is_connected:  # as Fabric's run: a connection not yet open is opened
            c.open()
        output, finished = exec_output(c, with_path(c, command), timeout)
        if not finished:
            raise TimedOut(command, timeout, output)
        return output

    def run_input(self, command: str, data: bytes, *, timeout: float, limit: int) -> Output:
        transport: Any = self.connection.transport
        if transport is None or not transport.is_active():
            raise HostLost("not connected")  # the caller decides when to reconnect
        try:
            channel = transport.open_session(timeout=timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostLost(_why(exc)) from None
        channel.settimeout(timeout)  # every send waits at most this long too
        try:
            channel.exec_command(with_path(self.connection, command))
            channel.sendall(data)
            channel.shutdown_write()
            out, err, _ = drain(channel, idle=timeout, limit=limit, err_limit=STDERR_TAIL_BYTES,
                                what=f"{self.name}: `{command[:80]}`")
            if not channel.status_event.wait(EXIT_STATUS_S):  # stdout closed, yet no exit status
                raise HostLost(f"no exit status {EXIT_STATUS_S:g} s after its output ended")
            status = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:  # socket.timeout included
            raise HostLost(_why(exc)) from None
        finally:
            channel.close()
        return Output(status, out, err)

    def start(self, command: str) -> Process:
        return ChannelProcess(self.connection, command)
