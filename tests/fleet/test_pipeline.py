"""The whole pipeline on a real local fleet: real sshd, real pex builds, real redis-server."""

from __future__ import annotations

import json
import os
import re

import pytest

from bench.wire import hist

pytestmark = pytest.mark.fleet

SPAWN = """
name = "e2e"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4", "$h5"]
[server]
kind = "redis-cluster"
port = 7100
[[benchmark]]
name = "set"
workload = "set"
agents = 3
iterations = 3000
connections = 2
pipeline = 4
[[benchmark]]
name = "get-zipf"
workload = "get"
agents = 2
iterations = 2000
params = { distribution = "zipf", keyspace = 500 }
[[benchmark]]
name = "setbit"
workload = "setbit"
agents = 2
duration = "1s"
pipeline = 8
"""


def _row(table: str, name: str) -> list:
    for line in table.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "  "):
            return line.split()
    raise AssertionError(f"no row for {name!r} in:\n{table}")


def test_deploy_bench_collect_in_one_call_then_noop_redeploy_then_down(project):
    project.reset()
    spawn = project.write_spawn("e2e.toml", SPAWN)
    out = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                      "collect", "--spawn", str(spawn)).stdout
    h = project.hosts
    assert "redis cluster ok: 3 nodes" in out
    # One multi-platform pex served hosts with different interpreters (3.9 and 3.12 where present).
    versions = next(line for line in out.splitlines() if line.startswith("hosts run python"))
    assert "3.11" in versions
    for host, exe in project.pythons.items():
        assert exe.rsplit("python", 1)[1] in versions, (host, exe, versions)
    # One row per benchmark, with real throughput.
    for name in ("set", "setbit"):
        row = _row(out, name)
        assert float(row[5].replace(",", "")) > 0, row
    run_dir = project.path / "runs" / "latest"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["schema_version"] == 1 and run["status"] == "ok"
    by_name = {b["name"]: b for b in run["benchmarks"]}
    assert by_name["set"]["ops"] == 3000 and by_name["set"]["errors"] == 0
    assert by_name["get-zipf"]["ops"] == 2000
    assert by_name["setbit"]["ops"] > 0
    for b in run["benchmarks"]:
        assert hist.decode(b["histogram"]).get_total_count() == b["ops"]
    # Raw agent outputs, the spawn file and the deployment are kept beside it.
    assert len(list((run_dir / "agents" / "set").glob("agent-*.json"))) == 3
    assert (run_dir / "spawn.toml").read_text() == project.spawn(SPAWN)
    deployment = json.loads((run_dir / "deployment.json").read_text())
    assert len(deployment["nodes"]) == 3 and all(n["pid"] > 0 for n in deployment["nodes"])

    # Agents ran round-robin over the agent hosts, each told its number.
    hosts = {json.loads(p.read_text())["result"]["agent_num"]: json.loads(p.read_text())["result"]["host"]
             for p in (run_dir / "agents" / "set").glob("agent-*.json")}
    assert sorted(hosts) == [0, 1, 2] and hosts[0] == hosts[2] != hosts[1]

    # Nothing changed: nothing rebuilt, pushed or restarted.
    again = project.inv("deploy", "--spawn", str(spawn)).stdout
    assert "pushed 0 file(s)" in again and "nothing to restart" in again
    assert "building" not in again

    # fab ad-hoc on the same hosts.
    listing = project.fab("--list").stdout
    for name in ("status", "push", "logs", "stop"):
        assert re.search(rf"^\s+{name}\b", listing, re.M), listing
    status = project.fab("-H", f"{h[0]},{h[3]}", "status").stdout
    assert f"[{h[0]}]" in status and "node 7100: pid" in status and "running" in status
    assert f"[{h[3]}]" in status
    logs = project.fab("-H", h[1], "logs").stdout
    assert "server.log" in logs

    project.inv("down", "--spawn", str(spawn))
    for host in (h[0], h[3]):
        left = project.ssh(host, "ls -a ~; pgrep -f fleetbench || true").stdout
        assert ".fleetbench" not in left, left


def test_fab_push_verifies_and_skips_a_file_already_there(project):
    h = project.hosts
    payload = project.path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 4096)  # binary, 1 MiB: would be corrupted by in_stream
    first = project.fab("-H", h[1], "push", "--file", str(payload)).stdout
    assert "pushed" in first
    second = project.fab("-H", h[1], "push", "--file", str(payload)).stdout
    assert "already there" in second
    digest = project.ssh(h[1], "sha256sum ~/.fleetbench/files/payload.bin; stat -c %a ~/.fleetbench").stdout
    import hashlib

    assert hashlib.sha256(payload.read_bytes()).hexdigest() in digest
    assert digest.split()[-1] == "700"
    project.fab("-H", h[1], "stop")
    project.ssh(h[1], "rm -rf ~/.fleetbench")


def test_unreachable_host_is_named_before_anything_starts(project):
    subnet = os.environ.get("FLEETBENCH_TEST_SUBNET", "251")
    unreachable = f"10.213.{subnet}.250"  # in the testbed's own subnet, where no host answers
    project.reset()
    spawn = project.write_spawn("bad-host.toml", SPAWN.replace('"$h2"', f'"root@{unreachable}:22"'))
    proc = project.inv("deploy", "--spawn", str(spawn), check=False, timeout=120)
    assert proc.returncode == 1
    assert f"root@{unreachable}:22" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing was started on the good hosts.
    assert not project.ssh(project.hosts[0], "ls ~/.fleetbench/nodes 2>/dev/null || true").stdout.strip()


def test_server_that_does_not_come_up_shows_its_log_and_leaves_nothing_running(project):
    h = project.hosts
    project.reset()  # a first deploy: when it fails, it leaves the hosts as it found them
    # Occupy the port on ft2 so its redis-server fails to bind.
    project.ssh(h[1], "nohup python3 -c 'import socket,time,sys; s=socket.socket(); "
                       "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                       "s.bind((sys.argv[1], 7200)); s.listen(); time.sleep(120)' "
                       "$(hostname -I | cut -d' ' -f1) >/dev/null 2>&1 & echo started")
    spawn = project.write_spawn("port-taken.toml", SPAWN.replace("port = 7100", "port = 7200"))
    try:
        proc = project.inv("deploy", "--spawn", str(spawn), check=False, timeout=300)
        assert proc.returncode == 1, proc.stdout
        assert h[1] in proc.stderr and "Address already in use" in proc.stderr, proc.stderr
        for host in (h[0], h[2]):
            left = project.ssh(host, "pgrep -af redis-server || true").stdout
            assert "7200" not in left, left
        assert "the failed deploy left nothing on the hosts" in proc.stdout, proc.stdout
        for host in h[:5]:  # nothing of ours: no pushed pex, no deploy lock
            assert project.ssh(host, "ls -A ~/.fleetbench 2>&1 || true").stdout.strip().endswith(
                "No such file or directory"), host
    finally:
        project.ssh(h[1], "pkill -f 'time[.]sleep[(]120' || true", check=False)  # [.] so it cannot match its own shell
        project.inv("down", "--spawn", str(spawn), check=False)
