"""Host-key checking against a real SSH server (paramiko's server side, in-process).

Fabric alone accepts any host key; fleetbench must refuse an unknown host unless asked to
accept new ones, and always refuse a changed key, saying so clearly.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from fabfile.remote import ssh, transport
from fabfile.remote.ssh import ConnectError, SshSettings


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL if password == "pw" else paramiko.AUTH_FAILED


class SshServer:
    """Accepts SSH connections on 127.0.0.1 with ``host_key``; enough to test key checking
    (``interface`` says what else it does: see test_host's, which runs commands)."""

    def __init__(self, host_key: paramiko.PKey, interface: Callable[[], paramiko.ServerInterface] = _Server):
        self.host_key = host_key
        self.interface = interface
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(client)
            t.add_server_key(self.host_key)
            self.transports.append(t)
            try:
                t.start_server(server=self.interface())
            except (paramiko.SSHException, EOFError, OSError):
                pass

    def close(self) -> None:
        self.sock.close()
        for t in self.transports:
            t.close()


@pytest.fixture
def server() -> Iterator[SshServer]:
    s = SshServer(paramiko.ECDSAKey.generate())
    yield s
    s.close()


def _entry(port: int) -> str:
    return f"[127.0.0.1]:{port}"  # how known_hosts names a host on a port other than 22


def _connect(server: SshServer, tmp_path: Path, *, accept_new: bool = False, known_hosts: str = "",
             password: str = "pw") -> paramiko.Transport:
    """Open a checked connection the way the fleet does, with its own ssh_config and known_hosts."""
    kh = tmp_path / "known_hosts"
    if known_hosts and not kh.exists():
        kh.write_text(known_hosts)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host box\n    HostName 127.0.0.1\n    Port {server.port}\n    User bench\n"
                      f"    UserKnownHostsFile {kh}\n")
    settings = SshSettings((config,), accept_new_host_keys=accept_new, connect_timeout=5)
    c = ssh.connection("box", settings)
    c.connect_kwargs.update(password=password, allow_agent=False, look_for_keys=False)
    ssh.open_checked(c, settings)
    assert c.is_connected
    return c


