"""Server nodes on a host: start detached, wait, stop by pid; run for real with sh against a private HOME."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from fabfile.remote.shell import REMOTE_DIR, RemoteError
from fabfile.servers import nodes
from fabfile.servers.nodes import Node


def _sleeper(cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["sleep", "60"], cwd=cwd)


def test_node_stop_refuses_a_pid_that_is_not_that_node(local_host, tmp_path):
    stranger = _sleeper(tmp_path / "stranger")
    node_dir_proc = _sleeper(local_host.home / REMOTE_DIR / "nodes" / "7001")
    try:
        nodes.stop(local_host, Node("local", "127.0.0.1", 7001, 0, pid=stranger.pid), timeout=1)
        assert stranger.poll() is None  # its cwd is not the node's directory: untouched
        node = Node("local", "127.0.0.1", 7001, 0, pid=node_dir_proc.pid)
        assert nodes.alive(local_host, node)
        nodes.stop(local_host, node, timeout=2)
        assert node_dir_proc.wait(timeout=5) is not None
        assert not nodes.alive(local_host, node)
    finally:
        for p in (stranger, node_dir_proc):
            p.kill()
            p.wait()


def test_node_start_records_the_pid_of_the_process_it_started(local_host, tmp_path):
    script = local_host.home / REMOTE_DIR / "bin" / "server.pex"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho started \"$@\" > server.log\nexec sleep 30\n")
    script.chmod(0o700)
    node = Node("local", "127.0.0.1", 7002, 0)
    began = time.monotonic()
    pid = nodes.start(local_host, node, f"{REMOTE_DIR}/bin/server.pex", ["--port", "7002", "a b"])
    try:
        assert time.monotonic() - began < 10  # detached: start does not wait for the server
        # setsid, nohup and the pex's boot script all exec: the pid becomes the server's own.
        deadline = time.monotonic() + 5
        while open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the recorded pid never became the server"
            time.sleep(0.05)
        started = Node("local", "127.0.0.1", 7002, 0, pid=pid)
        nodes.wait_until(local_host, started, lambda: (local_host.home / node.dir / "server.log").exists(), "log", 5)
        assert nodes.alive(local_host, started)
        assert "started --port 7002 a b" in nodes.log_tail(local_host, started)
    finally:
        os.kill(pid, 9)


def test_wait_until_reports_a_dead_server_with_its_log(local_host):
    script = local_host.home / REMOTE_DIR / "bin" / "bad.pex"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho 'Address already in use' > server.log\nexit 1\n")
    script.chmod(0o700)
    node = Node("local", "127.0.0.1", 7003, 0)
    pid = nodes.start(local_host, node, f"{REMOTE_DIR}/bin/bad.pex", [])
    time.sleep(0.2)
    with pytest.raises(RemoteError) as err:
        nodes.wait_until(local_host, Node("local", "127.0.0.1", 7003, 0, pid=pid), lambda: False, "ping", 5)
    assert "exited" in str(err.value) and "Address already in use" in str(err.value)


def test_node_start_first_stops_a_leftover_of_ours_in_that_node_directory(local_host, tmp_path):
    script = local_host.home / REMOTE_DIR / "bin" / "server.pex"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o700)
    node = Node("local", "127.0.0.1", 7004, 0)
    leftover = _sleeper(local_host.home / node.dir)  # e.g. from a deploy that was killed
    stranger = _sleeper(tmp_path / "elsewhere")
    pid = nodes.start(local_host, node, f"{REMOTE_DIR}/bin/server.pex", [])
    try:
        assert leftover.wait(timeout=5) == -9
        assert stranger.poll() is None
    finally:
        os.kill(pid, 9)
        for p in (leftover, stranger):
            p.kill()
            p.wait()


def test_a_nodes_secrets_reach_it_through_stdin_and_0600_files_never_a_command_line(local_host):
    secret = "tok'en $(touch pwned) `id` \"q\""
    script = local_host.home / REMOTE_DIR / "bin" / "server.pex"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\nprintf "%s" "$API_TOKEN" > seen.env\nexec sleep 30\n')
    script.chmod(0o700)
    node = Node("local", "127.0.0.1", 7004, 0)
    pid = nodes.start(local_host, node, f"{REMOTE_DIR}/bin/server.pex", ["--port", "7004"],
                      {"API_TOKEN": secret}, {"auth": secret})
    try:
        directory = local_host.home / node.dir
        deadline = time.monotonic() + 5
        while not (directory / "seen.env").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (directory / "seen.env").read_text() == secret  # the server's environment has it
        assert (directory / "auth").read_text() == secret
        assert (directory / "auth").stat().st_mode & 0o777 == 0o600
        assert not (directory / nodes.SECRETS).exists()  # the start script's copy is gone
        assert not (local_host.home / "pwned").exists()
        assert all(secret not in command and "tok" not in command for command in local_host.commands)
        assert secret.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()
    finally:
        os.kill(pid, 9)


def test_a_failed_start_names_what_failed_and_not_the_script(local_host):
    (local_host.home / REMOTE_DIR).mkdir()
    (local_host.home / REMOTE_DIR / "nodes").write_text("a file where the nodes directory goes")
    with pytest.raises(RemoteError) as raised:
        nodes.start(local_host, Node("local", "127.0.0.1", 7005, 0), "x.pex", [], {"T": "secret-value"})
    assert "start the server in ~/.fleetbench/nodes/7005" in str(raised.value)
    assert "secret-value" not in str(raised.value) and "setsid" not in str(raised.value)


def test_a_server_keeps_its_home_inside_its_node_directory(local_host):
    """What a server writes to ~ (gunicorn's ~/.gunicorn) goes with its node, never into the login's home."""
    script = local_host.home / REMOTE_DIR / "bin" / "server.pex"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\nmkdir -p "$HOME/.gunicorn" && echo "$HOME" > home.txt\nexec sleep 30\n')
    script.chmod(0o700)
    node = Node("local", "127.0.0.1", 7003, 0)
    before = sorted(p.name for p in local_host.home.iterdir())
    pid = nodes.start(local_host, node, f"{REMOTE_DIR}/bin/server.pex", [])
    try:
        said = local_host.home / node.dir / "home.txt"
        nodes.wait_until(local_host, Node("local", "127.0.0.1", 7003, 0, pid=pid), said.exists, "home.txt", 5)
        assert said.read_text().strip() == f"{local_host.home}/{node.dir}/{nodes.NODE_HOME}"
        assert (local_host.home / node.dir / nodes.NODE_HOME / ".gunicorn").is_dir()
        assert sorted(p.name for p in local_host.home.iterdir()) == before
    finally:
        os.kill(pid, 9)
