"""A repetition's label: benchmark ``name`` run ``repeat = N`` times is N benchmarks of the
plan, ``name#1`` .. ``name#N``. The label travels in every agent job, names its directory on the
hosts (bench.wire.hostrun) and is folded back into one benchmark by the merge (bench.report.merge)."""

from __future__ import annotations

import re

REPEAT_MARK = "#"
_LABEL = re.compile(r"(?P<name>.+)" + re.escape(REPEAT_MARK) + r"(?P<k>[1-9][0-9]*)\Z")


def repetition_label(name: str, repetition: int) -> str:
    """The label of repetition ``repetition`` (1-based) of benchmark ``name``: ``name#k``."""
    return f"{name}{REPEAT_MARK}{repetition}"


def split_label(label: str) -> tuple[str, int | None]:
    """``"import#2"`` -> ``("import", 2)``; a plain name -> ``(name, None)``."""
    match = _LABEL.match(label)
    if match is None:
        return label, None
    return match.group("name"), int(match.group("k"))
