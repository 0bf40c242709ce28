"""fabfile.runs.observe's shell, run for real with sh against a private HOME, with a stand-in agent pex
(a script that runs this checkout's ``bench.agent``): start a sampler detached, fetch what it
wrote (gzip'd), stop it, gather facts; and ``host_section`` over a run directory."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runfactory import T0, make_run, sample, spread

from fabfile.remote.shell import BIN_DIR, REMOTE_DIR, run
from fabfile.runs import observe
from fabfile.runs.store import RunDir

RUN_ID = "20260101-000000-t-abcd"
PEX = f"{BIN_DIR}/agent-0123.pex"


@pytest.fixture
def host(local_host):
    pex = local_host.home / PEX
    pex.parent.mkdir(parents=True)
    pex.write_text(f"#!/bin/sh\nexec {sys.executable} -m bench.agent \"$@\"\n")
    pex.chmod(0o700)
    return local_host


def sh_bytes(home: Path, command: str) -> bytes:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(["sh", "-c", command], cwd=home, env=env, capture_output=True, check=True).stdout


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_sampler_starts_detached_in_the_run_dir_writes_and_stops(host):
    node_dir = host.home / REMOTE_DIR / "nodes" / "7000"
    node_dir.mkdir(parents=True)
    (node_dir / "server.pid").write_text(f"{os.getpid()}\n")  # watch this test's own process
    pid = int(run(host, observe.sampler_command(PEX, RUN_ID, [f"{REMOTE_DIR}/nodes/7000/server.pid"], 60)).strip())
    try:
        work = host.home / observe.remote_dir(RUN_ID)
        assert os.readlink(f"/proc/{pid}/cwd") == str(work)  # so the reaper finds it
        metrics = work / observe.METRICS
        wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, "two samples")
        first = json.loads(metrics.read_text().splitlines()[0])
        assert first["procs"][str(os.getpid())]["pid_file"].endswith("nodes/7000/server.pid")

        data = sh_bytes(host.home, observe.fetch_command(f"{observe.remote_dir(RUN_ID)}/{observe.METRICS}"))
        assert data.startswith(observe.GZIP_MAGIC)  # compressed on the host
        lines = observe.unpack(data).splitlines()
        tail = observe.unpack(sh_bytes(host.home, observe.fetch_command(
            f"{observe.remote_dir(RUN_ID)}/{observe.METRICS}", len(lines[0]) + 1))).splitlines()
        assert tail[:len(lines) - 1] == lines[1:]  # from an offset: only what follows
    finally:
        run(host, observe.stop_command(RUN_ID, pid))
    assert not alive(pid)
    assert "Traceback" not in (work / observe.SAMPLER_LOG).read_text()


def test_stop_leaves_a_process_that_is_not_ours(host):
    stranger = subprocess.Popen(["sleep", "30"], cwd="/")
    try:
        run(host, observe.stop_command(RUN_ID, stranger.pid))
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_fetch_of_a_missing_file_is_empty(host):
    assert sh_bytes(host.home, observe.fetch_command(f"{REMOTE_DIR}/nothing")) == b""


def test_facts_list_the_pexes_with_their_hashes(host):
    facts = json.loads(run(host, observe.facts_command(PEX, RUN_ID)).strip().splitlines()[-1])
    assert facts["schema"] == "fleetbench.host-facts/1" and facts["logical_cores"] >= 1
    (pex,) = facts["pex"]
    assert pex["name"] == "agent-0123.pex" and len(pex["sha256"]) == 64
    assert (host.home / observe.remote_dir(RUN_ID) / observe.FACTS).is_file()


def test_unpack_passes_plain_bytes_through():
    assert observe.unpack(gzip.compress(b"a\n")) == b"a\n" and observe.unpack(b"a\n") == b"a\n"


def test_host_section_from_a_run_directory(tmp_path):
    run_dir = RunDir(tmp_path, RUN_ID)
    run = make_run(RUN_ID, [("set", spread(100, 20))])
    run["spawn"] = {"hosts": {"servers": ["s1"], "agents": ["a1"]}}
    assert observe.host_section(run_dir, run) == {}  # a run from before host metrics: no section
    run_dir.write_host_facts("s1", {"cpu_model": "x"})
    lines = [json.dumps(sample(T0 + i)).encode() + b"\n" for i in range(1, 4)]
    run_dir.append_host_metrics("s1", lines[0])  # as fetched after each phase
    run_dir.append_host_metrics("s1", b"".join(lines[1:]))
    section = observe.host_section(run_dir, run)
    assert list(section) == ["s1", "a1"]
    assert section["s1"]["facts"] == {"cpu_model": "x"} and section["s1"]["metrics"]["samples"] == 3
    assert section["s1"]["benchmarks"]["set"]["samples"] == 2
    assert section["a1"]["metrics"] is None


def test_fetches_from_a_host_are_bounded_on_the_host_and_here(tmp_path):
    import gzip
    import subprocess

    import pytest

    from fabfile.remote.streams import HostDataError

    (tmp_path / ".fleetbench").mkdir()
    (tmp_path / ".fleetbench" / "log").write_bytes(b"a" * 100_000 + b"THE END")

    def fetched(command: str) -> bytes:
        out = subprocess.run(["sh", "-c", command], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                             capture_output=True, check=True).stdout
        return observe.unpack(out, 200_000)

    assert fetched(observe.fetch_command(".fleetbench/log", 10, limit=1000)) == b"a" * 1000
    assert fetched(observe.fetch_command(".fleetbench/log", last=7)) == b"THE END"
    assert fetched(observe.fetch_command(".fleetbench/missing")) == b""
    with pytest.raises(HostDataError, match="inflates to more than"):
        observe.unpack(gzip.compress(bytes(10 << 20)), 1 << 20, "tb1: metrics")
