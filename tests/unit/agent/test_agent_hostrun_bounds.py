"""The host run, bounded on the host (issue 20): an agent's stderr file is capped (its tail kept,
its offsets unchanged), and the state's heartbeat moves while nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.agent import hostrun
from bench.wire import hostrun as wire
from tests.unit.agent.test_agent_hostrun import job, plan, start, state, wait_for, write_run

FLOOD = """import sys
chunk = b"x" * 65535 + b"\\n"
for _ in range({chunks}):
    sys.stderr.buffer.write(chunk)
sys.stderr.buffer.write(b"the last line\\n")
sys.stderr.flush()
"""


def test_a_flooded_stderr_file_is_cut_to_its_tail_its_size_and_offsets_unchanged(tmp_path):
    path = tmp_path / "agent-0.stderr"
    cap, keep = 1 << 20, 256 << 10
    with open(path, "wb") as err:  # written by another process, at its own file position
        writer = subprocess.Popen([sys.executable, "-c", FLOOD.format(chunks=64)], stderr=err)
        writer.wait(60)
    size = path.stat().st_size
    assert size > 4 << 20
    assert hostrun.cap_file(str(path), cap, keep) is True
    st = path.stat()
    assert st.st_size == size  # a reader following it by offset is not thrown off
    assert st.st_blocks * 512 <= keep + (64 << 10)  # the disk it takes: about the tail only
    with open(path, "rb") as f:
        f.seek(size - len(b"the last line\n"))
        assert f.read() == b"the last line\n"
        f.seek(size - keep)
        assert b"\0" not in f.read()  # the tail is whole
    assert hostrun.cap_file(str(path), cap, keep) is False  # under the cap now


def test_an_agent_flooding_its_stderr_does_not_fill_the_hosts_disk(tmp_path):
    """A whole host run: its agent writes 24 MiB to stderr; on disk the file stays near the cap."""
    p = plan(tmp_path, [[job("set", 0, duration=1.5)]])
    flood_agent = tmp_path / "flood-agent"
    flood_agent.write_text(
        f"#!{sys.executable}\nimport os, sys, time\nargs = sys.argv[1:]\nout = args[args.index('--out') + 1]\n"
        "start = args[args.index('--start-file') + 1]\nopen(start + '.ready', 'w').close()\n"
        "chunk = b'y' * 65535 + b'\\n'\nfor _ in range(384):\n    sys.stderr.buffer.write(chunk)\n"
        "    sys.stderr.flush()\n    time.sleep(0.002)\n"
        "sys.stderr.buffer.write(b'the end\\n')\nsys.stderr.flush()\ntime.sleep(1)\n")
    flood_agent.chmod(0o700)
    p["agent_pex"] = str(flood_agent)
    run_dir = write_run(tmp_path, p)
    assert start(run_dir, "--detach").returncode == 0
    wait_for(run_dir, timeout=60)
    stderr = run_dir / "set" / "agent-0.stderr"
    st = stderr.stat()
    assert st.st_size == 384 * 65536 + len(b"the end\n")
    assert st.st_blocks * 512 <= wire.HOST_STDERR_CAP_BYTES + (2 << 20), st.st_blocks * 512
    with open(stderr, "rb") as f:
        f.seek(-len(b"the end\n"), os.SEEK_END)
        assert f.read() == b"the end\n"


def test_the_heartbeat_moves_while_nothing_else_does(tmp_path):
    run_dir = write_run(tmp_path, plan(tmp_path, [[job("set", 0, duration=3 * wire.HEARTBEAT_S)]]))
    assert start(run_dir, "--detach").returncode == 0
    wait_for(run_dir, statuses=("running",))
    deadline = time.monotonic() + 10
    while state(run_dir)["agents"]["set/agent-0"].get("start_at") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first = state(run_dir)
    time.sleep(wire.HEARTBEAT_S * 1.5 + 0.5)
    later = state(run_dir)
    assert later["status"] == "running" and later["agents"] == first["agents"]  # nothing changed ...
    assert later["updated_at"] > first["updated_at"]  # ... but the heartbeat
    assert wait_for(run_dir)["status"] == "done"
