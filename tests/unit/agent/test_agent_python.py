"""The python workload without a network: finding the user's function, the context it gets,
ops as calls in the load loop (sync, async, concurrent, failing), setup failures, the spawn
checks of target and modules, and how modules get into the agent pex."""

from __future__ import annotations

import itertools
import json
import random
import re
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from engine_harness import run_phase

from bench.agent import cluster, pyload
from bench.agent import workloads as W
from bench.agent.engine import Engine
from bench.agent.stats import Recorder
from bench.spawn import spec
from bench.wire.job import AgentJob, InvalidJob, effective_params
from fabfile.ship import build

REPO = Path(__file__).resolve().parents[3]
_names = itertools.count()


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Write a module with a fresh name on sys.path; returns its import name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"fbtest_load_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def make_plan(target: str, connections: int = 2, pipeline: int = 1, options: dict[str, Any] = None,
              agent: int = 0) -> W.Plan:
    params = effective_params("python", {"target": target, "options": options or {}})
    ctx = W.Context(params, agent, 3, connections, pipeline, ("a:1", "b:2"), "command")
    return W.build("python", ctx)


def run_plan(plan: W.Plan, connections: int = 2, pipeline: int = 1, **phase: Any) -> tuple[Engine, Recorder]:
    return run_phase(cluster.DirectRouter(plan.nodes), plan.dial, plan.next_ops, connections=connections,
                     pipeline=pipeline, **phase)


# ------------------------------------------------------------------ finding the function


def test_load_target_names_what_is_missing(module):
    name = module("""
        def make(ctx):
            return lambda: None
        CONSTANT = 3
    """)
    assert pyload.load_target(f"{name}:make").__name__ == "make"
    with pytest.raises(ValueError,
                       match=r"'nope_not_here': it is not in this agent pex \(list its file in params.modules\)"):
        pyload.load_target("nope_not_here:run")
    with pytest.raises(ValueError, match=f"module '{name}' has no 'missing'"):
        pyload.load_target(f"{name}:missing")
    with pytest.raises(ValueError, match="is a int, not a function"):
        pyload.load_target(f"{name}:CONSTANT")
    broken = module("import not_a_real_dependency_xyz\n")
    with pytest.raises(ValueError, match="No module named 'not_a_real_dependency_xyz'.*standard library"):
        pyload.load_target(f"{broken}:run")
    failing = module("raise RuntimeError('bad config')\n")
    with pytest.raises(ValueError,
                       match=rf"importing '{failing}' failed: RuntimeError: bad config at .*{failing}.py:1"):
        pyload.load_target(f"{failing}:run")


def test_job_with_a_bad_target_is_invalid():
    job = {"run_id": "r", "benchmark": "b", "workload": "python", "agent_num": 0, "agents": 1,
           "server_kind": "redis", "targets": ["127.0.0.1:1"], "iterations": 5, "params": {"target": "no colon"}}
    with pytest.raises(InvalidJob, match="params.target: 'no colon' is not module:function") as caught:
        AgentJob.from_json(json.dumps(job))
    assert caught.value.key == "params.target"


# ------------------------------------------------------------------ ops in the load loop


def test_context_per_connection(module):
    name = module("""
        SEEN = []
        def make(ctx):
            SEEN.append(ctx)
            return lambda: None
    """)
    plan = make_plan(f"{name}:make", connections=3, options={"k": [1, 2]}, agent=1)
    eng, rec = run_plan(plan, connections=3, iterations=30)
    assert eng.fatal is None and rec.ops == 30
    seen = __import__(name).SEEN
    assert [c.connection for c in seen] == [0, 1, 2]
    assert {(c.agent_num, c.agents, c.connections, c.pipeline, c.server_kind) for c in seen} == {
        (1, 3, 3, 1, "command")}
    assert seen[0].targets == (("a", 1), ("b", 2)) and seen[0].options == {"k": [1, 2]}
    assert len({c.seed for c in seen}) == 3
    assert seen[0].rng.random() == random.Random(seen[0].seed).random()


