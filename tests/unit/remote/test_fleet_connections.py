"""What makes a fleet's connections cheap, checked for doing the same as what it replaced:
the indexed ssh_config lookup, one Config shared by a fleet's connections, and commands run
straight on a channel (against paramiko's server side, in-process)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from fabfile.remote import ssh
from fabfile.remote.fleet import Fleet
from fabfile.remote.host import SshHost, TimedOut
from fabfile.remote.ssh import SshSettings

SSH_CONFIG = """\
Host h1
    HostName 10.0.0.1
    User one
Host h2 h3
    HostName 10.0.0.23
    IdentityFile /keys/h23
Host h1*
    Port 2201
    IdentityFile /keys/h1star
Host * !h3
    ForwardAgent yes
Match originalhost h4
    User four
Host h2
    User shadowed
Host web?
    User web
Host tok
    HostName tok.example
    IdentityFile ~/.ssh/id_%h_%r
    ProxyCommand nc %h %p
    UserKnownHostsFile ~/known_%n
Host *
    User anybody
    IdentityFile /keys/default
    ConnectTimeout 7
"""


@pytest.mark.parametrize("name", ["h1", "h2", "h3", "h4", "h10", "h1x", "web1", "web12", "other", "H1", "tok"])
def test_the_indexed_lookup_gives_what_paramiko_gives(name: str) -> None:
    plain, indexed = paramiko.SSHConfig(), ssh.IndexedSSHConfig()
    plain.parse(SSH_CONFIG.splitlines())
    indexed.parse(SSH_CONFIG.splitlines())
    assert indexed.lookup(name) == plain.lookup(name)


def test_the_index_follows_a_later_parse() -> None:
    config = ssh.IndexedSSHConfig()
    config.parse(["Host a", "    User first"])
    assert config.lookup("a")["user"] == "first" and "user" not in config.lookup("b")
    config.parse(["Host b", "    User second"])
    assert config.lookup("b")["user"] == "second"


def test_a_fleet_shares_one_config_and_nothing_leaks_between_hosts(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host n{i}\n    HostName 10.0.0.{i}\n    IdentityFile /keys/n{i}\n"
                              for i in range(1, 4)))
    fleet = Fleet(["n1", "n2", "n3"], SshSettings((config,)))
    c1, c2, c3 = (fleet.connections[n] for n in ("n1", "n2", "n3"))
    assert c1.config is c2.config is c3.config
    assert [c.connect_kwargs["key_filename"] for c in (c1, c2, c3)] == [["/keys/n1"], ["/keys/n2"], ["/keys/n3"]]
    assert dict(c1.config.connect_kwargs) == {}  # Fabric would have written key_filename here
    assert [c.fleetbench_name for c in (c1, c2, c3)] == ["n1", "n2", "n3"]
    assert "fleetbench_name" not in c1.config and [c.host for c in (c1, c2, c3)] == ["10.0.0.1", "10.0.0.2",
                                                                                     "10.0.0.3"]


class _ExecServer(paramiko.ServerInterface):
    """Answers ``exec`` requests from a table: command -> (stdout, stderr, exit status);
    ``sleep`` never answers."""

    replies = {"hello": (b"out\n", b"err\n", 3), "big": (b"o" * 3_000_000, b"e" * 3_000_000, 0)}

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        reply = self.replies.get(command.decode())
        if reply is not None:
            threading.Thread(target=self._answer, args=(channel, *reply), daemon=True).start()
        return True

    @staticmethod
    def _answer(channel: paramiko.Channel, out: bytes, err: bytes, status: int) -> None:
        writers = [threading.Thread(target=channel.sendall, args=(out,)),
                   threading.Thread(target=channel.sendall_stderr, args=(err,))]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        channel.send_exit_status(status)
        channel.shutdown_write()
        channel.close()


@pytest.fixture
def connected(tmp_path: Path) -> Iterator[ssh.FleetConnection]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    host_key = paramiko.ECDSAKey.generate()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        client, _ = listener.accept()
        t = paramiko.Transport(client)
        t.add_server_key(host_key)
        transports.append(t)
        t.start_server(server=_ExecServer())

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host box\n    HostName 127.0.0.1\n    Port {port}\n    UserKnownHostsFile {known}\n")
    settings = SshSettings((config,), connect_timeout=5)
    c = ssh.connection("box", settings)
    c.connect_kwargs.update(password="pw", allow_agent=False, look_for_keys=False)
    ssh.open_checked(c, settings)
    yield c
    c.close()
    listener.close()
    for t in transports:
        t.close()


def test_a_command_runs_on_a_channel_with_its_output_and_status(connected: ssh.FleetConnection) -> None:
    result = SshHost(connected).run("hello")
    assert (result.text, result.err_text, result.exited) == ("out\n", "err\n", 3)


def test_both_streams_are_read_as_they_come(connected: ssh.FleetConnection) -> None:
    result = SshHost(connected).run("big", timeout=60)
    assert (len(result.stdout), len(result.stderr), result.exited) == (3_000_000, 3_000_000, 0)


def test_a_command_that_never_answers_times_out(connected: ssh.FleetConnection) -> None:
    with pytest.raises(TimedOut) as caught:
        SshHost(connected).run("sleep", timeout=0.5)
    assert caught.value.timeout == 0.5


def test_the_indexed_known_hosts_lookup_gives_what_paramiko_gives(tmp_path: Path) -> None:
    keys = [paramiko.ECDSAKey.generate() for _ in range(4)]
    hashed = paramiko.HostKeys.hash_host("[10.0.0.9]:2222")
    lines = [f"10.0.0.1 {keys[0].get_name()} {keys[0].get_base64()}",
             f"10.0.0.2,[10.0.0.9]:2222 {keys[1].get_name()} {keys[1].get_base64()}",
             f"{hashed} {keys[2].get_name()} {keys[2].get_base64()}",
             f"10.0.0.1 {keys[3].get_name()} {keys[3].get_base64()}"]
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    plain, indexed = paramiko.HostKeys(str(path)), ssh.IndexedHostKeys()
    indexed.load(str(path))
    for name in ("10.0.0.1", "10.0.0.2", "[10.0.0.9]:2222", "10.0.0.3"):
        want, got = plain.lookup(name), indexed.lookup(name)
        assert (None if want is None else dict(want)) == (None if got is None else dict(got)), name


def test_the_fleet_config_reads_like_fabrics_own() -> None:
    from fabric import Config

    ours, theirs = ssh.fleet_config(paramiko.SSHConfig()), Config(overrides={"runners": {"remote": ssh.PromptRemote}})
    assert ours.runners.remote is theirs.runners.remote is ssh.PromptRemote
    assert dict(ours.connect_kwargs) == dict(theirs.connect_kwargs) and ours.timeouts.connect == theirs.timeouts.connect
    section = ours.connect_kwargs
    assert section._keypath == ("connect_kwargs",) and section._root is ours  # a section of this root
    assert ours._is_root and not ours._is_leaf and section._is_leaf
    with pytest.raises(AttributeError):
        ours.no_such_setting  # noqa: B018
