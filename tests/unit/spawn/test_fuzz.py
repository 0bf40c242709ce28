"""Bad input, property-based: mutated spawn files and host lists always give a validation error
naming the key, never a traceback, and a bad spawn file stops ``inv deploy`` before any host
is contacted.

tests/unit/spawn/test_spec.py checks that any mutation gives a Spawn or a SpecError; these tests
pin down *which* key the error names, for mutations whose culprit is known.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invoke import Context
from invoke.exceptions import Exit

from bench.spawn import spec
from bench.spawn.benchmarks import BENCHMARK_NAME
from bench.wire.catalogue import CATALOGUE

REPO = Path(__file__).resolve().parents[3]
GOOD = REPO / "tests" / "data" / "spawn" / "good"
GOOD_FILES = sorted([*GOOD.glob("*.toml"), *GOOD.glob("*.json")])
BASES = [spec.to_dict(spec.load(p)) for p in GOOD_FILES]

Path_ = tuple[Any, ...]  # keys and list indexes from the top of a spawn document

# -- what each key accepts --------------------------------------------------------------------

TOP = {"name": "str", "hosts": "table", "server": "table", "benchmark": "list"}
SERVER = {"kind": "str", "port": "int", "requirements": "list", "replicas": "int", "script": "str",
          "args": "list", "ready": "str", "env": "table"}
BENCHMARK = {"name": "str", "workload": "str", "agents": "int", "iterations": "int", "duration": "duration",
             "warmup": "duration", "connections": "int", "pipeline": "int", "rate": "number", "repeat": "int",
             "parallel": "str", "params": "table"}
PARAM_KINDS = {"int": "int", "float": "number", "str": "str", "bool": "bool", "list": "list", "dict": "table"}


def kind_of(doc: dict[str, Any], path: Path_) -> str | None:
    """The type the key at ``path`` accepts, or None where any type may be right."""
    head, rest = path[0], path[1:]
    if not rest:
        return TOP.get(head)
    if head == "hosts":
        return "list" if len(rest) == 1 else "str"
    if head == "server":
        return SERVER.get(rest[0]) if len(rest) == 1 else "str"  # requirements[i], args[i], env.X
    if head == "benchmark":
        if len(rest) == 1:
            return "table"
        if len(rest) == 2:
            return BENCHMARK.get(rest[1])
        if rest[1] == "params" and len(rest) == 3:
            workload = CATALOGUE[doc["benchmark"][rest[0]]["workload"]]
            param = workload.param(rest[2])
            return PARAM_KINDS[param.kind] if param else None
    return None


def typed_paths(doc: dict[str, Any]) -> list[tuple[Path_, str]]:
    out: list[tuple[Path_, str]] = []

    def walk(value: Any, path: Path_) -> None:
        if path:
            kind = kind_of(doc, path)
            if kind is None:
                return  # inside a free-form param (paths[i], headers.X): anything JSON goes
            out.append((path, kind))
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))

    walk(doc, ())
    return out


def dotted(path: Path_) -> str:
    """How spec errors name a key: ``benchmark[0].params.rows``."""
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def names(problem: str, key: str) -> bool:
    where = problem.split(": ", 1)[0]
    return where == key or where.startswith(key + ".") or where.startswith(key + "[")


def set_at(doc: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def problems_of(doc: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(doc, **kwargs)
    return caught.value.problems


# -- values of the wrong type, by what the key accepts --------------------------------------------

HOSTILE_TEXT = st.lists(st.sampled_from([*string.printable, "$(", "`", "é", "\x00", "\u2028"]),
                        max_size=12).map("".join)
texts = st.one_of(HOSTILE_TEXT, st.sampled_from(["", " ", "30s", "redis", "true", "1"]))
ints = st.integers(min_value=-(2**70), max_value=2**70)
floats = st.floats(allow_nan=True, allow_infinity=True)
nulls, bools = st.none(), st.booleans()
lists = st.lists(st.one_of(texts, ints, nulls), max_size=3)
tables = st.dictionaries(st.text(max_size=6), st.one_of(texts, ints), max_size=3)
WRONG = {
    "int": st.one_of(texts, floats, bools, nulls, lists, tables),
    "number": st.one_of(texts, bools, nulls, lists, tables),
    "duration": st.one_of(bools, nulls, lists, tables),  # a string may be a duration, a number is one
    "str": st.one_of(ints, floats, bools, nulls, lists, tables),
    "bool": st.one_of(texts, ints, floats, nulls, lists, tables),
    "list": st.one_of(texts, ints, bools, nulls, tables),
    "table": st.one_of(texts, ints, bools, nulls, lists),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_value_of_the_wrong_type_is_named_by_its_key(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    path, kind = data.draw(st.sampled_from(typed_paths(doc)))
    set_at(doc, path, data.draw(WRONG[kind]))
    problems = problems_of(doc)
    assert any(names(p, dotted(path)) for p in problems), (dotted(path), problems)


REQUIRED: list[Path_] = [("hosts",), ("benchmark",), ("hosts", "servers"), ("hosts", "agents"),
                         ("benchmark", 0, "name"), ("benchmark", 0, "workload")]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(BASES), st.sampled_from(REQUIRED))
def test_a_missing_key_is_named(base: dict[str, Any], path: Path_) -> None:
    doc = copy.deepcopy(base)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    problems = problems_of(doc)
    assert any(names(p, dotted(path)) and "missing" in p for p in problems), (dotted(path), problems)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_an_unknown_key_is_named(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    # Every table whose keys are checked (env and dict params take any key).
    tables_in = [()] + [p for p, kind in typed_paths(doc) if kind == "table" and p[-1] != "env" and len(p) < 4]
    where = data.draw(st.sampled_from(tables_in))
    table = doc
    for part in where:
        table = table[part]
    key = data.draw(HOSTILE_TEXT.filter(lambda k: k and k not in table and k not in {
        *spec.TOP_KEYS, *spec.HOSTS_KEYS, *spec.SERVER_KEYS, *spec.BENCHMARK_KEYS,
        *(p.name for w in CATALOGUE.values() for p in w.params)}))
    table[key] = data.draw(st.one_of(texts, ints))
    problems = problems_of(doc)
    shown = spec.key_text(key)  # keys that TOML would quote are quoted in the path too
    assert any(p.startswith(f"{dotted((*where,)) + '.' + shown if where else shown}: unknown")
               for p in problems), problems


# -- host lists ----------------------------------------------------------------------------------

SHELL_SPECIALS = set(" \t\n;$`'\"|&<>()\\*?!{}~#/,=")
GOOD_HOSTS = ["h1", "h2", "db-3.example.org", "deploy@h4", "root@10.0.0.5:2222", "u@::1"]
host_items = st.one_of(st.sampled_from(GOOD_HOSTS), HOSTILE_TEXT, ints, nulls, lists, tables)


def obviously_bad(item: Any) -> bool:
    return not isinstance(item, str) or not item.strip() or bool(SHELL_SPECIALS & set(item))


def check_host_lists(parse, key_of, servers: list[Any], agents: list[Any]) -> None:
    """``parse()`` either accepts only shell-safe destinations, or names every bad entry."""
    try:
        result = parse()
    except spec.SpecError as e:
        problems = e.problems
        assert all(p.startswith(("hosts.", "server.replicas: ")) for p in problems), problems
        for key, items in (("servers", servers), ("agents", agents)):
            for i, item in enumerate(items):
                if obviously_bad(item):
                    assert any(p.startswith(f"{key_of(key)}[{i}]: ") for p in problems), (key, i, item, problems)
        return
    for host in (*result.hosts.servers, *result.hosts.agents):
        assert not obviously_bad(host) and spec.parse_destination(host) is not None, host


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BASES), st.lists(host_items, max_size=6), st.lists(host_items, max_size=6))
def test_mutated_host_lists_name_every_bad_entry(base: dict[str, Any], servers: list[Any], agents: list[Any]) -> None:
    doc = copy.deepcopy(base)
    doc["hosts"] = {"servers": servers, "agents": agents}
    check_host_lists(lambda: spec.parse(doc), lambda key: f"hosts.{key}", servers, agents)


@pytest.fixture(scope="module")
def inventory_dir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(BASES), st.lists(host_items, max_size=5), st.lists(host_items, max_size=5))
def test_mutated_inventory_files_name_every_bad_entry(inventory_dir: Path, base: dict[str, Any],
                                                      servers: list[Any], agents: list[Any]) -> None:
    (inventory_dir / "hosts.json").write_text(json.dumps({"servers": servers, "agents": agents}))
    doc = copy.deepcopy(base)
    doc["hosts"] = {"inventory": "hosts.json"}
    check_host_lists(lambda: spec.parse(doc, base_dir=inventory_dir), lambda key: f"hosts.inventory.{key}",
                     servers, agents)


# -- the file as text ------------------------------------------------------------------------------

TEXTS = {p.name: p.read_text() for p in GOOD_FILES}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(TEXTS)), st.data())
def test_a_mangled_file_is_a_spec_error_with_a_place(name: str, data: st.DataObject) -> None:
    text = TEXTS[name]
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 8))
    insert = data.draw(st.text(alphabet=st.sampled_from(list('[]{}="\',.#\n\\ ax1')), max_size=4))
    mangled = text[:at] + insert + text[at + cut:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(mangled)
        (Path(d) / "inventory").mkdir()
        for f in (GOOD / "inventory").iterdir():
            (Path(d) / "inventory" / f.name).write_text(f.read_text())
        try:
            spec.load(path)
        except spec.SpecError as e:
            assert e.problems and all(re.match(r"\S.*?: \S", p) for p in e.problems), e.problems


# -- through `inv deploy`: a clean error, and no host is ever contacted ----------------------------

def _tasks():
    loaded = importlib.util.spec_from_file_location("fleetbench_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


TASKS = _tasks()


class _NoFleet:
    def __init__(self, *args: Any, **kwargs: Any):
        raise AssertionError("a bad spawn file reached the fleet")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_deploy_with_a_bad_spawn_file_exits_1_naming_the_key_before_any_ssh(data: st.DataObject, monkeypatch,
                                                                               tmp_path: Path) -> None:
    import fabfile.session
    from fabfile.session import forget_sessions

    monkeypatch.setattr(fabfile.session, "Fleet", _NoFleet)
    monkeypatch.chdir(tmp_path)
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    path, kind = data.draw(st.sampled_from(typed_paths(doc)))
    set_at(doc, path, data.draw(WRONG[kind]))
    spawn_path = tmp_path / "mutated.json"
    spawn_path.write_text(json.dumps(doc))
    try:
        with pytest.raises(Exit) as caught:
            TASKS.deploy(Context(), spawn=str(spawn_path))
    finally:
        forget_sessions()
    assert caught.value.code == 1
    message = str(caught.value.message)
    assert message.startswith("deploy failed: ") and dotted(path) in message, message


# -- a benchmark name is data: only a safe slug of it ever becomes a path ------------------------

names_accepted = st.text(min_size=1, max_size=100).filter(lambda n: BENCHMARK_NAME.match(n) and n.strip())


@settings(max_examples=300, deadline=None)
@given(names_accepted, names_accepted)
def test_any_accepted_name_gets_a_safe_distinct_directory(a: str, b: str) -> None:
    from fabfile.runs.store import dir_name

    for name in (a, b, f"{a}#2"):
        d = dir_name(name)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._#-]{0,99}", d), (name, d)  # no '/', no leading '-' or '.'
    assert (dir_name(a) == dir_name(b)) == (a == b)
