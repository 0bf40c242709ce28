"""The relay fan-out with real hop processes on this machine (one private HOME per "host",
hops linked over loopback TCP): delivery, a corrupted link caught and redone, unreachable
hosts falling back to direct pushes, strangers refused, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from relay_proxy import Proxy

from fabfile.remote.host import Output
from fabfile.ship.push import push_command
from fabfile.ship.relay import HOP_COMMAND, HOP_SOURCE, File, HopFailed, HostHop, Relay, redo_source
from tests.unit.fakes import FakeHost

REMOTE = ".fleetbench/bin/thing.pex"
PY39 = next(iter(sorted(Path("/root/.pyenv/versions").glob("3.9*/bin/python3.9"))), None)


class LocalHop:
    """hop.py as a local process whose HOME is the host's directory."""

    def __init__(self, name: str, home: Path, python: str = sys.executable):
        self.name = name
        self.proc = subprocess.Popen([python, "-c", HOP_SOURCE], cwd=home, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={"HOME": str(home), "PATH": os.environ["PATH"]})
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def message(self, timeout: float) -> dict:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise HopFailed(f"{self.name}: no answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise HopFailed(f"{self.name}: exited: {self.proc.stderr.read().decode()[-500:]}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Fleet:
    """Hosts h1..hN, each a directory; records every hop started and every direct push."""

    def __init__(self, root: Path, count: int, python: str = sys.executable):
        self.homes = {f"h{i}": root / f"h{i}" for i in range(1, count + 1)}
        for home in self.homes.values():
            (home / ".fleetbench" / "bin").mkdir(parents=True)
        self.python = python
        self.started: list[str] = []
        self.direct: list[str] = []
        self.messages: list[str] = []

    @property
    def names(self) -> list[str]:
        return list(self.homes)

    def open_hop(self, name: str) -> LocalHop:
        self.started.append(name)
        return LocalHop(name, self.homes[name], self.python)

    def push_directly(self, payload: File) -> Callable[[list[str]], None]:
        def direct(names: list[str]) -> None:
            for name in names:
                self.direct.append(name)
                target = self.homes[name] / payload.remote_path
                target.write_bytes(payload.path.read_bytes())
        return direct

    def relay(self, **kwargs) -> Relay:
        return Relay(self.open_hop, lambda name: "127.0.0.1", echo=self.messages.append, link_timeout=5,
                     io_timeout=10, **kwargs)

    def digest(self, name: str) -> str | None:
        path = self.homes[name] / REMOTE
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    def leftovers(self) -> list[Path]:
        return [p for home in self.homes.values() for p in (home / ".fleetbench" / "bin").iterdir()
                if p.name != "thing.pex"]


@pytest.fixture
def payload(tmp_path: Path) -> File:
    path = tmp_path / "thing.pex"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return File("thing pex", path, hashlib.sha256(path.read_bytes()).hexdigest(), REMOTE)


def test_every_host_gets_a_verified_copy_through_one_chain(tmp_path: Path, payload: File) -> None:
    fleet = Fleet(tmp_path, 4)
    (fleet.homes["h2"] / (REMOTE + ".part-dead")).write_bytes(b"left by a push cut off with its host")
    progress: list[tuple[str, int, int]] = []
    how = fleet.relay(progress=lambda *a: progress.append(a)).send(
        payload, fleet.names, fleet.push_directly(payload))
    assert how == {n: "relay" for n in fleet.names}
    assert all(fleet.digest(n) == payload.sha256 for n in fleet.names)
    assert all((fleet.homes[n] / REMOTE).stat().st_mode & 0o777 == 0o700 for n in fleet.names)
    assert fleet.direct == [] and fleet.leftovers() == []  # h2's leftover went with the install
    # The controller sent the bytes once, into the head of the chain.
    assert {where for where, _, _ in progress} == {"h1 (+3 by relay)"}
    assert progress[-1][1:] == (payload.path.stat().st_size,) * 2


@pytest.mark.skipif(PY39 is None, reason="no pyenv Python 3.9 here")
def test_the_hop_runs_on_python_3_9(tmp_path: Path, payload: File) -> None:
    fleet = Fleet(tmp_path, 3, python=str(PY39))
    assert fleet.relay().send(payload, fleet.names, fleet.push_directly(payload)) == {n: "relay" for n in fleet.names}
    assert all(fleet.digest(n) == payload.sha256 for n in fleet.names)


def test_a_corrupted_link_is_caught_and_redone_from_a_verified_host(tmp_path: Path, payload: File) -> None:
    fleet = Fleet(tmp_path, 5)
    dialed: list[tuple[str, int]] = []
    proxies: list[Proxy] = []

    def dial(address: str, port: int) -> tuple[str, int]:
        dialed.append((address, port))
        if len(dialed) == 2:  # the link h2 -> h3 of the first chain flips a byte past the token
            proxies.append(Proxy((address, port), corrupt_at=32 + 1_000_000))
            return "127.0.0.1", proxies[0].port
        return address, port

    how = fleet.relay(dial=dial).send(payload, fleet.names, fleet.push_directly(payload))
    # h3 received a flipped byte and so did everyone behind it (they forward what arrives);
    # each refused its copy, and all three were redone from h1 (not h2, the suspect sender).
    assert how == {"h1": "relay", "h2": "relay", "h3": "relay from h1", "h4": "relay from h1",
                   "h5": "relay from h1"}
    assert all(fleet.digest(n) == payload.sha256 for n in fleet.names)
    assert fleet.direct == [] and fleet.leftovers() == []
    assert any("sha256 mismatch" in m and "h3" in m and "redoing from h1" in m for m in fleet.messages), fleet.messages
    # The redo did not cross the controller's uplink: its chain started at h1's own copy.
    assert sorted(fleet.started[5:]) == ["h1", "h3", "h4", "h5"]
    assert proxies[0].connections == 1


def test_hosts_that_cannot_reach_each_other_get_direct_pushes(tmp_path: Path, payload: File) -> None:
    fleet = Fleet(tmp_path, 4)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        how = fleet.relay(dial=lambda address, port: (address, dead_port)).send(
            payload, fleet.names, fleet.push_directly(payload))
    finally:
        closed.close()
    assert how == {n: "direct" for n in fleet.names}
    assert sorted(fleet.direct) == fleet.names
    assert all(fleet.digest(n) == payload.sha256 for n in fleet.names)
    assert fleet.leftovers() == []
    [message] = fleet.messages
    assert message.startswith("relay: hosts cannot reach each other (h1 -> h2: cannot reach 127.0.0.1:")
    assert "pushing thing pex directly to 4 host(s)" in message


def _hop(tmp_path: Path, setup: dict) -> LocalHop:
    home = tmp_path / "home"
    (home / ".fleetbench" / "bin").mkdir(parents=True, exist_ok=True)
    hop = LocalHop("h", home)
    hop.send((json.dumps(setup) + "\n").encode())
    return hop


def _setup(payload: File, kind: str = "peer", token: str = "ab" * 32) -> dict:
    return {"source": kind, "path": REMOTE, "tmp": REMOTE + ".part-x", "size": payload.path.stat().st_size,
            "sha256": payload.sha256, "token": token, "bind": "127.0.0.1", "timeout": 5, "link_timeout": 5}


def test_a_listener_refuses_strangers_and_serves_the_token_holder(tmp_path: Path, payload: File) -> None:
    hop = _hop(tmp_path, _setup(payload))
    try:
        port = hop.message(10)["port"]
        hop.send(b'{"next": null}\n')
        stranger = socket.create_connection(("127.0.0.1", port))
        stranger.sendall(b"x" * 32)
        assert stranger.recv(1) == b""  # dropped without an answer
        peer = socket.create_connection(("127.0.0.1", port))
        peer.sendall(bytes.fromhex("ab" * 32))
        assert peer.recv(1) == b"\x06"
        assert hop.message(10) == {"linked": True}
        # The listener closed as soon as the upstream was in: nobody else gets in.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        peer.sendall(payload.path.read_bytes())
        peer.close()
        assert hop.message(10)["ok"] is True
    finally:
        hop.close()
    assert b"refused a connection from 127.0.0.1 (wrong token)" in hop.proc.stderr.read()
    assert hashlib.sha256((tmp_path / "home" / REMOTE).read_bytes()).hexdigest() == payload.sha256


def test_a_listener_goes_away_when_the_controller_does(tmp_path: Path, payload: File) -> None:
    hop = _hop(tmp_path, _setup(payload))
    port = hop.message(10)["port"]
    hop.send(b'{"next": null}\n')
    hop.close_stdin()  # the controller called it off before the upstream came
    assert hop.message(10) == {"linked": False, "error": "the controller called the transfer off"}
    hop.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_cut_off_transfer_leaves_nothing(tmp_path: Path, payload: File) -> None:
    hop = _hop(tmp_path, _setup(payload, kind="stdin"))
    assert hop.message(10) == {"ready": True, "port": None}
    hop.send(b'{"next": null}\n')
    assert hop.message(10) == {"linked": True}
    hop.send(payload.path.read_bytes()[:1000])
    hop.close_stdin()
    answer = hop.message(10)
    hop.close()
    size = payload.path.stat().st_size
    assert answer["ok"] is False and answer["error"] == f"short transfer: 1000 of {size} bytes arrived"
    assert list((tmp_path / "home" / ".fleetbench" / "bin").iterdir()) == []


def test_redo_source_avoids_the_suspect_sender() -> None:
    chain = [None, "h1", "h2", "h3", "h4"]
    assert redo_source(chain, ["h3", "h4"], ["h1", "h2"]) == "h1"  # h2 sent the bad bytes
    assert redo_source(chain, ["h2", "h3", "h4"], ["h1"]) == "h1"  # the only one there is
    assert redo_source(chain, ["h1", "h2"], []) is None  # nobody verified: the controller again
    assert redo_source(["h1", "h2", "h3"], ["h3"], ["h2"]) == "h2"


@pytest.mark.parametrize("already", [False, True])
def test_push_command_checks_receives_verifies_and_installs_in_one_go(local_host, payload: File,
                                                                      already: bool) -> None:
    target = local_host.home / REMOTE
    target.parent.mkdir(parents=True)
    if already:
        target.write_bytes(payload.path.read_bytes())
    command = push_command(REMOTE, payload.sha256, "t")
    proc = subprocess.run(["sh", "-c", command], cwd=local_host.home, input=payload.path.read_bytes(),
                          capture_output=True, env={"HOME": str(local_host.home), "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (b"have\n" if already else b"send\n")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == payload.sha256
    assert target.stat().st_mode & 0o777 == (0o644 if already else 0o700)
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing.pex"]


def test_push_command_refuses_corrupt_bytes(local_host, payload: File) -> None:
    (local_host.home / ".fleetbench" / "bin").mkdir(parents=True)
    command = push_command(REMOTE, payload.sha256, "t")
    proc = subprocess.run(["sh", "-c", command], cwd=local_host.home, input=b"not the file",
                          capture_output=True, env={"HOME": str(local_host.home), "PATH": os.environ["PATH"]})
    assert proc.returncode == 3 and b"sha256 mismatch" in proc.stderr
    assert list((local_host.home / ".fleetbench" / "bin").iterdir()) == []


def test_a_hop_that_exits_is_named_with_its_exit_status_and_stderr() -> None:
    h = FakeHost("h2").on(r"python3 -c", Output(2, b'{"ready": true, "port": 4000}\n',
                                                 b"Traceback (most recent call last):\nOSError: no route to host\n"))
    hop = HostHop(h)
    assert hop.message(1) == {"ready": True, "port": 4000}
    with pytest.raises(HopFailed, match=r"(?s)^h2: the relay hop exited \(exit 2\):\n.*OSError: no route to host"):
        hop.message(1)
    hop.close()
    assert h.processes[0].closed and h.ran(r"python3 -c")[0].command == HOP_COMMAND
