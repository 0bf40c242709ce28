"""The job: what the controller tells one agent process to do, defined once for both sides.

The controller builds jobs (:func:`bench.spawn.plan.agent_jobs`) and sends each as JSON
(inside its host's plan over SSH's stdin, then on the agent's stdin: ``agent.pex run --job-file -``,
never on a command line, since a job may carry secrets); the agent parses it with :meth:`AgentJob.from_json`, which is
also its whole validation: a job that parses is complete (params filled in from the catalogue)
and every value is in range, so the agent can start without further checks. A job that does
not parse raises :class:`InvalidJob` naming the key (the agent exits 2 before any connection).
The controller validates spawn files against the same catalogue, so an InvalidJob means a
controller/agent version mismatch or a hand-written job.

Format: a JSON object with exactly the fields of :class:`AgentJob`, keys sorted, no spaces
(:meth:`AgentJob.to_json`). It has no version of its own: a job is only ever read by an agent
built from the same tree as the controller that wrote it (the agent pex is rebuilt whenever a
source changes). The result embeds it under ``"job"`` (``bench.wire.result``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from bench.wire.catalogue import ANY_SERVER, CATALOGUE, SERVER_KINDS, Param, check_params

Address = tuple[str, int]


class InvalidJob(ValueError):
    """A job the agent refuses. ``key`` names the culprit (``"iterations"``, ``"params.keyspace"``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class AgentJob:
    """What one agent process must do. Work amounts are this agent's own share."""

    run_id: str
    benchmark: str  # the benchmark's name in the spawn file (a repetition's label: name#k)
    workload: str  # a name in bench.wire.catalogue.CATALOGUE, e.g. "set", "get", "setbit"
    agent_num: int  # 0-based; offsets seeds and key ranges
    agents: int  # how many agents run this benchmark
    server_kind: str  # one of bench.wire.catalogue.SERVER_KINDS
    targets: list[str]  # "host:port" of every server node
    iterations: int | None = None  # this agent's ops; None when duration is set
    duration_s: float | None = None  # measured phase length; None when iterations is set
    warmup_s: float = 0.0  # load applied but not recorded, before the measured phase
    connections: int = 1
    pipeline: int = 1
    rate: float | None = None  # this agent's ops/s (open loop); None = closed loop
    params: dict[str, Any] = field(default_factory=dict)  # workload params (values are the workload's own)
    # The redis servers' password. Secret, like any params value the spawn file gave as
    # { env = ... }: a job travels to its agent on stdin only, and the result does not echo it.
    auth: str | None = None
    start_at: float | None = None  # epoch s on the agent's host: when the measured window opens (None: at once)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AgentJob:
        """The job from its JSON, checked, params completed; InvalidJob says what is wrong."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidJob("", f"job is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> AgentJob:
        """The job from its decoded JSON, checked, params completed from the catalogue."""
        if not isinstance(data, dict):
            raise InvalidJob("", f"a job is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InvalidJob(unknown[0], "not a job field (an agent older than its controller?)")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise InvalidJob(missing[0], "missing")
        values: dict[str, Any] = copy.deepcopy(data)  # the job owns its targets and params
        job = cls(**values)
        _check_fields(job)
        return replace(job, params=effective_params(job.workload, job.params))


_REQUIRED = ("run_id", "benchmark", "workload", "agent_num", "agents", "server_kind", "targets")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(job: AgentJob) -> None:
    for name in ("run_id", "benchmark", "workload", "server_kind"):
        if not isinstance(getattr(job, name), str):
            raise InvalidJob(name, f"must be a string, got {getattr(job, name)!r}")
    if job.workload not in CATALOGUE:
        raise InvalidJob("workload", f"unknown workload {job.workload!r}")
    if job.server_kind not in SERVER_KINDS:
        raise InvalidJob("server_kind", f"{job.server_kind!r} is not supported by this agent "
                                        f"(only {', '.join(SERVER_KINDS)})")
    servers = CATALOGUE[job.workload].servers
    if job.server_kind not in servers and ANY_SERVER not in servers:
        raise InvalidJob("server_kind", f"workload {job.workload!r} cannot run against {job.server_kind!r}")
    if not isinstance(job.params, dict):
        raise InvalidJob("params", "must be an object")
    if job.auth is not None and not isinstance(job.auth, str):
        raise InvalidJob("auth", "must be a string or null")
    if (job.iterations is None) == (job.duration_s is None):
        raise InvalidJob("iterations", "exactly one of iterations and duration_s must be set")
    if job.iterations is not None and (not _is_int(job.iterations) or job.iterations < 1):
        raise InvalidJob("iterations", f"must be a positive integer, got {job.iterations!r}")
    if job.duration_s is not None and not (_is_number(job.duration_s) and job.duration_s > 0):
        raise InvalidJob("duration_s", f"must be > 0, got {job.duration_s!r}")
    if not _is_number(job.warmup_s) or job.warmup_s < 0:
        raise InvalidJob("warmup_s", f"must be >= 0, got {job.warmup_s!r}")
    for name in ("connections", "pipeline", "agents"):
        value = getattr(job, name)
        if not _is_int(value) or value < 1:
            raise InvalidJob(name, f"must be a positive integer, got {value!r}")
    if not _is_int(job.agent_num) or not 0 <= job.agent_num < job.agents:
        raise InvalidJob("agent_num", f"must be in [0, agents), got {job.agent_num!r} of {job.agents!r}")
    if job.rate is not None and not (_is_number(job.rate) and job.rate > 0):
        raise InvalidJob("rate", f"must be > 0 ops/s or null, got {job.rate!r}")
    if job.start_at is not None and not (_is_number(job.start_at) and job.start_at > 0):
        raise InvalidJob("start_at", f"must be epoch seconds > 0 or null, got {job.start_at!r}")
    if not isinstance(job.targets, list) or not job.targets:
        raise InvalidJob("targets", "must be a non-empty list of host:port")
    for i, target in enumerate(job.targets):
        try:
            split_target(target)
        except ValueError as exc:
            raise InvalidJob(f"targets[{i}]", str(exc)) from None


def split_target(text: object) -> Address:
    """``host:port`` (IPv6 as ``[::1]:6379``) to ``(host, port)``; ValueError says why not."""
    if not isinstance(text, str):
        raise ValueError(f"target {text!r} is not host:port")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list,), "dict": (dict,)}


def _check_param(p: Param, value: object) -> None:
    key = f"params.{p.name}"
    if not isinstance(value, _TYPES[p.kind]) or (p.kind in ("int", "float") and isinstance(value, bool)):
        raise InvalidJob(key, f"must be {p.kind}, got {value!r}")
    if p.choices is not None and value not in p.choices:
        raise InvalidJob(key, f"must be one of {', '.join(map(str, p.choices))}; got {value!r}")
    if isinstance(value, (int, float)):
        if p.minimum is not None and value < p.minimum:
            raise InvalidJob(key, f"must be >= {p.minimum:g}, got {value!r}")
        if p.maximum is not None and value > p.maximum:
            raise InvalidJob(key, f"must be <= {p.maximum:g}, got {value!r}")


def effective_params(workload: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The catalogue defaults overlaid with ``params``, every value checked (InvalidJob if not)."""
    spec = CATALOGUE[workload]
    unknown = sorted(set(params) - {p.name for p in spec.params})
    if unknown:
        raise InvalidJob(f"params.{unknown[0]}", f"unknown param of workload {workload!r} "
                                                 f"(it has: {', '.join(p.name for p in spec.params)})")
    out = spec.defaults()
    out.update(params)
    for p in spec.params:
        _check_param(p, out[p.name])
    problems = check_params(workload, out)
    if problems:
        key, message = problems[0]
        raise InvalidJob(f"params.{key}", message)
    return out


def split_evenly(total: int, parts: int, index: int) -> int:
    """Agent ``index``'s share of ``total`` units over ``parts`` agents (shares differ by at most 1)."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)
