"""Pushing a file into ``cat`` on a host over a raw SSH channel.

Invoke's in_stream reads one byte per loop and decodes as UTF-8 (binary files arrive
corrupted), so the bytes go straight into the started command (``Host.start``: a raw channel
of the host's SSH connection) in 1 MiB chunks. The file lands under a temporary name, its
sha256 is checked on the host, then it is made executable and renamed atomically: a
half-pushed file is never run. The check for a copy already in place, the transfer and the
install are one remote command.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fabfile.remote.host import Host, Process
from fabfile.remote.shell import RemoteError, cmd, run

CHUNK = 1 << 20
PART = ".part-"  # a file being pushed (+ "PID-TAG"): 0600, never executed, renamed only once verified

Progress = Callable[[str, int, int], None]  # (host, bytes sent, total)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def remote_digests(c: Host, paths: Sequence[str]) -> dict[str, str]:
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


def stale_temps_command(final: str) -> str:
    """Remove what pushes of ``final`` cut off with their host left (``final.part-PID-TAG``
    whose PID is gone, or older names without one); a push still at work is left alone."""
    prefix = cmd(final + PART)
    return (
        f'for f in {prefix}*; do w=${{f#{prefix}}}; w=${{w%%-*}}; '
        'case $w in ""|*[!0-9]*) ;; *) [ -d /proc/"$w" ] && continue;; esac; rm -f "$f"; done'
    )


def install_command(tmp: str, final: str, sha256: str) -> str:
    """Verify ``tmp`` on the host, then chmod and rename it to ``final``; else delete it."""
    return _install(cmd(tmp), final, sha256)


def _install(tmp: str, final: str, sha256: str) -> str:
    """install_command for ``tmp`` given as a shell word (``"$t"``)."""
    return (
        f"got=$(sha256sum {tmp} | cut -d' ' -f1) && "
        f'if [ "$got" = {cmd(sha256)} ]; then chmod 700 {tmp} && mv -f {tmp} {cmd(final)}'
        f" && {{ {stale_temps_command(final)}; }}; "
        f'else rm -f {tmp}; echo "sha256 mismatch: expected {sha256}, got $got" >&2; exit 3; fi'
    )


QUOTED_T = '"$t"'


def temp_name(final: str, tag: str) -> str:
    """The temp file of one push of ``final``, as a shell word: the pushing shell's pid ($$) in
    its name tells a concurrent push (another controller's) that its writer is alive."""
    return f'{cmd(final + PART)}"$$-"{cmd(tag)}'


def push_command(final: str, sha256: str, tag: str) -> str:
    """One command for a whole push: say ``have`` (and stop) if ``final`` is already right,
    else say ``send``, take the bytes into a temp file (0600), verify and install them."""
    return (
        f"umask 077; if test -f {cmd(final)} && "
        f'[ "$(sha256sum {cmd(final)} | cut -d" " -f1)" = {cmd(sha256)} ]; then echo have; exit 0; fi; '
        f't={temp_name(final, tag)}; '
        f'echo send; cat > "$t" || {{ rm -f "$t"; exit 1; }}; {_install(QUOTED_T, final, sha256)}'
    )


def send_file(process: Process, local: Path, host: str, progress: Progress | None = None) -> int:
    """Stream ``local`` into a started command's stdin, then close it; returns the bytes sent."""
    total = local.stat().st_size
    sent = 0
    with open(local, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            process.send(block)
            sent += len(block)
            if progress:
                progress(host, sent, total)
    process.close_stdin()
    return sent


def push(h: Host, local: Path, remote: str, sha256: str, progress: Progress | None = None,
         timeout: float = 60.0) -> bool:
    """Put ``local`` at ``remote`` (relative to the login's home). False if it was already there.

    One command (check, receive, verify, install): a push costs a single round trip more than
    its bytes. Whatever goes wrong, the host-side command removes its temporary file (a
    cut-off stream fails the sha256 check); a half-pushed file is never run.
    """
    tag = secrets.token_hex(4)
    command = push_command(remote, sha256, tag)
    process = h.start(command)
    try:
        line = process.read_line(timeout)  # the first line: have or send
        answer = (line if line is not None else process.unread.split(b"\n", 1)[0]).strip()
        if answer == b"have":
            _check_exit(h, process, command)
            return False
        if answer != b"send":
            _check_exit(h, process, command)
            raise RemoteError(h.name, command, f"unexpected answer {answer!r} before the transfer")
        shown = f"cat > ~/{remote}{PART}PID-{tag}"  # how the failing step is named: the script is long
        try:
            send_file(process, local, h.name, progress)
        except (OSError, EOFError) as exc:  # cat stopped reading, or the connection went
            _check_exit(h, process, shown)  # cat's own error (a full disk) says more than ours
            raise RemoteError(h.name, shown, str(exc)) from None
        _check_exit(h, process, shown)
    finally:
        process.close()
    return True


def _check_exit(h: Host, process: Process, command: str) -> None:
    status = process.exit_status()
    if status == -1 and not process.connected():  # no status: closed
        raise RemoteError(h.name, command, "the connection was lost")
    if status != 0:
        raise RemoteError(h.name, command, process.stderr().decode(errors="replace"), status)


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
