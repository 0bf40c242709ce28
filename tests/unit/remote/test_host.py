"""The Host seam over SSH (fabfile.remote.host.SshHost) against a real SSH server: paramiko's
server side, in-process, running each command with ``sh`` on this machine in a private HOME.
Every way a command can answer: output, exit status, stdin, a bound, a timeout, a stream."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from fabfile.remote import ssh
from fabfile.remote.host import HostLost, SshHost, TimedOut
from fabfile.remote.ssh import SshSettings
from fabfile.remote.streams import HostDataError
from tests.unit.remote.test_ssh import SshServer, _Server


class _ExecServer(_Server):
    """Logs in as test_ssh's server does, and runs what it is asked with ``sh`` in ``home``."""

    def __init__(self, home: Path):
        self.home = home

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_execute, args=(channel, command.decode(), self.home), daemon=True).start()
        return True


def _execute(channel: paramiko.Channel, command: str, home: Path) -> None:
    """What sshd does with an exec request: the command's stdin, stdout and stderr are the channel's."""
    proc = subprocess.Popen(["sh", "-c", command], cwd=home, env={"HOME": str(home), "PATH": os.environ["PATH"]},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed() -> None:
        try:
            while chunk := channel.recv(1 << 16):
                proc.stdin.write(chunk)
                proc.stdin.flush()
        except (OSError, EOFError):
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def pump(read, send) -> None:
        try:
            while chunk := read(1 << 16):
                send(chunk)
        except (OSError, EOFError):
            pass

    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=pump, args=(proc.stdout.read1, channel.sendall), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr.read1, channel.sendall_stderr), daemon=True)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    status = proc.wait()
    try:  # the client closes the channel: closed first, a quick command could beat the exec's reply
        channel.send_exit_status(status)
        channel.shutdown_write()
    except (OSError, EOFError):
        pass
    if proc.poll() is None:
        proc.kill()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def host(home: Path, tmp_path: Path) -> Iterator[SshHost]:
    server = SshServer(paramiko.ECDSAKey.generate(), lambda: _ExecServer(home))
    key = server.host_key
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {key.get_name()} {key.get_base64()}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host box\n    HostName 127.0.0.1\n    Port {server.port}\n    User bench\n"
                      f"    UserKnownHostsFile {known}\n")
    settings = SshSettings((config,), connect_timeout=5)
    c = ssh.connection("box", settings)
    c.connect_kwargs.update(password="pw", allow_agent=False, look_for_keys=False)
    ssh.open_checked(c, settings)
    yield SshHost(c)
    c.close()
    server.close()


def test_a_command_answers_with_its_output_and_exit_status(host: SshHost) -> None:
    out = host.run("echo out; echo err >&2; exit 3", timeout=30)
    assert (out.exited, out.text, out.err_text) == (3, "out\n", "err\n")
    assert host.name == "box"


def test_a_command_runs_in_the_logins_home_with_the_bundled_python_first_on_its_path(host: SshHost,
                                                                                    home: Path) -> None:
    assert host.run('printf %s "$PWD"', timeout=30).text == str(home)
    host.connection.fleetbench_path = "/opt/fleetbench python/bin"
    assert host.run('printf %s "$PATH"', timeout=30).text.startswith("/opt/fleetbench python/bin:")


def test_a_command_that_outlives_its_timeout_says_so_with_what_it_said(host: SshHost) -> None:
    with pytest.raises(TimedOut) as caught:
        host.run("echo started; exec sleep 30", timeout=0.5)
    assert caught.value.output.text == "started\n" and caught.value.timeout == 0.5


def test_binary_stdin_arrives_intact_and_stdout_comes_back_as_bytes(host: SshHost) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value: no decoding on the way
    out = host.run_input("sha256sum; cat >/dev/null", data, timeout=30, limit=1 << 10)
    assert out.exited == 0 and out.text.split()[0] == hashlib.sha256(data).hexdigest()
    echoed = host.run_input("cat", data, timeout=30, limit=len(data))
    assert echoed.stdout == data


def test_stdout_beyond_the_bound_is_refused_naming_the_host_and_command(host: SshHost) -> None:
    with pytest.raises(HostDataError, match=r"^box: `head -c 300000 /dev/zero` sent more than"):
        host.run_input("head -c 300000 /dev/zero", b"", timeout=30, limit=100_000)


def test_only_the_tail_of_a_long_stderr_is_kept(host: SshHost) -> None:
    out = host.run_input("head -c 200000 /dev/zero | tr '\\0' x >&2; echo end >&2; exit 4", b"",
                         timeout=30, limit=10)
    assert out.exited == 4 and out.stderr.endswith(b"xxend\n") and len(out.stderr) == 1 << 16


def test_a_command_silent_for_its_timeout_is_a_lost_host(host: SshHost) -> None:
    with pytest.raises(HostLost, match="nothing came for 0.5 s"):
        host.run_input("exec sleep 30", b"", timeout=0.5, limit=10)


def test_a_closed_connection_is_not_reopened_behind_the_callers_back(host: SshHost) -> None:
    host.connection.close()
    with pytest.raises(HostLost, match="not connected"):
        host.run_input("true", b"", timeout=5, limit=10)


def test_a_started_command_is_streamed_into_and_read_line_by_line(host: SshHost, home: Path) -> None:
    process = host.start("echo ready; cat > got; echo done; echo bye >&2; exit 5")
    try:
        assert process.read_line(10) == b"ready"
        for _ in range(3):
            process.send(b"x" * 500_000)
        process.close_stdin()
        assert process.read_line(10) == b"done"
        assert process.read_line(10) is None and process.ended
        assert process.exit_status() == 5 and process.stderr() == b"bye\n"
        assert process.connected()
    finally:
        process.close()
    assert (home / "got").read_bytes() == b"x" * 1_500_000


def test_a_line_that_does_not_come_in_time_is_none_with_the_partial_line_kept(host: SshHost) -> None:
    process = host.start("printf part; exec sleep 30")
    try:
        assert process.read_line(0.5) is None and not process.ended
        assert process.unread == b"part"
        assert process.exit_status(wait=False) is None
    finally:
        process.close()
