"""The pure parts of the two topologies: an unprivileged login user with a symlinked home, and
a fleet reached only through a bastion (no root, no namespaces)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from devtools.testbed import plan, sshd, users
from devtools.testbed.layout import Layout
from devtools.testbed.system import TestbedError

PASSWD = "root:x:0:0:root:/root:/bin/bash\nalice:x:2000:2000::/home/alice:/bin/sh\nbench:x:1000:1000::/x:/bin/sh\n"
GROUP = "root:x:0:\nalice:x:2000:\nstaff:x:2001:\n"


def test_a_login_user_gets_a_free_uid_and_replaces_a_same_named_entry():
    user = users.plan_user("bench", PASSWD, GROUP)
    assert (user.uid, user.gid) == (2002, 2002)  # 2000 and 2001 are taken
    text = users.passwd_text(PASSWD, user)
    assert text.splitlines()[-1] == "bench:*:2002:2002:fleetbench testbed:/home/bench:/bin/sh"
    assert [line for line in text.splitlines() if line.startswith("bench:")] == [text.splitlines()[-1]]
    assert users.group_text(GROUP, user).splitlines()[-1] == "bench:x:2002:"
    for bad in ("root", "Bench", "a b", "", "-x", "x" * 40):
        with pytest.raises(TestbedError, match="bad testbed user"):
            users.validate_user(bad)


def test_the_users_home_is_reached_through_a_symlink(tmp_path):
    user = users.LoginUser("bench", 2002, 2002)
    lines = [line.replace("/home", str(tmp_path / "home")).replace(f"chown {user.uid}:{user.gid}", "true")
             for line in users.home_lines(user)]
    (tmp_path / "home").mkdir()
    subprocess.run(["sh", "-ec", "\n".join(lines)], check=True, cwd=tmp_path / "home")
    home = tmp_path / "home" / "bench"
    assert home.is_symlink() and home.resolve() == tmp_path / "home" / "data" / "bench"
    assert home.resolve().stat().st_mode & 0o777 == 0o700


def test_host_script_binds_passwd_and_group_before_hiding_and_makes_the_home_after():
    user = users.LoginUser("bench", 2002, 2002)
    script = sshd.host_script(host_dir="/s/hosts/tb1", mount="/run/f/tb/tb1/sshd", etc_hosts="/s/etc_hosts",
                              hostname="tb1", argv=["/usr/sbin/sshd", "-D"], tmpfs=(*plan.HOST_TMPFS, ("/home", "755")),
                              passwd="/s/passwd", group="/s/group", home=users.home_lines(user))
    lines = script.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if key in line) for key in (
        "mount --bind /s/passwd /etc/passwd", "mount --bind /s/group /etc/group", "tmpfs /tmp", "tmpfs /home",
        "ln -s data/bench /home/bench", "exec /usr/sbin/sshd")}
    assert at["mount --bind /s/passwd /etc/passwd"] < at["tmpfs /tmp"]
    assert at["mount --bind /s/group /etc/group"] < at["tmpfs /tmp"]
    assert at["tmpfs /home"] < at["ln -s data/bench /home/bench"] < at["exec /usr/sbin/sshd"]
    assert "remount,bind,ro /etc/passwd" in script
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_the_bastion_plan_and_its_link():
    b = plan.bastion_plan("tb", 7)
    assert (b.name, b.address, b.netns, b.veth) == ("tb0", "10.213.7.10", "fb-tb0", "fbv-tb0")
    assert plan.outer_addresses(7) == ("10.213.7.1", "10.213.7.2")
    assert str(plan.outer_network(7)) == "10.213.7.0/30"
    hosts = {p.address for p in plan.plan_hosts("tb", 7, plan.MAX_HOSTS)}
    assert not hosts & {*plan.outer_addresses(7), b.address}  # no host shares an address with them
    assert len(plan.outer_link_name("abcdefgh")) <= 15
    assert plan.own_name("fb-tb0", "fb-tb") and plan.own_name("fb-tb10", "fb-tb")
    assert not plan.own_name("fb-tb01", "fb-tb") and not plan.own_name("fb-tbx", "fb-tb")


def test_layout_of_a_bastion_testbed(tmp_path):
    lay = Layout(tmp_path, prefix="tb", subnet=7, bastion=True)
    assert lay.ssh_address(plan.bastion_plan("tb", 7)) == "10.213.7.2"  # the controller's way in
    assert lay.ssh_address(plan.plan_hosts("tb", 7, 1)[0]) == "10.213.7.11"
    assert lay.uplink_device == "fbo-tb" and lay.login == "root"
    assert Layout(tmp_path, prefix="tb", subnet=7).uplink_device == "fbbr-tb"


def test_ssh_config_with_a_jump_host_and_a_user(tmp_path):
    text = sshd.ssh_config_text([("tb0", "10.213.7.2"), ("tb1", "10.213.7.11")], key_path="/k", known_hosts_path="/kh",
                                user="bench", proxy_jump={"tb1": "tb0"})
    cfg_file = tmp_path / "ssh_config"
    cfg_file.write_text(text)
    cfg = paramiko.SSHConfig.from_path(str(cfg_file))
    assert cfg.lookup("tb1")["proxyjump"] == "tb0" and cfg.lookup("tb1")["user"] == "bench"
    assert "proxyjump" not in cfg.lookup("tb0")
    if Path("/usr/bin/ssh").exists():
        out = subprocess.run(["ssh", "-F", str(cfg_file), "-G", "tb1"], capture_output=True, text=True,
                             check=True).stdout
        assert "proxyjump tb0" in out.splitlines() and "user bench" in out.splitlines()


def test_listening_reads_the_namespace_socket_table(tmp_path):
    import os
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        assert sshd.listening(os.getpid(), "127.0.0.1", port)
        assert not sshd.listening(os.getpid(), "127.0.0.2", port)
    finally:
        server.close()
    assert not sshd.listening(os.getpid(), "127.0.0.1", port)
