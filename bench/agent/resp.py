"""RESP2: encode commands, and read replies two ways.

The hot path never builds reply objects: ``scan`` only finds where each reply ends, counts
them, and picks out error replies (``-...``), because a benchmark needs "how many succeeded
and which failed", not the values. ``parse`` builds real values and is used only for control
commands (CLUSTER SLOTS), where speed does not matter.
"""

from __future__ import annotations

from typing import Any, Union

Arg = Union[bytes, str, int]

# Reply type bytes, compared as ints because indexing bytes gives ints.
_SIMPLE = 43  # '+'
_ERROR = 45  # '-'
_INTEGER = 58  # ':'
_BULK = 36  # '$'
_ARRAY = 42  # '*'

ASKING = b"*1\r\n$6\r\nASKING\r\n"


class ProtocolError(Exception):
    """The server sent something that is not RESP2."""


class Incomplete(Exception):
    """``parse`` ran out of bytes in the middle of a reply."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``) returned as a value by ``parse``."""


def _arg(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, int):
        return b"%d" % a
    return a.encode()


def encode(*args: Arg) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def bulk(value: bytes) -> bytes:
    """One pre-encoded bulk string, for workloads that splice a fixed value into every op."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _skip(buf: bytes, pos: int) -> int:
    """The offset just past the one reply starting at ``pos``, or -1 if it is incomplete."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return -1
    t = buf[pos]
    if t == _BULK:
        n = int(buf[pos + 1:nl])
        end = nl + 2 if n < 0 else nl + 4 + n
        return end if end <= len(buf) else -1
    if t == _ARRAY:
        n = int(buf[pos + 1:nl])
        p = nl + 2
        for _ in range(max(n, 0)):
            p = _skip(buf, p)
            if p < 0:
                return -1
        return p
    if t in (_SIMPLE, _ERROR, _INTEGER):
        return nl + 2
    raise ProtocolError(f"unexpected reply type byte {t!r} at offset {pos}")


def scan(buf: bytes, pos: int, want: int) -> tuple[int, int, list[tuple[int, bytes]] | None, int]:
    """Skip up to ``want`` complete replies in ``buf`` starting at ``pos``.

    Returns ``(pos, count, errors, need)``: the offset after the last complete reply, how many
    were complete, ``[(index, message)]`` for error replies among them (``None`` if none; the
    index counts from this call's first reply), and, when a bulk reply was cut short, the
    buffer length needed to complete it (else 0) so the caller can buffer a large value
    without rescanning it on every read.
    """
    count = 0
    errors: list[tuple[int, bytes]] | None = None
    end = len(buf)
    find = buf.find
    while count < want and pos < end:
        t = buf[pos]
        nl = find(b"\r\n", pos)
        if nl < 0:
            break
        if t == _SIMPLE or t == _INTEGER:
            pos = nl + 2
        elif t == _BULK:
            n = int(buf[pos + 1:nl])
            nxt = nl + 2 if n < 0 else nl + 4 + n
            if nxt > end:
                return pos, count, errors, nxt
            pos = nxt
        elif t == _ERROR:
            if errors is None:
                errors = []
            errors.append((count, buf[pos + 1:nl]))
            pos = nl + 2
        elif t == _ARRAY:
            nxt = _skip(buf, pos)
            if nxt < 0:
                break
            pos = nxt
        else:
            raise ProtocolError(f"unexpected reply type byte {t!r} at offset {pos}")
        count += 1
    return pos, count, errors, 0


def parse(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """One reply as a value (bytes, int, None, list, or ``ReplyError``) and the next offset.

    Raises ``Incomplete`` if ``buf`` ends inside the reply.
    """
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        raise Incomplete()
    t = buf[pos]
    head = buf[pos + 1:nl]
    if t == _SIMPLE:
        return head, nl + 2
    if t == _ERROR:
        return ReplyError(head.decode("utf-8", "replace")), nl + 2
    if t == _INTEGER:
        return int(head), nl + 2
    if t == _BULK:
        n = int(head)
        if n < 0:
            return None, nl + 2
        end = nl + 2 + n
        if end + 2 > len(buf):
            raise Incomplete()
        return buf[nl + 2:end], end + 2
    if t == _ARRAY:
        n = int(head)
        if n < 0:
            return None, nl + 2
        items = []
        p = nl + 2
        for _ in range(n):
            item, p = parse(buf, p)
            items.append(item)
        return items, p
    raise ProtocolError(f"unexpected reply type byte {t!r} at offset {pos}")
