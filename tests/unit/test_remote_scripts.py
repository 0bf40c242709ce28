"""The shell we send to hosts, run for real with sh against a private HOME."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time

import pytest

from fabfile.remote import pool, reaper
from fabfile.remote.shell import REMOTE_DIR, RemoteError, cmd, private_dir_command, run
from fabfile.servers import nodes
from fabfile.servers.nodes import Node
from fabfile.ship.push import install_command

HOSTILE = ["plain", "with space", "it's", 'double"quote', "semi;colon", "$(touch pwned)", "`touch pwned`",
           "new\nline", "back\\slash", "*", "-n", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_cmd_quotes_every_part_so_data_never_runs(local_host, value):
    out = run(local_host, "printf '%s|' " + cmd(value, value))
    assert out == f"{value}|{value}|"
    assert not (local_host.home / "pwned").exists()


def test_failed_command_names_host_command_and_output_tail(local_host):
    with pytest.raises(RemoteError) as err:
        run(local_host, "echo first >&2; echo boom >&2; exit 7")
    message = str(err.value)
    assert message.startswith("local: `echo first")
    assert "(exit 7)" in message and "boom" in message


def test_private_dir_is_0700(local_host):
    run(local_host, private_dir_command("bin", "nodes"))
    base = local_host.home / REMOTE_DIR
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert (base / "bin").is_dir() and (base / "nodes").is_dir()


def test_install_command_renames_only_a_verified_file(local_host):
    run(local_host, private_dir_command("bin"))
    tmp = f"{REMOTE_DIR}/bin/x.part-1"
    (local_host.home / tmp).write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    run(local_host, install_command(tmp, f"{REMOTE_DIR}/bin/x.pex", good))
    final = local_host.home / REMOTE_DIR / "bin" / "x.pex"
    assert final.read_bytes() == b"payload"
    assert stat.S_IMODE(final.stat().st_mode) == 0o700
    assert not (local_host.home / tmp).exists()


def test_install_command_deletes_a_corrupt_file(local_host):
    run(local_host, private_dir_command("bin"))
    tmp = f"{REMOTE_DIR}/bin/y.part-1"
    (local_host.home / tmp).write_bytes(b"corrupted")
    with pytest.raises(RemoteError) as err:
        run(local_host, install_command(tmp, f"{REMOTE_DIR}/bin/y.pex", "0" * 64))
    assert "sha256 mismatch" in str(err.value)
    assert not (local_host.home / tmp).exists()
    assert not (local_host.home / REMOTE_DIR / "bin" / "y.pex").exists()


def _sleeper(cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["sleep", "60"], cwd=cwd)


def test_reaper_stops_only_processes_running_inside_our_directory(local_host, tmp_path):
    ours = _sleeper(local_host.home / REMOTE_DIR / "nodes" / "7000")
    theirs = _sleeper(tmp_path / "elsewhere")
    try:
        assert ours.pid in reaper.our_pids(local_host)
        assert theirs.pid not in reaper.our_pids(local_host)
        assert ours.pid in reaper.reap(local_host, grace_s=2)
        assert ours.wait(timeout=5) is not None
        assert theirs.poll() is None
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()


def test_finding_our_processes_runs_no_program(tmp_path):
    """A status asks every host for its processes of ours: shell built-ins only, so that asking
    forks nothing there. With no PATH at all it still finds them, through a symlinked HOME too."""
    real_home = tmp_path / "real-home"
    ours = _sleeper(real_home / REMOTE_DIR / "runs" / "r1" / "agent-1")
    linked_home = tmp_path / "home-link"
    linked_home.symlink_to(real_home)
    try:
        out = subprocess.run(["/bin/sh", "-c", reaper.find_command()], env={"HOME": str(linked_home), "PATH": "/nowhere"},
                             cwd="/", capture_output=True, text=True, check=True)
        assert out.stdout.split() == [str(ours.pid)] and out.stderr == ""
        # However it is composed, the shell doing the search never finds itself, and the
        # caller's working directory is left alone.
        for script in (f'pids=$({reaper.find_command()}); echo "$pids"; pwd',
                       f'{reaper.find_command()} | while read p; do echo "$p"; done; pwd'):
            inner = subprocess.run(["/bin/sh", "-c", script], env={"HOME": str(linked_home), "PATH": "/nowhere"},
                                   cwd="/", capture_output=True, text=True, check=True)
            assert inner.stdout.split() == [str(ours.pid), "/"], script
    finally:
        ours.kill()
        ours.wait()


def test_finding_our_processes_without_a_private_dir_finds_none(tmp_path):
    out = subprocess.run(["/bin/sh", "-c", reaper.find_command()], env={"HOME": str(tmp_path), "PATH": "/nowhere"},
                         capture_output=True, text=True, check=True)
    assert out.stdout == ""


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


def test_pool_runs_every_item_and_reports_every_failure():
    seen = []

    def work(x):
        seen.append(x)
        if x % 2:
            raise ValueError(f"odd {x}")
        return x * 10

    with pytest.raises(pool.PartialFailure) as err:
        pool.each(range(6), work, workers=3)
    assert sorted(seen) == list(range(6))
    assert err.value.results == {0: 0, 2: 20, 4: 40}
    assert sorted(err.value.failures) == [1, 3, 5]


def _fleet_of(host) -> Fleet:
    from fabfile.remote.fleet import Fleet

    fleet = Fleet.__new__(Fleet)  # no SSH: the preflight runs on the local stand-in
    fleet.connections = {host.original_host: host}
    return fleet


def test_preflight_probes_python_and_makes_the_private_dir_in_one_round_trip(local_host):
    info = _fleet_of(local_host)._preflight("local")
    assert len(local_host.commands) == 1
    assert tuple(int(x) for x in info.version.split(".")[:2]) >= (3, 9) and info.executable
    assert stat.S_IMODE((local_host.home / REMOTE_DIR).stat().st_mode) == 0o700
    assert (local_host.home / REMOTE_DIR / "runs").is_dir()


def test_preflight_names_a_host_without_python3_and_creates_nothing(local_host, tmp_path, monkeypatch):
    only_sh = tmp_path / "only-sh"
    only_sh.mkdir()
    (only_sh / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(only_sh))
    with pytest.raises(RemoteError) as err:
        _fleet_of(local_host)._preflight("local")
    assert str(err.value).startswith("local: ") and "no python3" in str(err.value)
    assert not (local_host.home / REMOTE_DIR).exists()


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
