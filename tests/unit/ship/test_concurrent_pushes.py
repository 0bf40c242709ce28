"""Two controllers pushing to one host at once, and strangers at a relay hop's listener: the
real push command under ``sh`` and the real hop program, on this machine."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.agent import hop
from fabfile.ship.push import PART, push_command
from fabfile.ship.relay import HOP_SOURCE

REMOTE = ".fleetbench/bin/thing.pex"


def _gone_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".fleetbench" / "bin").mkdir(parents=True)
    return tmp_path


def _push(home: Path, data: bytes, sha256: str, tag: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", push_command(REMOTE, sha256, tag)], cwd=home, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"HOME": str(home), "PATH": os.environ["PATH"]})


def test_a_push_never_deletes_another_push_at_work(home: Path) -> None:
    data = os.urandom(256 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    first = _push(home, data, sha, "aaaa")
    assert first.stdout.readline() == b"send\n"
    first.stdin.write(data[:1000])  # first is mid-transfer ...
    first.stdin.flush()
    second = _push(home, data, sha, "bbbb")  # ... when a second controller pushes the same file
    out, err = second.communicate(data, timeout=30)
    assert (second.returncode, out) == (0, b"send\n"), err
    first.stdin.write(data[1000:])
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err  # its temp file survived the other install
    assert hashlib.sha256((home / REMOTE).read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in (home / REMOTE).parent.iterdir()) == ["thing.pex"]


def test_an_install_removes_only_temps_whose_writer_is_gone(home: Path) -> None:
    bin_dir = home / ".fleetbench" / "bin"
    alive = bin_dir / f"thing.pex{PART}{os.getpid()}-live"  # this test process: alive
    dead = bin_dir / f"thing.pex{PART}{_gone_pid()}-dead"
    old = bin_dir / f"thing.pex{PART}deadbeef"  # a name from before the writer's pid was in it
    for p in (alive, dead, old):
        p.write_bytes(b"partial")
    data = b"the file"
    push = _push(home, data, hashlib.sha256(data).hexdigest(), "t")
    push.communicate(data, timeout=30)
    assert push.returncode == 0
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(["thing.pex", alive.name])
    # The relay hop follows the same rule for the temp files it finds.
    dead.write_bytes(b"partial")
    hop.remove_stale_temps(str(bin_dir / f"thing.pex{PART}"))
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(["thing.pex", alive.name])
    assert hop.own_temp({"tmp": f"x{PART}abcd", "leftovers": f"x{PART}"}) == f"x{PART}{os.getpid()}-abcd"


class Hop:
    """The hop program as a local process whose HOME is ``home``."""

    def __init__(self, home: Path, setup: dict):
        self.proc = subprocess.Popen([sys.executable, "-c", HOP_SOURCE], cwd=home, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={"HOME": str(home), "PATH": os.environ["PATH"]})
        self.send(setup)

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def message(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def close(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err.decode()


def _setup(data: bytes, bind: str, token: str = "ab" * 32, link_timeout: float = 3) -> dict:
    return {"source": "peer", "path": REMOTE, "tmp": REMOTE + PART + "x", "leftovers": REMOTE + PART,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "token": token, "bind": bind,
            "timeout": 10, "link_timeout": link_timeout}


def test_a_silent_stranger_cannot_hold_the_link(home: Path) -> None:
    """The stranger connects first and trickles one byte; the real upstream still links at once
    (were connections read one at a time, the hop would wait on the stranger past its
    3 s link timeout and report the link as never made)."""
    data = os.urandom(4096)
    h = Hop(home, _setup(data, "127.0.0.1"))
    strangers = []
    try:
        port = h.message()["port"]
        h.send({"next": None})
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"x")
            strangers.append(s)
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer.sendall(bytes.fromhex("ab" * 32))
        assert peer.recv(1) == b"\x06"
        assert h.message() == {"linked": True}
        peer.sendall(data)
        peer.close()
        assert h.message()["ok"] is True
    finally:
        for s in strangers:
            s.close()
        h.close()
    assert hashlib.sha256((home / REMOTE).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_listener_binds_only_the_fleet_address(home: Path) -> None:
    data = b"x"
    h = Hop(home, _setup(data, "127.0.0.2"))
    try:
        port = h.message()["port"]
        with pytest.raises(ConnectionRefusedError):  # the same port on another local address
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        h.close()
    elsewhere = Hop(home, _setup(data, "203.0.113.7"))  # not an address of this machine
    answer = elsewhere.message()
    elsewhere.close()
    assert answer["ok"] is False and "cannot listen on 203.0.113.7" in answer["error"]