def test_unknown_host_is_refused_by_default(server: SshServer, tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as caught:
        _connect(server, tmp_path)
    message = str(caught.value)
    assert message.startswith("box: unknown host key for 127.0.0.1")
    assert str(tmp_path / "known_hosts") in message and "--accept-new-host-keys" in message
    assert not (tmp_path / "known_hosts").exists()  # nothing was remembered


def test_known_host_is_accepted(server: SshServer, tmp_path: Path) -> None:
    key = server.host_key
    c = _connect(server, tmp_path, known_hosts=f"{_entry(server.port)} {key.get_name()} {key.get_base64()}\n")
    assert c.transport.get_remote_server_key() == key
    c.close()


def test_accept_new_remembers_the_key_then_checks_it(server: SshServer, tmp_path: Path) -> None:
    c = _connect(server, tmp_path, accept_new=True)
    c.close()
    lines = (tmp_path / "known_hosts").read_text().splitlines()
    key = server.host_key
    assert lines == [f"{_entry(server.port)} {key.get_name()} {key.get_base64()}"]
    # Remembered: a later connection without accept-new finds it.
    _connect(server, tmp_path).close()


def test_changed_key_is_refused_even_with_accept_new(server: SshServer, tmp_path: Path) -> None:
    old = paramiko.ECDSAKey.generate()
    recorded = f"{_entry(server.port)} {old.get_name()} {old.get_base64()}\n"
    for accept_new in (False, True):
        with pytest.raises(ConnectError) as caught:
            _connect(server, tmp_path, accept_new=accept_new, known_hosts=recorded)
        message = str(caught.value)
        assert message.startswith("box: host key for 127.0.0.1 has CHANGED")
        assert old.fingerprint in message and server.host_key.fingerprint in message
        assert f"ssh-keygen -R '{_entry(server.port)}'" in message
    assert (tmp_path / "known_hosts").read_text() == recorded  # never overwritten


def test_a_key_of_another_type_is_a_changed_key(server: SshServer, tmp_path: Path) -> None:
    other = paramiko.RSAKey.generate(1024)
    with pytest.raises(ConnectError, match="has CHANGED"):
        _connect(server, tmp_path, accept_new=True,
                 known_hosts=f"{_entry(server.port)} {other.get_name()} {other.get_base64()}\n")


def test_refused_login_names_the_host(server: SshServer, tmp_path: Path) -> None:
    key = server.host_key
    with pytest.raises(ConnectError) as caught:
        _connect(server, tmp_path, password="wrong",
                 known_hosts=f"{_entry(server.port)} {key.get_name()} {key.get_base64()}\n")
    assert str(caught.value).startswith(f"box: login refused for bench@127.0.0.1:{server.port}")


def test_unreachable_host_names_the_host(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gone\n    HostName 127.0.0.1\n    Port {port}\n    User bench\n")
    settings = SshSettings((config,), connect_timeout=5)
    with pytest.raises(ConnectError, match=rf"^gone: cannot reach bench@127.0.0.1:{port}: "):
        ssh.open_checked(ssh.connection("gone", settings), settings)


def test_fabric_alone_would_have_accepted_the_unknown_key(server: SshServer) -> None:
    """Why fleetbench secures every connection: a plain Fabric Connection checks nothing."""
    from fabric import Connection

    c = Connection("127.0.0.1", user="bench", port=server.port,
                   connect_kwargs={"password": "pw", "allow_agent": False, "look_for_keys": False})
    c.open()
    assert c.is_connected
    c.close()


def test_host_timeout_sets_keepalive_and_tcp_user_timeout(server: SshServer, tmp_path: Path) -> None:
    key = server.host_key
    c = _connect(server, tmp_path, known_hosts=f"{_entry(server.port)} {key.get_name()} {key.get_base64()}\n")
    intervals: list[int] = []
    c.transport.set_keepalive = intervals.append
    ssh.set_host_timeout(c, 6, keepalive_s=10)
    assert intervals == [2]  # keepalives keep something in flight, well within the timeout
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        assert c.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 6000
    c.close()


def test_known_hosts_are_parsed_once_per_version_of_the_file(tmp_path: Path) -> None:
    keys = [paramiko.ECDSAKey.generate() for _ in range(3)]
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(f"[10.0.0.{i}]:22 {k.get_name()} {k.get_base64()}\n" for i, k in enumerate(keys[:2])))
    first = ssh.known_host_keys([kh, tmp_path / "missing"])
    assert ssh.known_host_keys([kh, tmp_path / "missing"]) is first  # one parse for a whole fleet
    with open(kh, "a") as fh:  # accept-new appends: the next connection must see the new key
        fh.write(f"[10.0.0.2]:22 {keys[2].get_name()} {keys[2].get_base64()}\n")
    again = ssh.known_host_keys([kh, tmp_path / "missing"])
    assert again is not first and again.lookup("[10.0.0.2]:22")[keys[2].get_name()] == keys[2]


def test_a_connection_is_given_only_its_own_hosts_keys(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    keys = {f"10.0.0.{i}": paramiko.ECDSAKey.generate() for i in range(5)}
    kh.write_text("".join(f"{host} {k.get_name()} {k.get_base64()}\n" for host, k in keys.items()))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host box\n    HostName 10.0.0.3\n    UserKnownHostsFile {kh}\n")
    c = ssh.connection("box", SshSettings((config,)))
    held = c.client.get_host_keys()
    assert list(held.keys()) == ["10.0.0.3"] and held["10.0.0.3"]["ecdsa-sha2-nistp256"] == keys["10.0.0.3"]


def test_dialled_sockets_send_small_writes_at_once(server: SshServer) -> None:
    sock = transport.dial("127.0.0.1", server.port, timeout=5)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.recv(64).startswith(b"SSH-2.0-")  # reads (and acks) through the wrapper
    finally:
        sock.close()


def test_prompt_runner_wakes_on_the_exit_not_on_its_next_poll() -> None:
    """Invoke's runner looks for the exit every input_sleep; ours is woken by the exit itself."""
    class Channel:
        def __init__(self) -> None:
            self.status_event = threading.Event()

        def exit_status_ready(self) -> bool:
            return self.status_event.is_set()

    runner = ssh.PromptRemote.__new__(ssh.PromptRemote)  # only wait() is under test
    runner.channel, runner.threads, runner.input_sleep = Channel(), {}, 3600.0
    threading.Timer(0.05, runner.channel.status_event.set).start()
    waiter = threading.Thread(target=runner.wait)
    waiter.start()
    waiter.join(timeout=30)
    assert not waiter.is_alive()  # an hour-long poll would still be asleep
