"""fabfile.runs.observe's shell, run for real with sh against a private HOME: bounded fetches
(gzip'd), a server log kept scrubbed; and ``host_section`` over a run directory. (The sampler
and the facts a host run starts are checked on the testbed: tests/fleet/test_observe.py.)"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runfactory import T0, make_run, sample, spread

from fabfile.remote.shell import BIN_DIR, REMOTE_DIR
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


def test_fetch_of_a_missing_file_is_empty(host):
    assert sh_bytes(host.home, observe.fetch_command(f"{REMOTE_DIR}/nothing")) == b""


def test_a_kept_server_log_is_scrubbed_and_gzipped(host, tmp_path):
    from fabfile import terminal

    terminal.hide("log-secret-42")
    log = host.home / REMOTE_DIR / "nodes" / "7000" / "server.log"
    log.parent.mkdir(parents=True)
    log.write_text("started\nrequirepass log-secret-42\n")
    run_dir = RunDir(tmp_path / "runs", RUN_ID)
    observe.keep_log(run_dir, "s1", "7000-server.log.gz", sh_bytes(host.home, observe.log_command(
        f"{REMOTE_DIR}/nodes/7000/server.log")))
    (kept,) = (run_dir.path / "hosts" / "s1" / "logs").iterdir()
    assert gzip.decompress(kept.read_bytes()) == b"started\nrequirepass ***\n"


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
