"""The testbed against the real thing: namespaces, bridge, tc, real sshd, real ssh.

Uses its own prefix/subnets (tt on 10.213.250.0/24, tu on .253) so it never touches a
developer's own ``tb`` testbed. Needs root. Every testbed is brought down in a finalizer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from devtools.testbed import Testbed, TestbedError, parse_python_overrides

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the testbed needs root"),
    pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="no sshd (apt-get install openssh-server)"),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client"),
]

PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
HAVE_PY39 = os.access(PY39, os.X_OK)
PREFIX, SUBNET = "tt", 250
SUBNET_B = 253  # for the second testbed ("tu"); 251 is the pipeline suite's "ft"
REPO = Path(__file__).resolve().parents[2]


def ssh(tb: Testbed, host: str, command: str, *, input: bytes | None = None, check: bool = True,
        netns: str | None = None, extra: tuple = ()) -> subprocess.CompletedProcess:
    argv = ["ssh", "-F", str(tb.ssh_config_path), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *extra,
            host, command]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    cp = subprocess.run(argv, input=input, capture_output=True, timeout=60)
    if check and cp.returncode != 0:
        raise AssertionError(f"{argv} -> {cp.returncode}: {cp.stderr.decode(errors='replace')}")
    return cp


def out(cp: subprocess.CompletedProcess) -> str:
    return cp.stdout.decode().strip()


def nothing_left(tb: Testbed) -> None:
    left = tb.leftovers()
    assert left == {"netns": [], "links": [], "routes": [], "pids": [], "files": []}, left
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"fb-{tb.prefix}" not in netns
    assert f"fbv-{tb.prefix}" not in links and tb.bridge not in links
    procs = subprocess.run(["pgrep", "-af", f"fleetbench-testbed/{tb.prefix}/"], capture_output=True, text=True).stdout
    assert procs.strip() == "", procs
    assert not tb.runtime_dir.exists()


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    """Three hosts, tt2 on Python 3.9 (when this machine has it); state under /tmp."""
    state = tmp_path_factory.mktemp("tb") / ".testbed"
    bed = Testbed(state, prefix=PREFIX, subnet=SUBNET)
    pythons = parse_python_overrides([f"tt2={PY39}"]) if HAVE_PY39 else {}
    try:
        bed.up(3, pythons)
        bed.pythons = pythons  # what the tests that call up() again must pass to keep tt2 as is
        yield bed
    finally:
        bed.down()


def test_up_writes_client_files(tb):
    hosts = tb.hosts()
    assert [h.name for h in hosts] == ["tt1", "tt2", "tt3"]
    assert [h.address for h in hosts] == ["10.213.250.11", "10.213.250.12", "10.213.250.13"]
    state = json.loads((tb.state_dir / "hosts.json").read_text())
    assert state["bridge"] == "fbbr-tt" and state["subnet"] == SUBNET and state["network"] == "10.213.250.0/24"
    for r in state["hosts"]:
        assert {"name", "address", "netns", "sshd_pid", "python"} <= set(r)
    kh = tb.known_hosts_path.read_text().splitlines()
    assert [line.split()[0] for line in kh] == ["tt1,10.213.250.11", "tt2,10.213.250.12", "tt3,10.213.250.13"]
    cfg = tb.ssh_config_path.read_text()
    assert f"IdentityFile {tb.key_path}" in cfg and f"UserKnownHostsFile {tb.known_hosts_path}" in cfg
    assert "StrictHostKeyChecking yes" in cfg


def test_ssh_with_strict_host_keys_on_every_host(tb):
    for h in tb.hosts():
        assert out(ssh(tb, h.name, "hostname; id -u")) == f"{h.name}\n0"
    # Strictness is real: the same login with no known host key is refused.
    refused = ssh(tb, "tt1", "true", check=False, extra=("-o", "UserKnownHostsFile=/dev/null"))
    assert refused.returncode != 0 and b"Host key verification failed" in refused.stderr


def test_hosts_resolve_and_reach_each_other(tb):
    assert out(ssh(tb, "tt1", "getent hosts tt3")).split() == ["10.213.250.13", "tt3"]
    # No DNS in the testbed: an unknown name fails at once, not after resolver timeouts.
    t0 = time.monotonic()
    assert ssh(tb, "tt1", "getent hosts no-such-host.example", check=False).returncode != 0
    assert time.monotonic() - t0 < 3
    # ssh from inside tt1's network namespace to tt3 goes host-to-host over the bridge
    assert out(ssh(tb, "tt3", "hostname", netns="fb-tt1")) == "tt3"


def test_tmp_and_home_are_private_per_host(tb):
    tag = uuid.uuid4().hex
    for h in ("tt1", "tt2", "tt3"):
        assert out(ssh(tb, h, "ls -A /tmp ~ /var/tmp | grep -v : | grep -c . || true")) == "0"
    ssh(tb, "tt1", f"echo one > /tmp/{tag}; echo one > ~/{tag}; echo one > /var/tmp/{tag}")
    assert out(ssh(tb, "tt1", f"cat /tmp/{tag} ~/{tag}")) == "one\none"
    for h in ("tt2", "tt3"):
        seen = ssh(tb, h, f"ls /tmp/{tag} ~/{tag} /var/tmp/{tag}", check=False)
        assert seen.returncode != 0 and out(seen) == ""
    for p in (Path("/tmp") / tag, Path("/root") / tag, Path("/var/tmp") / tag):
        assert not p.exists()
    # A host sees only its own processes (pid namespace): pgrep on one host cannot hit another.
    ssh(tb, "tt1", "nohup sleep 876543 >/dev/null 2>&1 &")
    assert "sleep 876543" in out(ssh(tb, "tt1", "ps -eo args"))
    assert "sleep 876543" not in out(ssh(tb, "tt2", "ps -eo args"))


@pytest.mark.skipif(not HAVE_PY39, reason=f"no {PY39}")
def test_python_override_gives_39_on_that_host_only(tb):
    code = "import sys, ssl, sqlite3, zlib, ctypes, json; print('%d.%d' % sys.version_info[:2])"
    assert out(ssh(tb, "tt2", f'python3 -c "{code}"')) == "3.9"
    assert out(ssh(tb, "tt2", f'python3.9 -c "{code}"')) == "3.9"
    assert out(ssh(tb, "tt1", f'python3 -c "{code}"')) == "3.11"
    assert out(ssh(tb, "tt1", "command -v python3")) == "/usr/bin/python3"
    assert out(ssh(tb, "tt2", "command -v python3")) == "/usr/local/bin/python3"
    # The home stays empty although the interpreter lives under the controller's /root; its
    # prefix is read-only on the host (a pip install there cannot change the controller's).
    assert out(ssh(tb, "tt2", "ls -A ~ | wc -l")) == "0"
    assert ssh(tb, "tt2", "touch $(python3 -c 'import sys; print(sys.prefix)')/x", check=False).returncode != 0
    # A venv made on the host works too (libpython found via the session's LD_LIBRARY_PATH).
    venv = "python3 -m venv --without-pip /tmp/ve && /tmp/ve/bin/python -c 'import sys; print(sys.version_info[1])'"
    assert out(ssh(tb, "tt2", venv)) == "9"
    assert [h.python_version.rsplit(".", 1)[0] for h in tb.hosts()] == ["3.11", "3.9", "3.11"]


def test_status(tb):
    rows = tb.status()
    assert [r["name"] for r in rows] == ["tt1", "tt2", "tt3"]
    for r in rows:
        assert r["netns_present"] and r["sshd_alive"] and r["ssh_answers"] and r["recorded"]
        assert r["sshd_pid"] > 0 and r["python"]


def test_second_up_is_a_fast_no_op(tb):
    before = [h.sshd_pid for h in tb.hosts()]
    t0 = time.monotonic()
    hosts = tb.up(3, tb.pythons)
    assert time.monotonic() - t0 < 1.5
    assert [h.sshd_pid for h in hosts] == before


def test_crashed_host_recovers(tb):
    hosts = {h.name: h for h in tb.hosts()}
    ssh(tb, "tt1", "nohup sleep 765432 >/dev/null 2>&1 &")
    os.kill(hosts["tt1"].sshd_pid, 9)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r["sshd_alive"] for r in tb.status() if r["name"] == "tt1"):
        time.sleep(0.05)
    assert not [r for r in tb.status() if r["name"] == "tt1"][0]["sshd_alive"]
    # Everything that ran on the host went with its sshd (it was the host's pid 1).
    assert subprocess.run(["pgrep", "-f", "sleep 765432"], capture_output=True).returncode != 0
    new = {h.name: h for h in tb.up(3, tb.pythons)}
    assert new["tt1"].sshd_pid != hosts["tt1"].sshd_pid
    assert new["tt2"].sshd_pid == hosts["tt2"].sshd_pid  # healthy hosts are left alone
    assert out(ssh(tb, "tt1", "hostname")) == "tt1"  # new host key, known_hosts rewritten


def test_lost_state_file_recovers(tb):
    tb.hosts_json_path.unlink()
    hosts = tb.up(3, tb.pythons)
    assert [h.name for h in hosts] == ["tt1", "tt2", "tt3"]
    for h in hosts:
        assert out(ssh(tb, h.name, "hostname")) == h.name
    assert len(subprocess.run(["pgrep", "-f", "^sshd: .*fleetbench-testbed/tt/tt[0-9]+/sshd/"],
                              capture_output=True, text=True).stdout.split()) == 3


def test_grow_and_shrink(tb):
    assert [h.name for h in tb.up(5, tb.pythons)] == ["tt1", "tt2", "tt3", "tt4", "tt5"]
    assert out(ssh(tb, "tt5", "hostname; getent hosts tt4 | cut -d' ' -f1")) == "tt5\n10.213.250.14"
    assert out(ssh(tb, "tt1", "getent hosts tt5")).split() == ["10.213.250.15", "tt5"]  # /etc/hosts updated live
    assert [h.name for h in tb.up(3, tb.pythons)] == ["tt1", "tt2", "tt3"]
    assert not os.path.exists("/run/netns/fb-tt4") and not os.path.exists("/sys/class/net/fbv-tt5")
    assert "tt5" not in tb.ssh_config_path.read_text()


def _push_seconds(tb: Testbed, host: str, nbytes: int, netns: str | None = None) -> float:
    data = os.urandom(nbytes)
    t0 = time.monotonic()
    ssh(tb, host, "cat > /dev/null", input=data, netns=netns)
    return time.monotonic() - t0


def _tbf_sent_bytes(tb) -> int:
    """Bytes the bridge's tbf qdisc has sent (``tc -s``'s "Sent N bytes")."""
    stats = subprocess.run(["tc", "-s", "qdisc", "show", "dev", tb.bridge], capture_output=True, text=True).stdout
    tbf = stats[stats.index("qdisc tbf"):]
    return int(re.search(r"Sent (\d+) bytes", tbf).group(1))


def test_uplink_shapes_only_controller_to_fleet(tb):
    n = 2_000_000  # 0.8 s at 20 Mbit/s
    tb.up(3, tb.pythons, uplink="20mbit")
    try:
        tc = subprocess.run(["tc", "qdisc", "show", "dev", tb.bridge], capture_output=True, text=True).stdout
        assert "tbf" in tc and "20Mbit" in tc
        before = _tbf_sent_bytes(tb)
        shaped = _push_seconds(tb, "tt1", n)
        through_tbf = _tbf_sent_bytes(tb) - before
        host_to_host = _push_seconds(tb, "tt1", n, netns="fb-tt2")
        beside_tbf = _tbf_sent_bytes(tb) - before - through_tbf
        print(f"\n2 MB at uplink 20mbit: controller->tt1 {shaped:.2f}s ({n * 8 / shaped / 1e6:.1f} Mbit/s),"
              f" tt2->tt1 {host_to_host:.2f}s ({n * 8 / host_to_host / 1e6:.1f} Mbit/s)")
        # A cap is a floor on time, whatever the machine's load: <= ~25 Mbit/s with the handshake.
        assert shaped > 0.65
        # What is shaped is read off the qdisc's own counters, not off timings: the controller's
        # bytes go through the tbf, the hosts' bytes to each other never do.
        assert through_tbf >= n, through_tbf
        assert beside_tbf < n / 20, beside_tbf
    finally:
        tb.up(3, tb.pythons)  # no uplink: shaping removed
    tc = subprocess.run(["tc", "qdisc", "show", "dev", tb.bridge], capture_output=True, text=True).stdout
    assert "tbf" not in tc


def test_errors_name_the_culprit(tb):
    with pytest.raises(TestbedError, match="'tt9': no such host"):
        tb.up(3, {"tt9": "/usr/bin/python3"})
    with pytest.raises(TestbedError, match="tt1: /etc/passwd"):
        tb.up(3, {"tt1": "/etc/passwd"})
    other = Testbed(tb.state_dir.parent / "other", prefix=PREFIX, subnet=SUBNET_B)
    with pytest.raises(TestbedError, match="in use by the testbed in"):
        other.up(1)
    assert all(r["sshd_alive"] for r in tb.status())  # nothing of the running testbed was touched


def test_state_dir_outside_tmp_and_down_leaves_nothing():
    """State under the project (not /tmp): hosts still see their empty /tmp; then down."""
    state = REPO / f".testbed-pytest-{uuid.uuid4().hex[:8]}"
    bed = Testbed(state, prefix="tu", subnet=SUBNET_B)
    try:
        hosts = bed.up(2)
        for h in hosts:
            assert out(ssh(bed, h.name, "hostname; ls -A /tmp | wc -l")) == f"{h.name}\n0"
        assert (state / "hosts" / "tu1" / "sshd.log").read_text().count("Accepted publickey") == 1
        pids = [h.sshd_pid for h in hosts]
        bed.down()
        assert not state.exists()
        for p in pids:
            assert not Path(f"/proc/{p}").exists() or b"fleetbench" not in Path(f"/proc/{p}/cmdline").read_bytes()
        nothing_left(bed)
        bed.down()  # idempotent
        nothing_left(bed)
    finally:
        bed.down()
        shutil.rmtree(state, ignore_errors=True)


def test_down_after_crash_without_state_file(tmp_path):
    bed = Testbed(tmp_path / ".testbed", prefix="tu", subnet=SUBNET_B)
    try:
        hosts = bed.up(2)
        os.kill(hosts[0].sshd_pid, 9)
        bed.hosts_json_path.unlink()
        assert {r["name"] for r in bed.status() if not r["recorded"]} == {"tu1", "tu2"}
        bed.down()
        nothing_left(bed)
    finally:
        bed.down()
