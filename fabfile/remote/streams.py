"""Bounded readers of what hosts send: a host can send any amount, the controller keeps a little.

:class:`ByteTail` keeps the last bytes of a stream (an agent's stderr, its stdout, a download),
:class:`LineCutter` splits a stream into lines for showing, each cut at a length.
:func:`gunzip` inflates at most a given size. Every caller says what it does past a bound.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from fabfile.errors import FleetbenchError


class HostDataError(FleetbenchError):
    """Data from a host that is larger than the controller accepts, or not what it claims to be."""


def mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


class ByteTail:
    """The last ``limit`` bytes of a stream, and how many bytes came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()
        self._cut = 0  # bytes dropped from the front of _data so far

    def feed(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > self.limit + self._slack:  # trim now and then: each byte moves a few times
            excess = len(self._data) - self.limit
            del self._data[:excess]
            self._cut += excess

    def skip(self, n: int) -> None:
        """``n`` bytes of the stream that never came here (the host sent only what followed them):
        what was kept is older than the gap, so it is dropped too."""
        self._cut += len(self._data) + n
        self._data = bytearray()

    @property
    def _slack(self) -> int:
        return max(self.limit // 4, 1 << 16)

    @property
    def dropped(self) -> int:
        return self._cut + max(0, len(self._data) - self.limit)

    @property
    def total(self) -> int:
        return self._cut + len(self._data)

    def kept(self) -> bytes:
        return bytes(self._data[-self.limit:]) if self.limit else b""

    def lines_from_end(self) -> Iterator[bytes]:
        """The kept lines, last first, without splitting them all; not the first kept line when it
        began before what is kept."""
        base = max(0, len(self._data) - self.limit)
        end = len(self._data)
        while True:
            newline = self._data.rfind(b"\n", base, end)
            if newline < 0:
                if not self.dropped:
                    yield bytes(self._data[base:end])
                return
            yield bytes(self._data[newline + 1:end])
            end = newline

    def text(self, what: str = "bytes") -> str:
        """The kept bytes as text, said to be a tail when something was dropped."""
        kept = self.kept().decode(errors="replace")
        if not self.dropped:
            return kept
        return f"[... the first {self.dropped} {what} were dropped; the last {mib(self.limit)} follow]\n" + kept


class LineCutter:
    """Splits a stream into lines for showing; a line longer than ``max_line`` bytes is cut there
    (the rest of it is counted, not kept), so no line costs more than ``max_line``."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._line = bytearray()
        self._over = 0  # bytes of the current line past max_line

    def feed(self, chunk: bytes) -> list[str]:
        out: list[str] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            self._add(chunk[start:] if end < 0 else chunk[start:end])
            if end < 0:
                return out
            out.append(self._finish())
            start = end + 1

    def flush(self) -> list[str]:
        """The last line, if the stream ended without a newline."""
        return [self._finish()] if self._line or self._over else []

    def _add(self, piece: bytes) -> None:
        room = self.max_line - len(self._line)
        self._line += piece[:max(room, 0)]
        self._over += max(len(piece) - room, 0)

    def _finish(self) -> str:
        line = self._line.decode(errors="replace").rstrip()
        if self._over:
            line += f" [... {self._over} more bytes of this line not shown]"
        self._line = bytearray()
        self._over = 0
        return line


def gunzip(data: bytes, limit: int, what: str) -> bytes:
    """``data`` (gzip) inflated, refusing to produce more than ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HostDataError(f"{what}: not valid gzip ({exc})") from None
    if len(out) > limit:
        raise HostDataError(f"{what}: inflates to more than {mib(limit)}; refused")
    return out
