"""Pushing a file into ``cat`` on a host over a raw SSH channel.

Invoke's in_stream reads one byte per loop and decodes as UTF-8 (binary files arrive
corrupted), so the bytes go straight down a paramiko channel of the Fabric connection in
1 MiB chunks. The file lands under a temporary name, its sha256 is checked on the host, then
it is made executable and renamed atomically: a half-pushed file is never run. The check for
a copy already in place, the transfer and the install are one remote command.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fabric import Connection
from paramiko import Channel, SSHException

from fabfile.remote.shell import RemoteError, cmd, label, run

CHUNK = 1 << 20
PART = ".part-"  # a file being pushed: 0600, never executed, renamed only once verified

Progress = Callable[[str, int, int], None]  # (host, bytes sent, total)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def remote_digests(c: Connection, paths: Sequence[str]) -> dict[str, str]:
    """``{path: sha256}`` of those of ``paths`` that exist on the host, in one command."""
    if not paths:
        return {}
    out = run(c, " ".join(f"if test -f {cmd(p)}; then sha256sum {cmd(p)}; fi;" for p in paths) + " true")
    found: dict[str, str] = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            found[name] = digest
    return found


def install_command(tmp: str, final: str, sha256: str) -> str:
    """Verify ``tmp`` on the host, then chmod and rename it to ``final``; else delete it."""
    return (
        f"got=$(sha256sum {cmd(tmp)} | cut -d' ' -f1) && "
        f'if [ "$got" = {cmd(sha256)} ]; then chmod 700 {cmd(tmp)} && mv -f {cmd(tmp)} {cmd(final)}'
        f" && rm -f {cmd(final)}{PART}*; "  # what pushes cut off with their host (power loss) left
        f'else rm -f {cmd(tmp)}; echo "sha256 mismatch: expected {sha256}, got $got" >&2; exit 3; fi'
    )


def push_command(tmp: str, final: str, sha256: str) -> str:
    """One command for a whole push: say ``have`` (and stop) if ``final`` is already right,
    else say ``send``, take the bytes into ``tmp`` (0600), verify and install them."""
    return (
        f"umask 077; if test -f {cmd(final)} && "
        f'[ "$(sha256sum {cmd(final)} | cut -d" " -f1)" = {cmd(sha256)} ]; then echo have; exit 0; fi; '
        f"echo send; cat > {cmd(tmp)} || {{ rm -f {cmd(tmp)}; exit 1; }}; {install_command(tmp, final, sha256)}"
    )


def send_file(channel: Channel, local: Path, host: str, progress: Progress | None = None) -> int:
    """Stream ``local`` into an exec'd channel's stdin, then close it; returns the bytes sent."""
    total = local.stat().st_size
    sent = 0
    with open(local, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            channel.sendall(block)
            sent += len(block)
            if progress:
                progress(host, sent, total)
    channel.shutdown_write()
    return sent


def read_line(channel: Channel, timeout: float) -> bytes:
    """The first line a command prints on stdout (a push's ``have``/``send``)."""
    channel.settimeout(timeout)
    data = b""
    try:
        while b"\n" not in data:
            chunk = channel.recv(1024)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    finally:
        channel.settimeout(None)
    return data.split(b"\n", 1)[0].strip()


def push(c: Connection, local: Path, remote: str, sha256: str, progress: Progress | None = None,
         timeout: float = 60.0) -> bool:
    """Put ``local`` at ``remote`` (relative to the login's home). False if it was already there.

    One channel and one command (check, receive, verify, install): a push costs a single
    round trip more than its bytes. Whatever goes wrong, the host-side command removes its
    temporary file (a cut-off stream fails the sha256 check); a half-pushed file is never run.
    """
    tmp = f"{remote}{PART}{secrets.token_hex(4)}"
    command = push_command(tmp, remote, sha256)
    channel = c.transport.open_session()
    try:
        channel.exec_command(command)
        answer = read_line(channel, timeout)
        if answer == b"have":
            _check_exit(c, channel, command)
            return False
        if answer != b"send":
            _check_exit(c, channel, command)
            raise RemoteError(label(c), command, f"unexpected answer {answer!r} before the transfer")
        shown = f"cat > ~/{tmp}"  # how the failing step is named: the whole script is long
        try:
            send_file(channel, local, label(c), progress)
        except (OSError, EOFError, SSHException) as exc:  # cat stopped reading, or the connection went
            _check_exit(c, channel, shown)  # cat's own error (a full disk) says more than ours
            raise RemoteError(label(c), shown, str(exc)) from None
        _check_exit(c, channel, shown)
    finally:
        channel.close()
    return True


def _check_exit(c: Connection, channel: Channel, command: str) -> None:
    status = channel.recv_exit_status()
    if status == -1 and (c.transport is None or not c.transport.is_active()):  # no status: closed
        raise RemoteError(label(c), command, "the connection was lost")
    if status != 0:
        err = b""
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        raise RemoteError(label(c), command, err.decode(errors="replace"), status)


class ProgressPrinter:
    """Shows a line per host every ``interval`` seconds, only for transfers that take that long."""

    def __init__(self, name: str, interval: float = 1.0, echo: Callable[[str], None] = print):
        self.name = name
        self.interval = interval
        self.echo = echo
        self._last: dict[str, float] = {}  # host -> when it was last shown (or started)
        self._shown: set[str] = set()

    def __call__(self, host: str, sent: int, total: int) -> None:
        now = time.monotonic()
        last = self._last.setdefault(host, now)
        done = sent >= total
        if (done and host in self._shown) or now - last >= self.interval:
            self._last[host] = now
            self._shown.add(host)
            self.echo(f"  push {self.name} -> {host}: {sent / 1e6:.1f}/{total / 1e6:.1f} MB")
