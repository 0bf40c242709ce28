"""Host runs that no broken or hostile host can wedge, silently shorten or crash (issue 20),
against the real testbed: a host's run directory removed mid-run, the barrier coordinator's host
run frozen (SIGSTOP), and a workload that writes terminal escape sequences.

Each test names the README failure row it proves. Servers on h1, agents on h4 and h5 (h4 is the
barrier coordinator: the first agent host; agent 1 of a benchmark runs on h5). No timing is
asserted: each bound is the timeout that makes its test terminate.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.fleet.test_faults import Running
from tests.fleet.test_hostrun import HEAD, nothing_of_ours_left, run_id_of, run_json

pytestmark = pytest.mark.fleet

STEADY = """
[[benchmark]]
name = "steady"
workload = "set"
agents = 2
duration = "DURATION"
expect = ["errors == 0"]
"""
AFTER = """
[[benchmark]]
name = "after"
workload = "set"
agents = 2
duration = "2s"
"""


def host_run_pid(project, host: str) -> int:
    """The pid of the host run of ours on ``host`` (its state.json says it)."""
    text = project.ssh(host, "cat ~/.fleetbench/runs/*/_run/state.json").stdout
    return int(json.loads(text)["pid"])


# -- a run directory that vanished: its agents are accounted for, the run is partial -----------------

def test_a_run_directory_removed_mid_run_is_a_lost_host_with_its_agents_failed(project):
    h = project.hosts
    spawn = str(project.write_spawn("vanished.toml", HEAD + STEADY.replace("DURATION", "15s")))
    run = Running(project, "spawn", "--spawn", spawn, "--verbose", "--host-timeout", "8")
    try:
        run.wait_for(r"steady#1\] .* measuring")
        project.ssh(h[4], "rm -rf ~/.fleetbench/runs")  # wiped: ephemeral storage, a reboot
        code = run.finish(timeout=300)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    out = run.output
    assert code == 1, out  # agents failed
    assert "Traceback" not in out
    assert re.search(rf"gave up on {h[4]}: its run directory ~/\.fleetbench/runs/\S+ is gone", out), out
    merged = run_json(project, run_id_of(out))
    assert merged["status"] == "partial"
    (steady,) = merged["benchmarks"]  # the benchmark is there, with every agent accounted for
    assert steady["name"] == "steady" and steady["agents_ok"] == 1
    (failure,) = steady["failures"]
    assert failure["host"] == h[4] and "run directory" in failure["error"], failure
    assert merged["lost_hosts"] == [h[4]]
    assert [e["passed"] for e in steady["expectations"]] == [False]  # its expectations fail
    project.inv("down", "--spawn", spawn)
    nothing_of_ours_left(project, (h[0], h[3]))


# -- the coordinator's host run frozen: given up after --host-timeout, the others go on alone ----------

def test_a_frozen_coordinator_is_given_up_on_time_and_the_others_go_on_alone(project):
    h = project.hosts
    text = HEAD + STEADY.replace("DURATION", "10s") + AFTER
    spawn = str(project.write_spawn("frozen-coordinator.toml", text))
    project.inv("deploy", "--spawn", spawn)
    run = Running(project, "bench", "--spawn", spawn, "--host-timeout", "6", "--verbose")
    pid = None
    try:
        run.wait_for(r"steady#1\] .* measuring")
        pid = host_run_pid(project, h[3])
        project.ssh(h[3], f"kill -STOP {pid}")  # sshd answers, pid and cwd are there: it just stands still
        # the bound: the rest of steady (10 s), then 3 x host-timeout; the 120 s more are the guard's
        code = run.finish(timeout=10 + 3 * 6 + 120)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        if pid is not None:
            project.ssh(h[3], f"kill -CONT {pid}", check=False)
    out = run.output
    assert code == 0, out  # bench itself: what finished is recorded; collect decides the exit status
    assert "Traceback" not in out
    assert re.search(rf"gave up on {h[3]}: stalled: its host run's heartbeat stopped", out), out
    assert re.search(rf"run \S+ is partial; lost host\(s\): {h[3]} \(stalled", out), out
    assert f"{h[4]} went on without the barrier coordinator" in out, out
    run_id = run_id_of(out)
    meta = json.loads((project.path / "runs" / run_id / "meta.json").read_text())
    assert meta["lost_hosts"] == [h[3]] and meta["status"] == "partial"
    assert h[4] in meta["alone_phases"] and h[3] not in meta["alone_phases"]
    first, second = meta["phase_starts"]  # the servers' host (h1) is in the barrier too: alone as well
    assert first["alone"] == [] and h[4] in second["alone"], meta["phase_starts"]
    collected = project.inv("collect", "--spawn", spawn, "--run", run_id, "--allow-partial")
    assert "Traceback" not in collected.stdout + collected.stderr
    assert run_json(project, run_id)["status"] == "partial"
    project.inv("down", "--spawn", spawn)
    nothing_of_ours_left(project, (h[0], h[3], h[4]))


# -- escape sequences from a host never reach the terminal --------------------------------------------

HOSTILE = '''
import sys


async def make(ctx):
    sys.stderr.write("\\x1b]0;pwned\\x07 the window title is mine\\n")
    sys.stderr.flush()
    raise RuntimeError("\\x1b[2J\\x1b[H the screen is cleared")
'''
PYTHON = """
[[benchmark]]
name = "hostile"
workload = "python"
agents = 2
iterations = 10
params = { target = "hostile_loads.title:make", modules = ["hostile_loads"] }
"""


def test_no_escape_byte_from_a_host_reaches_the_terminal(project):
    h = project.hosts
    (project.path / "hostile_loads").mkdir(exist_ok=True)
    (project.path / "hostile_loads" / "__init__.py").write_text("")
    (project.path / "hostile_loads" / "title.py").write_text(HOSTILE)
    spawn = str(project.write_spawn("hostile.toml", HEAD + PYTHON))
    project.inv("deploy", "--spawn", spawn)
    run = Running(project, "bench", "--spawn", spawn)
    code = run.finish(timeout=300)
    out = run.output
    assert code == 0, out
    assert "the window title is mine" in out and "failed" in out, out  # the host's words are shown ...
    assert "\x1b" not in out and "\x07" not in out  # ... never obeyed
    assert "\\x1b]0;pwned\\x07" in out
    status = project.inv("status", "--spawn", spawn, "--run", run_id_of(out))
    assert "\x1b" not in status.stdout + status.stderr
    project.inv("down", "--spawn", spawn)
    nothing_of_ours_left(project, (h[0], h[3], h[4]))
