"""The validation framework the spawn file is checked with: key paths, typed values, and one
error holding every problem found.

A :class:`Table` wraps one table of decoded data at a key path (``benchmark[0].params``): it
reports unknown keys up front (with a did-you-mean), then hands out checked values. A value
with a problem is reported to the shared :class:`Problems` and comes back as :data:`BAD`, so a
section can go on checking its other keys and report everything at once; an absent key comes
back as the default given, or :data:`MISSING`. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bench.errors import FleetbenchError

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SpecError(FleetbenchError):
    """Everything wrong with a spawn file; ``str()`` is the problems, one per line."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SpecError, (self.problems,), {"source": self.source})


class Problems:
    """Every problem found so far, each ``"<key.path>: <message>"``, in the order found."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: What a :class:`Table` returns for an absent key given no default.
MISSING: Any = _Missing()
#: A value that was present but had a problem (already reported).
BAD: Any = object()


def suggest(word: str, options: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def key_text(key: Any) -> str:
    """A key as it goes into a key path: bare when TOML would write it bare, else quoted
    (so a key holding a newline or a dot cannot garble or fake a path)."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return json.dumps(key) if isinstance(key, str) else repr(key)


class Table:
    """One table of the spawn data: reports unknown keys up front, then hands out values."""

    def __init__(self, data: Mapping[Any, Any], path: str, allowed: Sequence[str], problems: Problems,
                 what: str = "key") -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.misspelt: set[str] = set()  # known keys that an unknown key probably meant
        for key in data:
            if key not in allowed:
                shown = key_text(key)
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                self.misspelt.update(close)
                hint = f"; did you mean {close[0]!r}?" if close else f" (expected one of: {', '.join(allowed)})"
                problems.add(self.at(shown), f"unknown {what}{hint}")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def problem(self, key: str, message: str) -> Any:
        self.problems.add(self.at(key), message)
        return BAD

    def missing(self, key: str, message: str) -> Any:
        """Report a missing key, unless an unknown key already reported was probably it."""
        if key not in self.misspelt:
            self.problems.add(self.at(key), message)
        return BAD

    def table(self, key: str, allowed: Sequence[str], *, required: bool = False,
              hint: str = "") -> Table | None:
        value = self.raw(key)
        if value is MISSING:
            if required:
                self.missing(key, "missing" + (f"; {hint}" if hint else ""))
            return None
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a table, got {describe(value)}")
            return None
        return Table(value, self.at(key), allowed, self.problems)

    def integer(self, key: str, default: Any = MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not is_int(value):
            return self.problem(key, f"expected an integer, got {describe(value)}")
        return self.bounded(key, value, minimum, maximum)

    def number(self, key: str, default: Any = MISSING, *, minimum: float | None = None,
               above: float | None = None) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        number = as_float(value)
        if number is None:
            return self.problem(key, f"expected a number, got {describe(value)}")
        if above is not None and not number > above:
            return self.problem(key, f"must be > {above:g}, got {show_number(value)}")
        return self.bounded(key, number, minimum, None)

    def duration(self, key: str, default: Any = MISSING, *, positive: bool = False) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        seconds = duration_seconds(value)
        if seconds is None:
            return self.problem(key, f'expected a duration such as "500ms", "30s", "2m", "1h" or a number '
                                     f"of seconds, got {describe(value)}")
        if seconds < 0 or (positive and seconds == 0):
            return self.problem(key, f"must be {'positive' if positive else 'zero or more'}, got {describe(value)}")
        return seconds

    def text(self, key: str, default: Any = MISSING, *, pattern: re.Pattern[str] | None = None,
             pattern_help: str = "") -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            return self.problem(key, f"expected a string, got {describe(value)}")
        if not value.strip():
            return self.problem(key, "must not be empty")
        if pattern is not None and not pattern.match(value):
            return self.problem(key, f"{value!r} is not valid ({pattern_help})")
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = MISSING) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            return self.problem(key, f"expected a string, got {describe(value)}")
        if value not in choices:
            return self.problem(key, not_one_of(value, choices))
        return value

    def str_list(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return default
        if not isinstance(value, (list, tuple)):
            return self.problem(key, f"expected an array of strings, got {describe(value)}")
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problems.add(f"{self.at(key)}[{i}]", f"expected a non-empty string, got {describe(item)}")
                ok = False
        return tuple(value) if ok else BAD

    def bounded(self, key: str, value: Any, minimum: float | None, maximum: float | None) -> Any:
        """``value`` if within the bounds given, else the problem reported and BAD."""
        if minimum is not None and value < minimum:
            return self.problem(key, f"must be >= {show_number(minimum)}, got {show_number(value)}")
        if maximum is not None and value > maximum:
            return self.problem(key, f"must be <= {show_number(maximum)}, got {show_number(value)}")
        return value


def is_int(value: Any) -> bool:
    """An integer, not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_float(value: Any) -> float | None:
    """A finite float from an int or float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def show_number(value: Any) -> str:
    if is_int(value):
        return str(value) if value.bit_length() <= 64 else "a huge integer"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def describe(value: Any) -> str:
    """A value as a problem names it: in the file's terms (null, true, a table), kept short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if is_int(value) or isinstance(value, float):
        return show_number(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def not_one_of(value: Any, choices: Sequence[Any]) -> str:
    shown = value if isinstance(value, str) else str(value)
    return (f"{value!r} is not one of {', '.join(str(c) for c in choices)}"
            + suggest(shown, [str(c) for c in choices]))


def duration_seconds(value: Any) -> float | None:
    """``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or a number, in seconds; None if not a duration."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return seconds if math.isfinite(seconds) else None
    return as_float(value)
