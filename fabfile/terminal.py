"""What reaches the user's terminal: text from hosts is shown, never obeyed.

Host names, agent stderr, server logs, remote error output and anything an agent put into its
result can hold escape sequences (an ESC can recolour, move the cursor, retitle the window,
rewrite what was printed before, or on some terminals answer back). :func:`printable` writes every
control character as a visible escape (``\\x1b``) instead; newlines and tabs stay. It also masks
every secret the controller knows (:func:`hide`), wherever a host or an error echoes one.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

#: C0 (but tab and newline), DEL, C1, and the bidirectional overrides that reorder what is shown.
_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A)] + list(range(0x7F, 0xA0))
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI}


#: Values that must never be shown or written down (the redis password, the spawn file's
#: { env = ... } secrets), registered as soon as the controller knows them.
_HIDDEN: set[str] = set()
MASK = "***"


def hide(value: str) -> None:
    """From now on, ``value`` is shown as *** wherever it appears (values under 4 characters
    would mask ordinary text, and are too weak to be secrets worth the name)."""
    if value and len(value) >= 4:
        _HIDDEN.add(value)


def scrub(text: str) -> str:
    """``text`` with every hidden value masked."""
    for value in sorted(_HIDDEN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def scrub_data(data: Any) -> Any:
    """JSON-like ``data`` with every hidden value masked in every string (keys too)."""
    if not _HIDDEN:
        return data
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {scrub_data(k): scrub_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [scrub_data(v) for v in data]
    return data


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (tab, newline kept;
    a CRLF line end becomes a newline) and every hidden value masked."""
    return scrub(text.replace("\r\n", "\n").translate(_VISIBLE))


def say(message: object, file: TextIO | None = None) -> None:
    """Print ``message`` with host-controlled text made harmless."""
    print(printable(str(message)), file=file or sys.stdout, flush=True)
