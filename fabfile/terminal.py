"""What reaches the user's terminal: text from hosts is shown, never obeyed.

Host names, agent stderr, server logs, remote error output and anything an agent put into its
result can hold escape sequences (an ESC can recolour, move the cursor, retitle the window,
rewrite what was printed before, or on some terminals answer back). :func:`printable` writes every
control character as a visible escape (``\\x1b``) instead; newlines and tabs stay.
"""

from __future__ import annotations

import sys
from typing import TextIO

#: C0 (but tab and newline), DEL, C1, and the bidirectional overrides that reorder what is shown.
_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A)] + list(range(0x7F, 0xA0))
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI}


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (tab, newline kept;
    a CRLF line end becomes a newline)."""
    return text.replace("\r\n", "\n").translate(_VISIBLE)


def say(message: object, file: TextIO | None = None) -> None:
    """Print ``message`` with host-controlled text made harmless."""
    print(printable(str(message)), file=file or sys.stdout, flush=True)
