"""Finding and stopping our processes on a host, run for real with sh against a private HOME."""

from __future__ import annotations

import subprocess

from fabfile.remote import reaper
from fabfile.remote.shell import REMOTE_DIR


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
        out = subprocess.run(["/bin/sh", "-c", reaper.find_command()],
                             env={"HOME": str(linked_home), "PATH": "/nowhere"},
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
