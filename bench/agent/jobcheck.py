"""Checking an AgentJob before any connection is made (exit code 2 territory).

The controller validates spawn files against the same catalogue, so a failure here means a
controller/agent version mismatch or a hand-written job: say exactly what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from bench.wire.catalogue import CATALOGUE, Param, check_params
from bench.wire.job import AgentJob

SERVER_KINDS = ("redis-cluster", "redis", "command")


class InvalidJob(ValueError):
    pass


_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list,), "dict": (dict,)}


def _check_param(p: Param, value: Any) -> None:
    kinds = _KINDS
    ok = isinstance(value, kinds[p.kind]) and not (p.kind in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise InvalidJob(f"param {p.name!r} must be {p.kind}, got {value!r}")
    if p.choices is not None and value not in p.choices:
        raise InvalidJob(f"param {p.name!r} must be one of {', '.join(map(str, p.choices))}; got {value!r}")
    if p.minimum is not None and value < p.minimum:
        raise InvalidJob(f"param {p.name!r} must be >= {p.minimum:g}, got {value!r}")
    if p.maximum is not None and value > p.maximum:
        raise InvalidJob(f"param {p.name!r} must be <= {p.maximum:g}, got {value!r}")


def effective_params(workload: str, params: dict[str, Any]) -> dict[str, Any]:
    """The catalogue defaults overlaid with ``params``, every value checked."""
    spec = CATALOGUE[workload]
    unknown = sorted(set(params) - {p.name for p in spec.params})
    if unknown:
        raise InvalidJob(f"unknown params for workload {workload!r}: {', '.join(unknown)}")
    out = spec.defaults()
    out.update(params)
    for p in spec.params:
        _check_param(p, out[p.name])
    problems = check_params(workload, out)
    if problems:
        raise InvalidJob("; ".join(f"param {key}: {message}" for key, message in problems))
    return out


def parse_job(text: str) -> AgentJob:
    """The job from its JSON, checked, with params completed from the catalogue."""
    try:
        job = AgentJob.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidJob(f"job is not a valid AgentJob JSON: {exc}") from None
    if job.workload not in CATALOGUE:
        raise InvalidJob(f"unknown workload {job.workload!r}")
    if job.server_kind not in SERVER_KINDS:
        raise InvalidJob(f"server_kind {job.server_kind!r} is not supported by this agent (only {', '.join(SERVER_KINDS)})")
    servers = CATALOGUE[job.workload].servers
    if job.server_kind not in servers and "any" not in servers:
        raise InvalidJob(f"workload {job.workload!r} cannot run against {job.server_kind!r}")
    if not isinstance(job.params, dict):
        raise InvalidJob("params must be an object")
    if (job.iterations is None) == (job.duration_s is None):
        raise InvalidJob("exactly one of iterations and duration_s must be set")
    if job.iterations is not None and (not isinstance(job.iterations, int) or job.iterations < 1):
        raise InvalidJob(f"iterations must be a positive integer, got {job.iterations!r}")
    if job.duration_s is not None and not (isinstance(job.duration_s, (int, float)) and job.duration_s > 0):
        raise InvalidJob(f"duration_s must be > 0, got {job.duration_s!r}")
    if not isinstance(job.warmup_s, (int, float)) or job.warmup_s < 0:
        raise InvalidJob(f"warmup_s must be >= 0, got {job.warmup_s!r}")
    for name in ("connections", "pipeline", "agents"):
        value = getattr(job, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidJob(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(job.agent_num, int) or not 0 <= job.agent_num < job.agents:
        raise InvalidJob(f"agent_num must be in [0, agents), got {job.agent_num!r} of {job.agents!r}")
    if job.rate is not None and not (isinstance(job.rate, (int, float)) and job.rate > 0):
        raise InvalidJob(f"rate must be > 0 ops/s or null, got {job.rate!r}")
    if not job.targets or not all(isinstance(t, str) for t in job.targets):
        raise InvalidJob("targets must be a non-empty list of host:port")
    from bench.agent.cluster import parse_address  # keeps this module importable alone

    for t in job.targets:
        try:
            parse_address(t)
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
    return replace(job, params=effective_params(job.workload, job.params))


def job_dict(job: AgentJob) -> dict[str, Any]:
    return json.loads(job.to_json())
