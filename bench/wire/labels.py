"""Labels of the runs of one benchmark. A repetition's label: benchmark ``name`` run ``repeat = N``
times is N benchmarks of the plan, ``name#1`` .. ``name#N``. The label travels in every agent
job, names its directory on the hosts (bench.wire.hostrun) and is folded back into one benchmark
by the merge (bench.report.merge).
A capacity search's steps are labelled alike, ``name#s1`` .. (:func:`step_label`), folded by
bench.report.search."""

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


#: A capacity search's step k is ``name#sk``: '#' is never in a benchmark's name, and a step is
#: never a repetition (a search does not repeat), so neither label can be taken for the other.
STEP_MARK = "#s"
_STEP = re.compile(r"(?P<name>.+)" + re.escape(STEP_MARK) + r"(?P<k>[1-9][0-9]*)\Z")


def step_label(name: str, step: int) -> str:
    """The label of step ``step`` (1-based) of benchmark ``name``'s capacity search: ``name#sk``."""
    return f"{name}{STEP_MARK}{step}"


def split_step(label: str) -> tuple[str, int | None]:
    """``"max-set#s3"`` -> ``("max-set", 3)``; anything else -> ``(label, None)``."""
    match = _STEP.match(label)
    if match is None:
        return label, None
    return match.group("name"), int(match.group("k"))
