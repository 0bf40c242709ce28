"""The testbed's pure parts: no root, no namespaces, no sshd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from fabfile.dev import testbed as tbm
from fabfile.dev.testbed import (
    PythonSpec,
    Testbed,
    TestbedError,
    known_hosts_text,
    network_for,
    parse_python_overrides,
    parse_rate,
    plan_hosts,
    ssh_config_text,
    tbf_args,
    validate_prefix,
)

# ---- python overrides -------------------------------------------------------------------------


def test_parse_overrides_basic():
    assert parse_python_overrides([]) == {}
    assert parse_python_overrides(["tb3=/root/.pyenv/versions/3.9.18/bin/python3.9"]) == {
        "tb3": "/root/.pyenv/versions/3.9.18/bin/python3.9"
    }
    got = parse_python_overrides([" tb1 = /usr/bin/python3.11 ", "*=/opt/py/bin/python3"])
    assert got == {"tb1": "/usr/bin/python3.11", "*": "/opt/py/bin/python3"}


def test_parse_overrides_single_string_and_tilde():
    assert parse_python_overrides("tb2=~/py") == {"tb2": os.path.expanduser("~/py")}


def test_parse_overrides_path_may_contain_equals():
    assert parse_python_overrides(["tb1=/opt/a=b/python3"]) == {"tb1": "/opt/a=b/python3"}


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("tb3", "'tb3'"),  # no '='
        ("=/usr/bin/python3", "no host name"),
        ("tb3=", "no interpreter path"),
        ("TB3=/usr/bin/python3", "'TB3'"),
        ("tb=/usr/bin/python3", "'tb'"),  # a prefix, not a host
        ("tb03=/usr/bin/python3", "'tb03'"),
        ("tb 3=/usr/bin/python3", "'tb 3'"),
    ],
)
def test_parse_overrides_errors_name_the_bad_value(bad, needle):
    with pytest.raises(TestbedError) as e:
        parse_python_overrides([bad])
    assert needle in str(e.value)


def test_parse_overrides_duplicate():
    with pytest.raises(TestbedError, match="tb1.*twice"):
        parse_python_overrides(["tb1=/a", "tb1=/b"])


# ---- names and addresses ----------------------------------------------------------------------


def test_plan_hosts_names_and_addresses():
    plans = plan_hosts("tb", 0, 5)
    assert [p.name for p in plans] == ["tb1", "tb2", "tb3", "tb4", "tb5"]
    assert [p.address for p in plans] == [f"10.213.0.{10 + i}" for i in range(1, 6)]
    assert [p.netns for p in plans] == [f"fb-tb{i}" for i in range(1, 6)]
    assert [p.veth for p in plans] == [f"fbv-tb{i}" for i in range(1, 6)]
    assert plans[0].index == 1


def test_plan_hosts_subnet_and_limits():
    plans = plan_hosts("tt", 250, tbm.MAX_HOSTS)
    assert plans[-1].address == "10.213.250.254"
    addresses = {p.address for p in plans}
    assert len(addresses) == tbm.MAX_HOSTS
    assert "10.213.250.1" not in addresses  # the bridge's (controller's) address
    longest = plan_hosts("abcdefgh", 1, tbm.MAX_HOSTS)
    assert max(len(p.veth) for p in longest) <= 15
    assert len(tbm.bridge_name("abcdefgh")) <= 15
    with pytest.raises(TestbedError, match="host count"):
        plan_hosts("tb", 0, 0)
    with pytest.raises(TestbedError, match="host count"):
        plan_hosts("tb", 0, tbm.MAX_HOSTS + 1)


def test_32_hosts_plan():
    plans = plan_hosts("tb", 0, 32)
    assert plans[-1].name == "tb32" and plans[-1].address == "10.213.0.42"


@pytest.mark.parametrize("prefix", ["tb", "t", "fleet", "a1b", "abcdefgh"])
def test_good_prefixes(prefix):
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "tb1", "TB", "t-b", "1tb", "abcdefghi", "t_b", None])
def test_bad_prefixes(prefix):
    with pytest.raises(TestbedError, match="prefix"):
        validate_prefix(prefix)


def test_mac_for_is_fixed_per_address():
    assert tbm.mac_for("10.213.0.11") == "02:fb:0a:d5:00:0b"
    assert tbm.mac_for("10.213.250.1") == "02:fb:0a:d5:fa:01"
    macs = {tbm.mac_for(p.address) for p in plan_hosts("tb", 3, 40)} | {tbm.mac_for(tbm.bridge_address(3))}
    assert len(macs) == 41


def test_network_for():
    assert str(network_for(0)) == "10.213.0.0/24"
    assert str(network_for(250)) == "10.213.250.0/24"
    assert tbm.bridge_address(7) == "10.213.7.1"
    for bad in (-1, 256, "1", True):
        with pytest.raises(TestbedError, match="subnet"):
            network_for(bad)


# ---- uplink -----------------------------------------------------------------------------------


def test_parse_rate():
    assert parse_rate("20mbit") == 20_000_000
    assert parse_rate("1gbit") == 1_000_000_000
    assert parse_rate("500kbit") == 500_000
    assert parse_rate("10mbps") == 80_000_000  # tc: mbps = megabytes per second
    assert parse_rate("2.5Mbit") == 2_500_000
    for bad in ("fast", "", "20 furlongs", "-5mbit", "1bit"):
        with pytest.raises(TestbedError, match="rate"):
            parse_rate(bad)


def test_tbf_args():
    args = tbf_args("20mbit")
    assert args[:3] == ["tbf", "rate", "20000000bit"]
    burst = int(args[args.index("burst") + 1])
    assert burst >= 32 * 1024
    assert args[args.index("latency") + 1] == "50ms"
    assert int(tbf_args("10gbit")[4]) >= 10_000_000_000 // 8 // 100


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
    text = tbm.etc_hosts_text("127.0.0.1 localhost", [("tb1", "10.213.0.11")], "tb")
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


def test_wrapper_runs_the_chosen_python(tmp_path):
    """The wrapper put in a host's /usr/local/bin, tried here on the controller's own python."""
    exe = os.path.realpath(sys.executable)
    spec = PythonSpec(path=exe, executable=exe, version="3.11.9", prefix=sys.base_prefix, relocate=True,
                      relative_executable="bin/python3.11")
    lib = str(tmp_path / "lib")
    w = tmp_path / "python3"
    w.write_text(tbm.wrapper_text(spec, exe, lib, mount="/run/x"))
    w.chmod(0o755)
    code = "import os, sys; print(sys.version_info[0]); print(os.environ['LD_LIBRARY_PATH'])"
    out = subprocess.run([str(w), "-c", code],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": lib})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", lib]  # not prepended twice


def test_probe_python_accepts_base_and_rejects_venv():
    spec = tbm._probe_python("/usr/bin/python3", "default python")
    assert spec.version.startswith("3.") and spec.prefix == "/usr" and not spec.relocate
    with pytest.raises(TestbedError, match="not an absolute path"):
        tbm._probe_python("python3", "python override for tb1")
    with pytest.raises(TestbedError, match="tb1.*does not exist"):
        tbm._probe_python("/nonexistent/python3", "python override for tb1")
    if sys.prefix != sys.base_prefix:
        with pytest.raises(TestbedError, match="virtual environment"):
            tbm._probe_python(sys.executable, "python override for tb1")


def test_probe_python_not_executable(tmp_path):
    f = tmp_path / "python3"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    if os.geteuid() == 0:
        f.chmod(0o600)  # root passes X_OK only if some x bit is set
    with pytest.raises(TestbedError, match=f"python override for tb2: {f} is not an executable"):
        tbm._probe_python(str(f), "python override for tb2")


def test_pyenv_python_is_relocated():
    p = "/root/.pyenv/versions/3.9.18/bin/python3.9"
    if not os.access(p, os.X_OK):
        pytest.skip("no pyenv 3.9.18 here")
    spec = tbm._probe_python(p, "python override for tb3")
    assert spec.relocate and spec.version.startswith("3.9.")
    assert spec.prefix == "/root/.pyenv/versions/3.9.18" and spec.relative_executable == "bin/python3.9"
    assert tbm._wrapper_names(spec) == ("python3", "python3.9")


# ---- up's argument checks (before anything is touched) ----------------------------------------


def test_not_root_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    for call in (lambda: tb.up(2), tb.down):
        with pytest.raises(TestbedError) as e:
            call()
        assert "needs root" in str(e.value) and "namespaces" in str(e.value)
    assert not (tmp_path / ".testbed").exists()


def test_missing_sshd_says_apt_get(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252, sshd=str(tmp_path / "no-sshd"))
    with pytest.raises(TestbedError, match="apt-get install openssh-server"):
        tb.up(2)


def test_override_for_unknown_host_or_bad_path(monkeypatch, tmp_path):
    monkeypatch.setattr(Testbed, "_preflight", lambda self, **kw: None)
    monkeypatch.setattr(Testbed, "_lock", lambda self: pytest.fail("must fail before touching anything"))
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    with pytest.raises(TestbedError, match="'tu7': no such host .*tu1..tu3"):
        tb.up(3, {"tu7": "/usr/bin/python3"})
    with pytest.raises(TestbedError, match="tu2: /nonexistent/python3.9 does not exist"):
        tb.up(3, {"tu2": "/nonexistent/python3.9"})
    with pytest.raises(TestbedError, match="uplink rate 'quick'"):
        tb.up(3, {}, uplink="quick")
