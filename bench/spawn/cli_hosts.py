"""Hosts given on the command line (``--servers a,b,c --agents d,e``) instead of ``[hosts]``.

As pi had them (``pi spawn --pilosa-hosts=... --agent-hosts=...``): the same spawn file runs on
another fleet without editing it. Both lists replace the file's ``[hosts]`` table (inventory
and all); one alone replaces that list of the file's. They are then checked like the file's
own (ssh destination syntax, distinct servers, as many as the server kind needs), and their
problems are named by the option (``--servers[1]: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OPTIONS = {"servers": "--servers", "agents": "--agents"}


def split(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None (not given) stays None. Empty entries are kept
    (as ``""``) for the destination check to name them."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",")]


def replace(data: Any, servers: Sequence[str] | None, agents: Sequence[str] | None) -> tuple[Any, list[str]]:
    """``data`` with its hosts replaced, and the problems a replacement cannot solve."""
    given = {k: list(v) for k, v in (("servers", servers), ("agents", agents)) if v is not None}
    if not given or not isinstance(data, Mapping):
        return data, []
    if len(given) == 2:
        return {**data, "hosts": given}, []
    hosts = data.get("hosts")
    (key, value), = given.items()
    other = "agents" if key == "servers" else "servers"
    if not isinstance(hosts, Mapping) or other not in hosts:
        source = next((k for k in ("inventory", "inventory_command") if isinstance(hosts, Mapping) and k in hosts),
                      None)
        why = f"the spawn file's hosts come from {source}" if source else f"the spawn file lists no {other}"
        return data, [f"{OPTIONS[key]}: {why}; give {OPTIONS[other]} as well"]
    return {**data, "hosts": {**hosts, key: value}}, []


def rename(problems: Sequence[str], servers: Sequence[str] | None, agents: Sequence[str] | None) -> list[str]:
    """Problems of replaced lists named by their option instead of ``hosts.<list>``."""
    out = []
    for line in problems:
        for key, value in (("servers", servers), ("agents", agents)):
            prefix = f"hosts.{key}"
            if value is not None and (line.startswith(prefix + ":") or line.startswith(prefix + "[")):
                line = OPTIONS[key] + line[len(prefix):]
        out.append(line)
    return out
