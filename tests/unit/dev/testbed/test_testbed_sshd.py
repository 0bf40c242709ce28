"""What the testbed writes for ssh and runs as each host's sshd (no root, no sshd)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from devtools.testbed import plan
from devtools.testbed import sshd as tbm
from devtools.testbed.sshd import known_hosts_text, ssh_config_text
from devtools.testbed.system import TestbedError

# ---- client files -----------------------------------------------------------------------------


def test_ssh_config_text(tmp_path):
    text = ssh_config_text([("tb1", "10.213.0.11"), ("tb2", "10.213.0.12")],
                           key_path="/p/.testbed/id_ed25519", known_hosts_path="/p/.testbed/known_hosts")
    cfg_file = tmp_path / "ssh_config"
    cfg_file.write_text(text)
    cfg = paramiko.SSHConfig.from_path(str(cfg_file))
    one = cfg.lookup("tb1")
    assert one["hostname"] == "10.213.0.11"
    assert one["user"] == "root"
    assert one["port"] == "22"
    assert one["identityfile"] == ["/p/.testbed/id_ed25519"]
    assert one["identitiesonly"] == "yes"
    assert one["userknownhostsfile"] == "/p/.testbed/known_hosts"
    assert one["stricthostkeychecking"] == "yes"
    assert cfg.lookup("tb2")["hostname"] == "10.213.0.12"
    assert "10.213" not in cfg.lookup("other").get("hostname", "")


def test_ssh_config_quotes_paths_with_spaces():
    text = ssh_config_text([("tb1", "10.213.0.11")], key_path="/my dir/id", known_hosts_path="/my dir/kh")
    assert 'IdentityFile "/my dir/id"' in text
    assert 'UserKnownHostsFile "/my dir/kh"' in text


def test_ssh_config_accepted_by_openssh(tmp_path):
    if not Path("/usr/bin/ssh").exists():
        pytest.skip("no OpenSSH client")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config_text([("tb1", "10.213.0.11")], key_path=str(tmp_path / "id"),
                                   known_hosts_path=str(tmp_path / "kh")))
    out = subprocess.run(["ssh", "-F", str(cfg), "-G", "tb1"], capture_output=True, text=True, check=True).stdout
    opts = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert opts["hostname"] == "10.213.0.11"
    assert opts["user"] == "root"
    assert opts["stricthostkeychecking"] == "true"
    assert opts["userknownhostsfile"] == str(tmp_path / "kh")
    assert opts["identitiesonly"] == "yes"


def test_known_hosts_text_loads_in_paramiko(tmp_path):
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHgfkrSSUqMhD4yVTqm4EuXH+tjv/zOFnhn5MuhPINuY tb1@x"
    text = known_hosts_text([("tb1", "10.213.0.11", pub)])
    assert text == "tb1,10.213.0.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHgfkrSSUqMhD4yVTqm4EuXH+tjv/zOFnhn5MuhPINuY\n"
    f = tmp_path / "known_hosts"
    f.write_text(text)
    hk = paramiko.HostKeys(str(f))
    assert "ssh-ed25519" in hk.lookup("tb1")
    assert "ssh-ed25519" in hk.lookup("10.213.0.11")
    with pytest.raises(TestbedError):
        known_hosts_text([("tb1", "10.213.0.11", "garbage")])


def test_etc_hosts_text():
    text = plan.etc_hosts_text("127.0.0.1 localhost", [("tb1", "10.213.0.11")], "tb")
    assert text.splitlines() == ["127.0.0.1 localhost", "# fleetbench testbed 'tb'", "10.213.0.11\ttb1"]

# ---- what runs on a host ----------------------------------------------------------------------


def _script(**kw):
    argv = tbm.sshd_argv(sshd="/usr/sbin/sshd", mount="/run/fleetbench-testbed/tb/tb1/sshd", address="10.213.0.11",
                         ld_library_path=kw.pop("ld", None))
    return argv, tbm.host_script(host_dir="/tmp/p/.testbed/hosts/tb1", mount="/run/fleetbench-testbed/tb/tb1/sshd",
                                 etc_hosts="/tmp/p/.testbed/etc_hosts", hostname="tb1", argv=argv, **kw)


def test_sshd_argv_has_the_required_options():
    argv, _ = _script()
    assert argv[:4] == ["/usr/sbin/sshd", "-D", "-f", "/dev/null"]
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    for needed in (
        "HostKey=/run/fleetbench-testbed/tb/tb1/sshd/ssh_host_ed25519_key",
        "AuthorizedKeysFile=/run/fleetbench-testbed/tb/tb1/sshd/authorized_keys",
        "ListenAddress=10.213.0.11:22",
        "StrictModes=no",
        "PermitRootLogin=prohibit-password",
        "PasswordAuthentication=no",
        "UsePAM=no",
        "Subsystem=sftp internal-sftp",
        "MaxStartups=100",
        "MaxSessions=100",
    ):
        assert needed in opts
    assert any(o.startswith("PidFile=/run/fleetbench-testbed/tb/tb1/sshd/") for o in opts)
    assert argv[-2:] == ["-E", "/run/fleetbench-testbed/tb/tb1/sshd/sshd.log"]
    # The marker that identifies this host's processes is in its command line, tb10's is not.
    marker = tbm.host_marker(Path("/run/fleetbench-testbed/tb"), "tb1")
    assert marker in " ".join(argv)
    assert tbm.host_marker(Path("/run/fleetbench-testbed/tb"), "tb10") not in " ".join(argv)


def test_host_script_binds_before_hiding_and_ends_in_sshd():
    argv, script = _script(python_prefix="/root/.pyenv/versions/3.9.18",
                           python_mount="/run/fleetbench-testbed/tb/tb1/python", wrappers=("python3", "python3.9"),
                           ld="/run/fleetbench-testbed/tb/tb1/python/lib")
    lines = script.splitlines()
    assert lines[0] == "set -e"
    idx = {key: next(i for i, line in enumerate(lines) if key in line) for key in (
        "mount --bind /tmp/p/.testbed/hosts/tb1", "mount --bind /root/.pyenv", "remount,bind,ro /run/",
        "tmpfs /root", "tmpfs /tmp", "tmpfs /usr/local/bin", "cp ", "hostname tb1", "exec /usr/sbin/sshd")}
    assert idx["mount --bind /tmp/p/.testbed/hosts/tb1"] < idx["tmpfs /tmp"]
    assert idx["mount --bind /root/.pyenv"] < idx["remount,bind,ro /run/"] < idx["tmpfs /root"]
    assert idx["tmpfs /usr/local/bin"] < idx["cp "] < idx["exec /usr/sbin/sshd"]
    assert lines[-1].startswith("exec /usr/sbin/sshd -D")
    assert " -o SetEnv=LD_LIBRARY_PATH=/run/fleetbench-testbed/tb/tb1/python/lib " in lines[-1]
    assert "mode=700 tmpfs /root" in script and "mode=1777 tmpfs /tmp" in script
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_host_script_without_python_override():
    _, script = _script()
    assert ".pyenv" not in script and "cp " not in script and "SetEnv" not in script
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
