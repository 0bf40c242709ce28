"""The shell we send to hosts, run for real with sh against a private HOME: quoting, errors, the private directory."""

from __future__ import annotations

import stat

import pytest

from fabfile.remote.shell import REMOTE_DIR, RemoteError, cmd, private_dir_command, run

HOSTILE = ["plain", "with space", "it's", 'double"quote', "semi;colon", "$(touch pwned)", "`touch pwned`",
           "new\nline", "back\\slash", "*", "-n", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_cmd_quotes_every_part_so_data_never_runs(local_host, value):
    out = run(local_host, "printf '%s|' " + cmd(value, value))
    assert out == f"{value}|{value}|"
    assert not (local_host.home / "pwned").exists()


def test_failed_command_names_host_command_and_output_tail(local_host):
    with pytest.raises(RemoteError) as err:
        run(local_host, "echo first >&2; echo boom >&2; exit 7")
    message = str(err.value)
    assert message.startswith("local: `echo first")
    assert "(exit 7)" in message and "boom" in message


def test_private_dir_is_0700(local_host):
    run(local_host, private_dir_command("bin", "nodes"))
    base = local_host.home / REMOTE_DIR
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert (base / "bin").is_dir() and (base / "nodes").is_dir()
