"""Starting and coordinating a run that no stranger, broken host or second controller can wedge
(issue 20): a flood of idle connections to the barrier's port mid-run, one host that cannot start,
two `inv bench` at once on the same hosts.

Each test names the README failure row it proves. Servers on h1, agents on h4 (the barrier's
coordinator: the first agent host) and h5. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import re
import shlex
import threading

import pytest

from fabfile.runs.hostrun import run_path
from tests.fleet.test_faults import Running, deployed
from tests.fleet.test_hostrun import run_id_of, run_json

pytestmark = pytest.mark.fleet

HEAD = """
name = "guards"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "redis"
port = 7340
"""
STEADY = """
[[benchmark]]
name = "during"
workload = "set"
agents = 2
duration = "DURATION"
"""
AFTER = """
[[benchmark]]
name = "after"
workload = "set"
agents = 2
iterations = 4000
"""

# Up to WANT idle connections to ADDRESS:PORT held for SECONDS from another host; each one the
# coordinator closes is opened again (at most 200 a second): a sustained flood. Prints its counts.
FLOOD = r'''
import json, select, socket, sys, time
address, port, seconds, want = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
end = time.monotonic() + seconds
held, made, closed, failed = {}, 0, 0, 0
poller = select.poll()
while time.monotonic() < end:
    while len(held) < want and time.monotonic() < end:
        try:
            s = socket.create_connection((address, port), timeout=2)
        except OSError:
            failed += 1
            break
        held[s.fileno()] = s
        poller.register(s, select.POLLIN)
        made += 1
        if made > want:
            time.sleep(0.005)
    for fd, _ in poller.poll(50):
        s = held.pop(fd)
        poller.unregister(fd)
        s.close()
        closed += 1
print(json.dumps({"made": made, "closed_by_coordinator": closed, "failed": failed, "held_at_end": len(held)}))
'''


def spawn_file(project, name: str, duration: str, after: bool = False) -> str:
    return str(project.write_spawn(name, HEAD + STEADY.replace("DURATION", duration) + (AFTER if after else "")))


def host_runs(project, host: str) -> list[str]:
    """The processes on ``host`` that belong to a run (their cwd is under ~/.fleetbench/runs)."""
    out = project.ssh(host, 'for p in /proc/[0-9]*; do c=$(readlink "$p/cwd" 2>/dev/null) || continue; '
                            'case "$c" in "$HOME"/.fleetbench/runs/*) echo "${p#/proc/} $c";; esac; done').stdout
    return out.split("\n") if out.strip() else []


def coordinator_of(project, host: str, run_id: str) -> tuple[int, str, int]:
    """(host run pid, address, port) of the barrier coordinator living in ``host``'s host run."""
    state = f"~/{run_path(run_id)}/_run/state.json"
    pid = int(project.ssh(host, f"python3 -c 'import json, sys; print(json.load(sys.stdin)[\"pid\"])' <{state}").stdout)
    listening = project.ssh(host, "ss -ltnpH").stdout
    found = re.search(rf"(\d+\.\d+\.\d+\.\d+):(\d+)\s.*pid={pid},", listening)
    assert found, listening
    return pid, found.group(1), int(found.group(2))


# -- README: "A stranger floods the barrier's port" ------------------------------------------------

def test_a_flood_of_idle_connections_to_the_coordinator_fails_no_agent(project):
    h = project.hosts
    spawn = spawn_file(project, "flood.toml", "12s", after=True)
    deployed(project, spawn)
    run = Running(project, "bench", "--spawn", spawn, "--verbose", "collect", "--spawn", spawn)
    run.wait_for(r"during#\d\] .* measuring", count=2)
    pid, address, port = coordinator_of(project, h[3], run_id_of(run.output))
    project.ssh(h[3], f"prlimit --pid {pid} --nofile=1024:1024")  # a stock limit on the coordinator's host run
    report: dict = {}

    def flood() -> None:  # from another host of the fleet, for longer than the rest of phase 1
        out = project.ssh(h[5], f"ulimit -n 4096 && python3 -c {shlex.quote(FLOOD)} {address} {port} 25 1200").stdout
        report.update(json.loads(out))

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    code = run.finish(timeout=300)
    flooder.join(60)
    out = f"flood: {report}\n{run.output}"
    assert code == 0, out
    assert "Traceback" not in out
    merged = run_json(project, run_id_of(out))
    assert merged["status"] == "ok", out
    assert [(b["name"], b["agents_ok"]) for b in merged["benchmarks"]] == [("during", 2), ("after", 2)], out
    assert report.get("made", 0) >= 1200, out  # the flood did reach the coordinator, past its file limit


# -- README: "One host cannot start the run" -------------------------------------------------------

def test_a_host_that_cannot_start_leaves_nothing_running_and_the_next_bench_free(project):
    h = project.hosts
    spawn = spawn_file(project, "no-start.toml", "60s")
    agent_pex = deployed(project, spawn)["artifacts"]["agent"]["remote_path"]
    project.ssh(h[4], f"chmod 600 ~/{agent_pex}")  # h5 cannot start its host run: its pex is not executable
    try:
        proc = project.inv("bench", "--spawn", spawn, check=False, timeout=300)
    finally:
        project.ssh(h[4], f"chmod 700 ~/{agent_pex}")
    assert proc.returncode == 1, proc.stdout
    err = proc.stderr
    assert "Traceback" not in err
    assert f"{h[4]}: `" in err and "hostrun --dir" in err and "Permission denied" in err, err  # host, command, output
    run_id = run_id_of(proc.stdout)
    assert f"run {run_id} did not start: stopped it on " in err, err
    assert "stopping it on the 2 host(s) already started" in proc.stdout, proc.stdout
    for host in (h[0], h[3]):
        assert host_runs(project, host) == [], host  # stopped before the error was reported
    meta = json.loads((project.path / "runs" / run_id / "meta.json").read_text())
    assert meta["status"] == "failed" and f"{h[4]}:" in meta["start_error"]
    assert (project.path / "runs" / run_id / "hosts" / h[3] / "metrics.ndjson").exists()  # what they measured
    again = project.inv("bench", "--spawn", spawn, "--detach")  # not blocked by a leftover run
    assert "started on 3 host(s)" in again.stdout, again.stdout
    project.inv("down", "--spawn", spawn)


# -- README: "Two `inv bench` at once on the same hosts" -------------------------------------------

def test_two_benches_at_once_on_the_same_hosts_cannot_both_start(project):
    h = project.hosts
    spawn = spawn_file(project, "twice.toml", "30s")
    project.reset()  # no run directory of an earlier test on the hosts
    deployed(project, spawn)
    first, second = (Running(project, "bench", "--spawn", spawn, "--detach") for _ in range(2))
    codes = [first.finish(), second.finish()]
    try:
        assert sorted(codes) == [0, 1], first.output + "\n---\n" + second.output
        loser = (first, second)[codes.index(1)].output
        assert "Traceback" not in loser
        assert re.search(r"deploying is locked by .*\(bench guards, from .*pid \d+\)|is still running run", loser), \
            loser
        for host in (h[0], h[3], h[4]):
            assert len(project.ssh(host, "ls ~/.fleetbench/runs").stdout.split()) == 1, host  # one run started
    finally:
        project.inv("down", "--spawn", spawn)
