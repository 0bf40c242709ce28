"""Per-second progress records: what an agent measured in each wall-clock second, as it goes.

While measuring, an agent closes each second of its own clock (epoch seconds, whole seconds)
into one record::

    {"at": 1732400007, "t": 3, "ops": 51234, "errors": 0, "hist": <bench.wire.hist.encode text>}

``at`` is the wall-clock second the record covers (``[at, at + 1)`` on the agent's host clock),
``t`` the same second counted from the first one of the agent's measured window, ``hist`` the
latency histogram of that second's ops (absent when it had none), and in open loop ``late`` the
number of that second's ops sent late (absent from older agents: not known, rather than 0). The
same records end up in
the result's ``timeseries``, so the controller can merge them exactly, per second, across agents.

They leave the agent two ways, so that a controller attached to the agent and one following a
detached run read the same thing: one line each on stderr (``MARK`` + JSON, told apart from
log lines by the mark), and one JSON line each in a file beside the agent's result file
(:func:`records_path`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MARK = "fleetbench-second "


def to_line(record: Mapping[str, object]) -> str:
    """The stderr line of one record (no newline)."""
    return MARK + json.dumps(record, sort_keys=True, separators=(",", ":"))


def parse_line(line: str) -> dict[str, Any] | None:
    """The record on a stderr line, or None for any other line (a log line, a torn line)."""
    if not line.startswith(MARK):
        return None
    try:
        record = json.loads(line[len(MARK):])
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("at"), int):
        return None
    return record


def records_path(result_path: str) -> str:
    """Where the per-second records of the agent writing ``result_path`` go (one JSON per line)."""
    stem = result_path[:-5] if result_path.endswith(".json") else result_path
    return stem + ".seconds.ndjson"
