"""Fake hosts for unit tests of what acts on hosts (fabfile.remote.host.Host), without a network.

A :class:`FakeHost` answers each command by the first of its rules whose pattern matches (the
rule added last is tried first, so a test overrides a default by adding one), records every
command with what came on its stdin, and fails on demand: a non-zero exit with a stderr, or a
lost host. A :class:`FakeFleet` is the real Fleet (its ``each``, its errors) over fake hosts.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fabfile.remote import addresses
from fabfile.remote.fleet import Fleet, Interpreter
from fabfile.remote.host import HostLost, Output
from fabfile.remote.ssh import ConnectError, SshSettings
from fabfile.remote.streams import HostDataError

#: What a rule answers: the output itself (stdout text or bytes, or an Output), a function of
#: (command, stdin) giving one, or an exception to raise.
Reply = str | bytes | Output | Callable[[str, bytes], "str | bytes | Output"] | BaseException


_order = itertools.count()


@dataclass
class Call:
    """One command a host was given: how (``run``, ``input`` or ``start``), its stdin, and
    ``seq``: when, among the commands of every fake host (what came first across hosts)."""

    kind: str
    command: str
    stdin: bytes = b""
    seq: int = field(default_factory=lambda: next(_order))


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    reply: Reply
    times: int | None  # None: for ever


class FakeProcess:
    """A started command: prints the reply's stdout lines, takes what is sent, then exits with
    the reply's status (its stderr on its stderr). Sent bytes are in ``received``."""

    def __init__(self, host: FakeHost, call: Call, output: Output):
        self._host = host
        self._call = call
        self._output = output
        self._lines = output.stdout.splitlines(keepends=True)
        self.received = bytearray()
        self.stdin_closed = False
        self.closed = False
        self.ended = False
        self.unread = b""

    def send(self, data: bytes) -> None:
        if self._host.lost:
            raise HostLost("the connection was lost")
        self.received += data
        self._call.stdin = bytes(self.received)

    def close_stdin(self) -> None:
        self.stdin_closed = True

    def read_line(self, timeout: float) -> bytes | None:
        if not self._lines:
            self.ended = True
            return None
        line = self._lines.pop(0)
        if not line.endswith(b"\n"):
            self.unread, self.ended = line, True
            return None
        return line[:-1]

    def exit_status(self, wait: bool = True) -> int | None:
        return -1 if self._host.lost else self._output.exited

    def stderr(self) -> bytes:
        return self._output.stderr

    def connected(self) -> bool:
        return not self._host.lost

    def close(self) -> None:
        self.closed = True


