"""Pushing a file into ``cat`` on a host over a raw SSH channel.

Invoke's in_stream reads one byte per loop and decodes as UTF-8 (binary files arrive
corrupted), so the bytes go straight down a paramiko channel of the Fabric connection in
1 MiB chunks. The file lands under a temporary name, its sha256 is checked on the host, then
it is made executable and renamed atomically: a half-pushed file is never run.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Set

from fabric import Connection

from fabfile.remote import RemoteError, cmd, label, run

CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]  # (host, bytes sent, total)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def remote_sha256(c: Connection, path: str) -> Optional[str]:
    out = run(c, f"if test -f {cmd(path)}; then sha256sum {cmd(path)}; fi").strip()
    return out.split()[0] if out else None


def install_command(tmp: str, final: str, sha256: str) -> str:
    """Verify ``tmp`` on the host, then chmod and rename it to ``final``; else delete it."""
    return (
        f"got=$(sha256sum {cmd(tmp)} | cut -d' ' -f1) && "
        f'if [ "$got" = {cmd(sha256)} ]; then chmod 700 {cmd(tmp)} && mv -f {cmd(tmp)} {cmd(final)}; '
        f'else rm -f {cmd(tmp)}; echo "sha256 mismatch: expected {sha256}, got $got" >&2; exit 3; fi'
    )


def stream(c: Connection, local: Path, remote_tmp: str, progress: Optional[Progress] = None) -> None:
    """Send ``local`` into ``cat > remote_tmp`` (created 0600) over one channel."""
    total = local.stat().st_size
    channel = c.transport.open_session()
    try:
        command = f"umask 077 && cat > {cmd(remote_tmp)}"
        channel.exec_command(command)
        sent = 0
        with open(local, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                channel.sendall(block)
                sent += len(block)
                if progress:
                    progress(label(c), sent, total)
        channel.shutdown_write()
        status = channel.recv_exit_status()
        if status != 0:
            err = channel.recv_stderr(65536).decode(errors="replace")
            raise RemoteError(label(c), command, err, status)
    finally:
        channel.close()


def push(c: Connection, local: Path, remote: str, sha256: str, progress: Optional[Progress] = None) -> bool:
    """Put ``local`` at ``remote`` (relative to the login's home). False if it was already there."""
    if remote_sha256(c, remote) == sha256:
        return False
    tmp = f"{remote}.part-{secrets.token_hex(4)}"
    try:
        stream(c, local, tmp, progress)
        run(c, install_command(tmp, remote, sha256))
    except BaseException:
        # Best effort: a cut-off push leaves no partial file behind (it was never executable).
        try:
            run(c, cmd("rm", "-f", tmp), check=False, timeout=10)
        except Exception:
            pass
        raise
    return True


class ProgressPrinter:
    """Shows a line per host every ``interval`` seconds, only for transfers that take that long."""

    def __init__(self, name: str, interval: float = 1.0, echo: Callable[[str], None] = print):
        self.name = name
        self.interval = interval
        self.echo = echo
        self._last: Dict[str, float] = {}  # host -> when it was last shown (or started)
        self._shown: Set[str] = set()

    def __call__(self, host: str, sent: int, total: int) -> None:
        now = time.monotonic()
        last = self._last.setdefault(host, now)
        done = sent >= total
        if (done and host in self._shown) or now - last >= self.interval:
            self._last[host] = now
            self._shown.add(host)
            self.echo(f"  push {self.name} -> {host}: {sent / 1e6:.1f}/{total / 1e6:.1f} MB")
