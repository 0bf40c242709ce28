"""Screening agent results before they are merged: one bad result is its own agent's failure.

A result comes from a host, and a host may be broken or hostile: a result can be garbage, a
histogram bomb, or a lie about who sent it. :func:`bench.report.merge.merge_benchmark` refuses
a set of results when any one is wrong, which is right for the merge and wrong for a collect,
which must keep every other agent. :func:`screen` checks each result alone, against what the
controller knows rather than what the result claims (the agent number of the file it was kept
in, the run, the benchmark's planned workload and agent count), by merging it on its own, so
the checks are the merge's own and cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from bench.report import merge
from bench.wire.result import AgentResult, Failure

#: An error message quotes what it refused; a host's text is cut to this many characters.
MAX_WHY_CHARS = 300


def screen(name: str, results: Sequence[tuple[int, str | None, Any]], *, run_id: str, workload: str | None,
           agents: int | None) -> tuple[list[AgentResult], list[Failure]]:
    """Split ``(agent_num, host, result)`` into the results that merge and the failures of the rest.

    ``workload`` and ``agents`` are the plan's; when unknown (a benchmark the spawn file no
    longer has), the first result that passes sets them for the others.
    """
    good: list[AgentResult] = []
    refused: list[Failure] = []
    for agent_num, host, result in results:
        why = why_refused(name, agent_num, result, run_id=run_id, workload=workload, agents=agents)
        if why is not None:
            claimed = result.get("host") if isinstance(result, Mapping) else None
            refused.append({"agent_num": agent_num, "host": host or _short(claimed), "stderr_tail": "",
                            "error": f"its result was refused: {why}"})
            continue
        good.append(cast(AgentResult, result))
        workload = workload if workload is not None else result["workload"]
        agents = agents if agents is not None else result["agents"]
    return good, refused


def why_refused(name: str, agent_num: int, result: Any, *, run_id: str, workload: str | None,
                agents: int | None) -> str | None:
    """Why ``result`` cannot be agent ``agent_num``'s result of benchmark ``name``, or None."""
    if not isinstance(result, Mapping):
        return f"not an object but {type(result).__name__}"
    for key, expected in (("agent_num", agent_num), ("run_id", run_id)):
        claimed = result.get(key)
        if claimed != expected or isinstance(claimed, bool):
            return f"it says {key} {_short(repr(claimed))}, but it was agent {agent_num}'s of run {run_id}"
    try:
        merge.merge_benchmark(name, [cast(AgentResult, result)], [], workload=workload, agents=agents)
    except merge.ResultError as exc:
        return _short(str(exc))
    except Exception as exc:  # anything at all: the merge is pure, and the result may hold anything
        return _short(f"{type(exc).__name__}: {exc}")
    return None


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_WHY_CHARS else text[:MAX_WHY_CHARS] + f"... ({len(text)} characters)"
