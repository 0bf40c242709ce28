"""A node started, checked and stopped by the real remote shell, with a home reached through a
symlink (``/home -> /data/home``): the kernel reports the server's cwd by its real path."""

from __future__ import annotations

import time
from pathlib import Path

from fabfile.servers import nodes
from fabfile.servers.nodes import Node


def test_alive_and_stop_through_a_symlinked_home(tmp_path, local_host):
    real = tmp_path / "data" / "home" / "alice"
    real.mkdir(parents=True)
    (tmp_path / "homes").symlink_to(tmp_path / "data" / "home", target_is_directory=True)
    local_host.home = tmp_path / "homes" / "alice"
    server = real / "server.sh"
    server.write_text("#!/bin/sh\nexec sleep 60\n")
    server.chmod(0o755)
    node = Node(host="local", address="127.0.0.1", port=7123, index=0)
    pid = nodes.start(local_host, node, "server.sh", [])
    node = Node(host="local", address="127.0.0.1", port=7123, index=0, pid=pid)
    assert nodes.alive(local_host, node)
    assert Path(f"/proc/{pid}/cwd").resolve() == real / ".fleetbench" / "nodes" / "7123"
    other = Node(host="local", address="127.0.0.1", port=7124, index=1, pid=pid)  # not its directory
    assert not nodes.alive(local_host, other)
    nodes.stop(local_host, node, timeout=5)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and deadline > time.monotonic():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if ") Z" in stat:
            break
        time.sleep(0.05)
    assert not nodes.alive(local_host, node)
