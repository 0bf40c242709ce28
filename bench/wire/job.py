"""The two messages between controller and agent: the job it is given and the result it prints.

Both are plain JSON so that the controller and an agent on another Python can speak them.
The agent runs as ``agent.pex run --job JSON [--out PATH]``: it prints exactly one result
object (``RESULT_SCHEMA``) as the last line of stdout, writes the same object to ``--out`` if
given (so a result survives a lost controller), and logs only to stderr.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_SCHEMA = "fleetbench.agent-result/1"


@dataclass(frozen=True)
class AgentJob:
    """What one agent process must do. Work amounts are this agent's own share."""

    run_id: str
    benchmark: str  # the benchmark's name in the spawn file
    workload: str  # e.g. "set", "get", "setbit"
    agent_num: int  # 0-based; offsets seeds and key ranges
    agents: int  # how many agents run this benchmark
    server_kind: str  # "redis-cluster" | "redis" | "command"
    targets: list[str]  # "host:port" of every server node
    iterations: int | None = None  # this agent's ops; None when duration is set
    duration_s: float | None = None  # measured phase length; None when iterations is set
    warmup_s: float = 0.0  # load applied but not recorded, before the measured phase
    connections: int = 1
    pipeline: int = 1
    rate: float | None = None  # this agent's ops/s (open loop); None = closed loop
    params: dict[str, Any] = field(default_factory=dict)  # workload params, defaults filled in (incl. seed)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AgentJob:
        data = json.loads(text)
        data["targets"] = list(data["targets"])
        return cls(**data)


def split_evenly(total: int, parts: int, index: int) -> int:
    """Agent ``index``'s share of ``total`` units over ``parts`` agents (shares differ by at most 1)."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)