def test_sync_and_async_ops_and_their_errors(module):
    name = module("""
        import asyncio
        CALLS = []
        def sync_ops(ctx):
            def op():
                CALLS.append(ctx.connection)
                if len(CALLS) % 4 == 0:
                    raise KeyError("every fourth")
            return op
        async def async_ops(ctx):
            await asyncio.sleep(0)
            async def op():
                CALLS.append(ctx.connection)
                await asyncio.sleep(0)
                if len(CALLS) % 5 == 0:
                    raise ValueError("every fifth")
            return op
    """)
    mod = __import__(name)
    eng, rec = run_plan(make_plan(f"{name}:sync_ops"), iterations=40)
    assert eng.fatal is None and (rec.ops, rec.errors) == (30, 10) and len(mod.CALLS) == 40
    assert rec.error_samples == ["KeyError: 'every fourth'"]
    assert set(mod.CALLS) == {0, 1}
    mod.CALLS.clear()
    eng, rec = run_plan(make_plan(f"{name}:async_ops"), iterations=50)
    assert eng.fatal is None and (rec.ops, rec.errors) == (40, 10)
    assert rec.error_samples == ["ValueError: every fifth"]
    assert sum(s["ops"] for s in rec.series) == 40 and sum(s["errors"] for s in rec.series) == 10


def test_pipeline_runs_calls_concurrently_per_connection(module):
    name = module("""
        import asyncio
        STATE = {"now": 0, "peak": 0}
        def make(ctx):
            async def op():
                STATE["now"] += 1
                STATE["peak"] = max(STATE["peak"], STATE["now"])
                await asyncio.sleep(0)
                STATE["now"] -= 1
                if STATE["peak"] > 99:
                    raise AssertionError("never")
            return op
    """)
    eng, rec = run_plan(make_plan(f"{name}:make", connections=2, pipeline=4), connections=2, pipeline=4,
                        iterations=80)
    assert eng.fatal is None and rec.ops == 80 and rec.errors == 0
    assert __import__(name).STATE["peak"] == 8  # 2 connections x 4 concurrent calls


def test_open_loop_records_service_time(module):
    name = module("def make(ctx):\n    return lambda: None\n")
    eng, rec = run_plan(make_plan(f"{name}:make"), iterations=50, rate=5000.0)
    assert eng.fatal is None and rec.ops == 50 and rec.service is not None and rec.service.get_total_count() == 50


@pytest.mark.parametrize("source,message", [
    ("def make(ctx):\n    raise OSError('no such service')\n", "make(ctx) raised OSError: no such service at "),
    ("async def make(ctx):\n    return 42\n", "make(ctx) returned 42, not the op callable"),
])
def test_setup_failure_is_fatal_before_any_load(module, source, message, capsys):
    name = module(source)
    with pytest.raises(ConnectionError, match=re.escape(f"cannot connect to python:0: {name}:{message}")):
        run_plan(make_plan(f"{name}:make"), iterations=10)


# ------------------------------------------------------------------ spawn checks


def spawn_data(params: dict[str, Any]) -> dict[str, Any]:
    return {"hosts": {"servers": ["s1"], "agents": ["a1"]}, "server": {"kind": "redis"},
            "benchmark": [{"name": "p", "workload": "python", "iterations": 10, "params": params}]}


def problems(params: dict[str, Any]) -> list[str]:
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(spawn_data(params))
    return caught.value.problems


def test_spec_checks_target_and_module_names():
    assert problems({"target": "run"}) == [
        'benchmark[0].params.target: \'run\' is not module:function (e.g. "myload:run")']
    assert problems({"target": "m:f", "modules": ["lib/my-load.py", "bench/", 3]}) == [
        "benchmark[0].params.modules[0]: 'lib/my-load.py' would ship as 'my-load', which is not an importable name",
        "benchmark[0].params.modules[1]: 'bench/' would ship as 'bench' and hide the agent's own 'bench'; rename it",
        "benchmark[0].params.modules[2]: expected a path, got 3",
    ]
    parsed = spec.parse(spawn_data({"target": "pkg.sub:obj.method", "modules": ["./pkg"]}))
    assert parsed.benchmarks[0].params["modules"] == ["./pkg"]


