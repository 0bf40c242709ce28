"""A push: its install step run for real with sh against a private HOME; the controller's side
(what is sent, when nothing is, how a failure is named) against a fake host."""

from __future__ import annotations

import hashlib
import stat

import pytest

from fabfile.remote.host import Output
from fabfile.remote.shell import REMOTE_DIR, RemoteError, private_dir_command, run
from fabfile.ship.push import CHUNK, install_command, push, sha256_file
from tests.unit.fakes import FakeHost, FakeProcess


def test_install_command_renames_only_a_verified_file(local_host):
    run(local_host, private_dir_command("bin"))
    tmp = f"{REMOTE_DIR}/bin/x.part-1"
    (local_host.home / tmp).write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    run(local_host, install_command(tmp, f"{REMOTE_DIR}/bin/x.pex", good))
    final = local_host.home / REMOTE_DIR / "bin" / "x.pex"
    assert final.read_bytes() == b"payload"
    assert stat.S_IMODE(final.stat().st_mode) == 0o700
    assert not (local_host.home / tmp).exists()


def test_install_command_deletes_a_corrupt_file(local_host):
    run(local_host, private_dir_command("bin"))
    tmp = f"{REMOTE_DIR}/bin/y.part-1"
    (local_host.home / tmp).write_bytes(b"corrupted")
    with pytest.raises(RemoteError) as err:
        run(local_host, install_command(tmp, f"{REMOTE_DIR}/bin/y.pex", "0" * 64))
    assert "sha256 mismatch" in str(err.value)
    assert not (local_host.home / tmp).exists()
    assert not (local_host.home / REMOTE_DIR / "bin" / "y.pex").exists()


# -- the controller's side of a push, against a fake host -------------------------------------


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "thing.pex"
    path.write_bytes(bytes(range(256)) * 9000)  # > 2 chunks: streamed in pieces
    return path


def test_a_host_that_has_the_file_is_sent_nothing(blob):
    h = FakeHost("h1").on(r"echo have", "have\n")
    assert push(h, blob, f"{REMOTE_DIR}/bin/thing.pex", sha256_file(blob)) is False
    (process,) = h.processes
    assert process.received == b"" and process.closed


def test_a_host_that_wants_the_file_gets_every_byte_in_chunks_and_its_stdin_closed(blob):
    h = FakeHost("h1").on(r"echo have", "send\n")
    shown: list[tuple[str, int, int]] = []
    assert push(h, blob, f"{REMOTE_DIR}/bin/thing.pex", sha256_file(blob),
                progress=lambda *a: shown.append(a)) is True
    (process,) = h.processes
    assert bytes(process.received) == blob.read_bytes() and process.stdin_closed
    assert [sent for _, sent, _ in shown] == [CHUNK, 2 * CHUNK, blob.stat().st_size]


def test_a_failed_transfer_names_the_host_the_step_and_the_hosts_own_error(blob):
    h = FakeHost("h1").on(r"echo have", Output(1, b"send\n", b"cat: write error: No space left on device\n"))
    with pytest.raises(RemoteError) as caught:
        push(h, blob, f"{REMOTE_DIR}/bin/thing.pex", sha256_file(blob))
    assert str(caught.value).startswith(f"h1: `cat > ~/{REMOTE_DIR}/bin/thing.pex.part-PID-")
    assert "No space left on device" in str(caught.value) and caught.value.exit_code == 1


def test_an_unexpected_answer_is_refused_before_anything_is_sent(blob):
    h = FakeHost("h1").on(r"echo have", "sh: sha256sum: not found\n", exited=127)
    with pytest.raises(RemoteError, match=r"^h1: .* \(exit 127\)"):
        push(h, blob, f"{REMOTE_DIR}/bin/thing.pex", sha256_file(blob))
    assert h.processes[0].received == b""


def test_a_connection_lost_mid_transfer_says_so(blob):
    h = FakeHost("h1").on(r"echo have", "send\n")
    real_send = FakeProcess.send

    def cut(process: FakeProcess, data: bytes) -> None:
        real_send(process, data)
        h.lost = True  # gone after the first chunk

    with pytest.MonkeyPatch.context() as m:
        m.setattr(FakeProcess, "send", cut)
        with pytest.raises(RemoteError, match=r"^h1: `cat > .*` failed:\n.*the connection was lost"):
            push(h, blob, f"{REMOTE_DIR}/bin/thing.pex", sha256_file(blob))
    assert len(h.processes[0].received) == CHUNK
