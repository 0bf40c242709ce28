"""The install step of a push, run for real with sh against a private HOME."""

from __future__ import annotations

import hashlib
import stat

import pytest

from fabfile.remote.shell import REMOTE_DIR, RemoteError, private_dir_command, run
from fabfile.ship.push import install_command


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