def test_load_checks_that_modules_exist(tmp_path):
    (tmp_path / "myload.py").write_text("def run(ctx):\n    return lambda: None\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "notpkg").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "myload.py").write_text("")
    spawn_file = tmp_path / "s.toml"
    base = ('[hosts]\nservers = ["s1"]\nagents = ["a1"]\n[server]\nkind = "redis"\n'
            '[[benchmark]]\nname = "p"\nworkload = "python"\niterations = 10\n')
    spawn_file.write_text(base + 'params = { target = "myload:run", modules = ["myload.py", "./pkg/"] }\n')
    loaded = spec.load(spawn_file)
    assert spec.agent_modules(loaded, tmp_path) == {"myload": tmp_path / "myload.py", "pkg": tmp_path / "pkg"}
    spawn_file.write_text(base + 'params = { target = "myload:run", modules = ["gone.py", "notpkg", '
                                 '"myload.py", "other/myload.py"] }\n')
    with pytest.raises(spec.SpecError) as caught:
        spec.load(spawn_file)
    assert caught.value.problems == [
        f"benchmark[0].params.modules[0]: 'gone.py' does not exist (looked for {str(tmp_path / 'gone.py')!r})",
        "benchmark[0].params.modules[1]: 'notpkg' is neither a .py file nor a package directory (with __init__.py)",
        f"benchmark[0].params.modules[3]: 'other/myload.py' ships as 'myload', like {str(tmp_path / 'myload.py')!r}",
    ]
    # A run's saved spawn parses anywhere: files are only looked at by load() and the build.
    spec.parse(spec.to_dict(loaded))


# ------------------------------------------------------------------ into the agent pex


def test_agent_pex_ships_modules_and_rebuilds_when_they_change(tmp_path, monkeypatch):
    staged: list[dict[str, bytes]] = []

    def fake_pex(args, what):
        src = Path(args[args.index("-D") + 1])
        staged.append({str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()})
        out = Path(args[args.index("-o") + 1])
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("n", str(len(staged)))
            z.writestr("PEX-INFO", "{}")  # what the builder reads back: which releases the pex holds

    monkeypatch.setattr(build, "_pex", fake_pex)
    platform = tmp_path / "platform.json"
    platform.write_text("{}")
    mod = tmp_path / "myload.py"
    mod.write_text("v = 1\n")
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data.json").write_text("{}")
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"junk")
    builder = build.Builder(tmp_path / "cache", echo=lambda m: None)

    plain = builder.agent([platform])
    assert builder.agent([platform]) == plain and len(staged) == 1  # cached
    assert "myload.py" not in staged[0] and "bench/agent/pyload.py" in staged[0]

    first = builder.agent([platform], {"myload": mod, "pkg": pkg})
    assert len(staged) == 2
    assert staged[1]["myload.py"] == b"v = 1\n"
    assert {k for k in staged[1] if k.startswith("pkg/")} == {"pkg/__init__.py", "pkg/data.json"}
    assert builder.agent([platform], {"myload": mod, "pkg": pkg}) == first and len(staged) == 2
    mod.write_text("v = 2\n")
    builder.agent([platform], {"myload": mod, "pkg": pkg})
    assert len(staged) == 3 and staged[2]["myload.py"] == b"v = 2\n"


def test_the_example_module_is_a_valid_python_workload(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    function = pyload.load_target("redis_ping:connect")
    assert function.__name__ == "connect"
    loaded = spec.load(REPO / "examples" / "python-ping.toml")
    assert spec.agent_modules(loaded, REPO / "examples") == {"redis_ping": REPO / "examples" / "redis_ping.py"}
