"""The job: one type for both sides; parsing it is the agent's whole validation."""

from __future__ import annotations

import json

import pytest

from bench.wire.catalogue import CATALOGUE, SERVER_KINDS
from bench.wire.job import AgentJob, InvalidJob, effective_params, split_target

BASE = {
    "run_id": "r", "benchmark": "b", "workload": "set", "agent_num": 0, "agents": 1,
    "server_kind": "redis", "targets": ["127.0.0.1:1"], "iterations": 10,
}


def job(**changes):
    d = dict(BASE)
    d.update(changes)
    return json.dumps(d)


def test_params_get_catalogue_defaults():
    j = AgentJob.from_json(job(params={"keyspace": 5}))
    assert j.params == dict(CATALOGUE["set"].defaults(), keyspace=5)


def test_round_trip_is_exact_and_stable():
    j = AgentJob.from_json(job(workload="get", rate=12.5, warmup_s=1, connections=3, pipeline=4,
                               targets=["[::1]:7000", "10.0.0.2:7001"], params={"value_size": 8}))
    text = j.to_json()
    assert AgentJob.from_json(text) == j
    assert AgentJob.from_json(text).to_json() == text  # parsing a complete job changes nothing
    assert AgentJob.from_dict(j.to_dict()) == j
    # The wire format: the dataclass's fields, keys sorted, no spaces (agents older or newer read it).
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert sorted(json.loads(text)) == sorted(j.to_dict())


def test_a_job_owns_its_values():
    data = json.loads(job(params={"keyspace": 5}))
    j = AgentJob.from_dict(data)
    data["targets"].append("x:1")
    data["params"]["keyspace"] = 6
    assert j.targets == ["127.0.0.1:1"] and j.params["keyspace"] == 5


@pytest.mark.parametrize("changes,key,message", [
    ({"params": {"bogus": 1}}, "params.bogus", "unknown param of workload 'set'"),
    ({"params": {"keyspace": 0}}, "params.keyspace", ">= 1"),
    ({"params": {"keyspace": "many"}}, "params.keyspace", "must be int"),
    ({"params": {"keyspace": True}}, "params.keyspace", "must be int"),
    ({"params": {"distribution": "gauss"}}, "params.distribution", "one of"),
    ({"params": {"hot_ops": 1.5}}, "params.hot_ops", "<= 1"),
    ({"params": []}, "params", "must be an object"),
    ({"workload": "nope"}, "workload", "unknown workload"),
    ({"workload": 3}, "workload", "must be a string"),
    ({"server_kind": "memcached"}, "server_kind", "not supported"),
    ({"workload": "setbit", "server_kind": "command"}, "server_kind", "cannot run against"),
    ({"iterations": None}, "iterations", "exactly one"),
    ({"duration_s": 3}, "iterations", "exactly one"),
    ({"iterations": 0}, "iterations", "positive"),
    ({"iterations": None, "duration_s": 0}, "duration_s", "> 0"),
    ({"connections": 0}, "connections", "positive"),
    ({"pipeline": 1.5}, "pipeline", "positive"),
    ({"agents": True}, "agents", "positive"),
    ({"agent_num": 1}, "agent_num", r"\[0, agents\)"),
    ({"rate": 0}, "rate", "> 0"),
    ({"warmup_s": -1}, "warmup_s", ">= 0"),
    ({"targets": []}, "targets", "non-empty"),
    ({"targets": "h:1"}, "targets", "non-empty list"),
    ({"targets": ["h:1", "nohost"]}, "targets[1]", "host:port"),
    ({"targets": [7]}, "targets[0]", "host:port"),
    ({"surprise": 1}, "surprise", "not a job field"),
])
def test_invalid_jobs_name_the_key(changes, key, message):
    with pytest.raises(InvalidJob, match=message) as caught:
        AgentJob.from_json(job(**changes))
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize("missing", ["run_id", "workload", "targets", "agents"])
def test_a_missing_required_field_is_named(missing):
    data = dict(BASE)
    del data[missing]
    with pytest.raises(InvalidJob, match=f"^{missing}: missing$"):
        AgentJob.from_dict(data)


@pytest.mark.parametrize("text", ["{", "[1]", '"job"', "null"])
def test_not_a_json_object(text):
    with pytest.raises(InvalidJob, match="JSON"):
        AgentJob.from_json(text)


def test_check_beyond_the_type_is_named_by_its_param_key():
    with pytest.raises(InvalidJob, match=r"^params.urls\[0\]: .*https is not supported") as caught:
        AgentJob.from_json(job(workload="http", server_kind="command", params={"urls": ["https://x/"]}))
    assert caught.value.key == "params.urls[0]"


def test_every_server_kind_parses():
    for kind in SERVER_KINDS:
        assert AgentJob.from_json(job(workload="python", server_kind=kind,
                                      params={"target": "m:f"})).server_kind == kind


def test_float_params_accept_ints():
    assert effective_params("zipf", {"ratio": 1})["ratio"] == 1


def test_split_target():
    assert split_target("[::1]:6379") == ("::1", 6379)
    assert split_target("redis-1:7000") == ("redis-1", 7000)
    for bad in ("nohost", ":7000", "h:", "h:x", None):
        with pytest.raises(ValueError, match="is not host:port"):
            split_target(bad)