class FakeHost:
    """A scripted :class:`fabfile.remote.host.Host`. Unscripted commands succeed silently,
    unless ``strict`` (then they fail the test, naming the command)."""

    def __init__(self, name: str, *, strict: bool = False):
        self.name = name
        self.strict = strict
        self.calls: list[Call] = []
        self.processes: list[FakeProcess] = []
        self.lost = False  # every command from now on: HostLost
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeHost({self.name!r})"

    # -- scripting ---------------------------------------------------------------------------

    def on(self, pattern: str, reply: Reply = "", *, exited: int = 0, stderr: str = "",
           times: int | None = None) -> FakeHost:
        """Answer commands matching ``pattern`` (a regular expression, searched) with ``reply``;
        ``exited`` and ``stderr`` complete a reply given as text. ``times``: only that often."""
        if isinstance(reply, (str, bytes)):
            reply = Output(exited, reply.encode() if isinstance(reply, str) else reply, stderr.encode())
        with self._lock:
            self._rules.insert(0, _Rule(re.compile(pattern), reply, times))
        return self

    def fail(self, pattern: str, stderr: str = "failed", *, exited: int = 1, stdout: str = "",
             times: int | None = None) -> FakeHost:
        """Commands matching ``pattern`` exit with ``exited`` and ``stderr``."""
        return self.on(pattern, stdout, exited=exited, stderr=stderr, times=times)

    def lose(self, pattern: str, why: str = "the connection was lost") -> FakeHost:
        """Commands matching ``pattern`` find the host gone (HostLost)."""
        return self.on(pattern, HostLost(why))

    # -- what happened -----------------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        return [c.command for c in self.calls]

    def ran(self, pattern: str) -> list[Call]:
        """The calls whose command matches ``pattern``, in order."""
        found = re.compile(pattern)
        return [c for c in self.calls if found.search(c.command)]

    def index(self, pattern: str) -> int:
        """Where the first command matching ``pattern`` came among this host's commands (-1: never)."""
        found = re.compile(pattern)
        return next((i for i, c in enumerate(self.calls) if found.search(c.command)), -1)

    # -- the Host protocol -------------------------------------------------------------------

    def run(self, command: str, *, timeout: float | None = None) -> Output:
        return self._answer(Call("run", command))

    def run_input(self, command: str, data: bytes, *, timeout: float, limit: int) -> Output:
        output = self._answer(Call("input", command, data))
        if len(output.stdout) > limit:
            raise HostDataError(f"{self.name}: `{command[:80]}` sent more than {limit} bytes; refused")
        return output

    def start(self, command: str) -> FakeProcess:
        call = Call("start", command)
        process = FakeProcess(self, call, self._answer(call))
        with self._lock:
            self.processes.append(process)
        return process

    def _answer(self, call: Call) -> Output:
        with self._lock:
            self.calls.append(call)
            rule = next((r for r in self._rules if r.pattern.search(call.command)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
        if self.lost:
            raise HostLost("the connection was lost")
        if rule is None:
            assert not self.strict, f"{self.name}: unscripted command: {call.command[:300]}"
            return Output(0)
        reply = rule.reply
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(call.command, call.stdin)
        if isinstance(reply, (str, bytes)):
            return Output(0, reply.encode() if isinstance(reply, str) else reply)
        return reply


@dataclass
class Python:
    """What a fake host's preflight found: a python3 of this version."""

    version: str = "3.11.2"
    machine: str = "x86_64"

    def interpreter(self, host: str) -> Interpreter:
        return Interpreter("/usr/bin/python3", self.version, "cpython", self.machine, ["glibc", "2.36"],
                           f"cpython-{self.version.replace('.', '')[:3]}-{self.machine}-linux-gnu", host)


class FakeFleet(Fleet):
    """The real Fleet over fake hosts, already through its preflight (interpreters and addresses
    known). ``unreachable`` hosts fail to connect, naming themselves, as open_checked would."""

    def __init__(self, fakes: Mapping[str, FakeHost], python: Python | None = None, unreachable: Iterable[str] = ()):
        self.fakes = dict(fakes)
        self.settings = SshSettings()
        self.bundled = None
        self.private_overrides = {}
        self.names = list(self.fakes)
        self.connections = {}
        self.hosts = dict(self.fakes)
        self.interpreters = {name: (python or Python()).interpreter(name) for name in self.names}
        self.addresses = {name: addresses.HostAddresses(f"10.9.0.{i}", f"10.9.0.{i}", "ssh")
                          for i, name in enumerate(self.names, 1)}
        self.choices, self.needs_bundled, self.bundled_pythons = {}, {}, {}
        self._opened = True
        self.connected: list[str] = []
        self.closed = False
        self.unreachable = set(unreachable)

    def _open_host(self, name: str) -> None:
        if name in self.unreachable:
            raise ConnectError(name, f"cannot reach bench@{name}:22: Connection refused")
        self.connected.append(name)

    def reconnect(self, name: str, host_timeout: float) -> None:
        self._open_host(name)

    def drop(self, name: str) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def fake_fleet(*names: str, strict: bool = False, unreachable: Iterable[str] = ()) -> FakeFleet:
    """A fleet of a FakeHost per name."""
    return FakeFleet({name: FakeHost(name, strict=strict) for name in names}, unreachable=unreachable)


def spawn_file(tmp_path: Path, servers: Iterable[str], agents: Iterable[str], server: str = "",
               benchmarks: str = "") -> Path:
    """A spawn file for ``servers`` and ``agents`` (``server``: its [server] table's lines)."""
    path = tmp_path / "spawn.toml"
    path.write_text(
        'name = "fake"\n'
        f"[hosts]\nservers = {list(servers)!r}\nagents = {list(agents)!r}\n"
        + (f"[server]\n{server}\n" if server else "")
        + (benchmarks or '[[benchmark]]\nname = "set"\nworkload = "set"\nagents = 1\nduration = "1s"\n'))
    return path
