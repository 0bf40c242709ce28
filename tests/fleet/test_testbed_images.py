"""Testbed hosts that run other root filesystems (``inv testbed.up --image HOST=IMAGE``): each
recipe's host runs its own /usr, its own python3 (or none), its own CPU architecture and its
own sshd with the image's default configuration; nothing of the controller's filesystem is
visible there; a second ``up`` takes the images from the cache; ``down`` leaves nothing."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
from pathlib import Path

import pytest

from devtools.testbed import Testbed, TestbedError
from devtools.testbed.images import Recipe, cache_dir, ensure_recipe

from .conftest import REPO

pytestmark = pytest.mark.fleet

# host index -> (image, os-release codename, python3 --version's major.minor or None, uname -m)
EXPECTED = {
    1: ("debian11", "bullseye", "3.9", "x86_64"),
    2: ("debian13", "trixie", "3.13", "x86_64"),
    3: ("debian12-arm64", "bookworm", "3.11", "aarch64"),
    4: ("minimal", "bookworm", None, "x86_64"),
}
# On the controller (make system-deps installs it), in no image: whether a host sees the controller's /usr.
CONTROLLER_ONLY = "/usr/sbin/debootstrap"

PROBE = r"""
. /etc/os-release; echo "codename=$VERSION_CODENAME"
echo "python=$(python3 --version 2>&1)"
echo "command_v_python3=$(command -v python3 || echo none)"
echo "machine=$(uname -m)"
echo "hostname=$(hostname)"
echo "sshd_cmdline=$(tr '\0' ' ' </proc/1/cmdline)"
/usr/sbin/sshd -T -C user=root,host=probe,addr=127.0.0.1 2>&1 | grep -E '^(maxstartups|maxsessions|usepam) ' \
  | sed 's/ /=/'
echo "clone=$([ -e "$1" ] && echo visible || echo absent)"
echo "state=$([ -e "$2" ] && echo visible || echo absent)"
echo "controller=$([ -e "$3" ] && echo visible || echo absent)"
echo "ps=$(ps -e -o comm= | sort -u | tr '\n' ' ')"
echo "ip=$(ip -4 -o addr show dev eth0 | awk '{print $4}')"
"""


def _ssh(tb: Testbed, host: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(tb.ssh_config_path), "-o", "BatchMode=yes", host, command],
                          capture_output=True, text=True, timeout=120)


def _probe(tb: Testbed, host: str) -> dict[str, str]:
    cp = _ssh(tb, host, f"sh -s {REPO} {tb.state_dir} {CONTROLLER_ONLY} <<'EOF'\n{PROBE}EOF")
    assert cp.returncode == 0, f"{host}: {cp.stderr}"
    return dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)


def _mounts_mentioning(text: str) -> list[str]:
    """Mount table lines, in every mount namespace alive, that mention ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as fh:
                    found += [f"{entry}: {ln.strip()}" for ln in fh if text in ln]
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def imaged(tmp_path_factory, testbed_images):
    path = tmp_path_factory.mktemp("images")
    prefix = os.environ.get("FLEETBENCH_TEST_PREFIX2", "fw")
    tb = Testbed(path / ".testbed", prefix=prefix, subnet=int(os.environ.get("FLEETBENCH_TEST_SUBNET2", "249")))
    images = {f"{prefix}{i}": image for i, (image, *_) in EXPECTED.items()}
    # host 6: the debian11 tree again, given as a path (a directory image), beside host 1.
    images[f"{prefix}6"] = testbed_images["debian11"].rootfs
    try:
        tb.up(6, images=images)
        yield tb, images
    finally:
        tb.down()


def test_each_recipe_host_runs_its_own_image(imaged):
    tb, _ = imaged
    prefix = tb.prefix
    for i, (_image, codename, python, machine) in EXPECTED.items():
        host = f"{prefix}{i}"
        got = _probe(tb, host)
        assert got["codename"] == codename, (host, got)
        if python:
            assert got["python"].startswith(f"Python {python}."), (host, got)
        else:
            assert got["command_v_python3"] == "none" and "python3: not found" in got["python"], (host, got)
        assert got["machine"] == machine, (host, got)
        assert got["hostname"] == host
        # The image's own sshd, with nothing but the drop-in: its stock limits, PAM as shipped.
        assert "/usr/sbin/sshd -D -E " in got["sshd_cmdline"] and " -o " not in got["sshd_cmdline"], (host, got)
        assert (got["maxstartups"], got["maxsessions"], got["usepam"]) == ("10:30:100", "10", "yes"), (host, got)
        assert (got["clone"], got["state"], got["controller"]) == ("absent", "absent", "absent"), (host, got)
        assert {"sshd", "ps"} <= set(got["ps"].split()) and "python3" not in got["ps"], (host, got)
        assert got["ip"].split("/")[0] == next(r["address"] for r in tb.status() if r["name"] == host)


def test_a_default_host_is_unchanged_beside_them(imaged):
    tb, _ = imaged
    got = _probe(tb, f"{tb.prefix}5")
    release = dict(ln.split("=", 1) for ln in Path("/etc/os-release").read_text().splitlines() if "=" in ln)
    assert got["codename"] == release.get("VERSION_CODENAME") and got["machine"] == platform.machine()
    # The controller's root, as always (the clone itself may sit under /tmp, which every host hides).
    assert got["controller"] == "visible"
    assert "MaxStartups=100" in got["sshd_cmdline"]  # and the testbed's own tuned sshd


def test_image_hosts_reach_each_other_by_name(imaged):
    tb, _ = imaged
    p = tb.prefix
    # debian11 (x86_64) dials the arm64 host's sshd by its testbed name, as fleetbench's hosts do.
    cp = _ssh(tb, f"{p}1", f"python3 -c \"import socket; print(socket.create_connection(('{p}3', 22), 10).recv(64))\"")
    assert cp.returncode == 0 and "SSH-2.0-OpenSSH_9.2" in cp.stdout, (cp.stdout, cp.stderr)


def test_writes_stay_on_their_host(imaged):
    tb, images = imaged
    p = tb.prefix
    for host in (f"{p}1", f"{p}6", f"{p}3"):
        cp = _ssh(tb, host, f"echo {host} > /tmp/fb-image-mark && echo {host} > ~/fb-image-mark && "
                            f"echo {host} > /etc/fb-image-mark && cat /tmp/fb-image-mark ~/fb-image-mark")
        assert cp.returncode == 0 and cp.stdout.split() == [host, host], cp.stderr
    # Host 6 runs the same tree as host 1 (and host 1 wrote first): it sees only its own files.
    cp = _ssh(tb, f"{p}6", "cat /tmp/fb-image-mark ~/fb-image-mark /etc/fb-image-mark")
    assert cp.stdout.split() == [f"{p}6"] * 3
    cp = _ssh(tb, f"{p}2", "ls /tmp/fb-image-mark ~/fb-image-mark 2>&1 || true")
    assert "No such file" in cp.stdout
    for image in {images[f"{p}1"], images[f"{p}6"], images[f"{p}3"]}:
        rootfs = next(r["image"]["rootfs"] for r in _records(tb) if r["image"]["name"] == image)
        for seen in ("tmp/fb-image-mark", "root/fb-image-mark", "etc/fb-image-mark"):
            assert not os.path.exists(os.path.join(rootfs, seen)), f"a host wrote into the cached image {rootfs}"
    assert not os.path.exists("/tmp/fb-image-mark") and not os.path.exists("/root/fb-image-mark")


def _records(tb: Testbed) -> list[dict]:
    return [r for r in json.loads(tb.hosts_json_path.read_text())["hosts"] if r.get("image")]


def test_the_record_the_second_up_and_crash_recovery(imaged, testbed_images):
    tb, images = imaged
    records = {r["name"]: r for r in _records(tb)}
    assert sorted(records) == sorted(images)
    for name, r in records.items():
        assert r["image"]["name"] == images[name]
        want = testbed_images.get(images[name])
        if want:  # a recipe: the cached tree of this session, not rebuilt by up
            assert (r["image"]["rootfs"], r["image"]["key"], r["image"]["built"]) == (want.rootfs, want.key, False)
    assert records[f"{tb.prefix}4"]["python"] == "" and records[f"{tb.prefix}1"]["python_version"] == "3.9"
    stamps = {n: Path(i.rootfs).parent.joinpath("image.json").read_text() for n, i in testbed_images.items()}
    rows = {r["name"]: r for r in tb.status()}
    assert {n: rows[n]["image"] for n in images} == images and rows[f"{tb.prefix}5"]["image"] is None
    assert all(r["sshd_alive"] and r["ssh_answers"] for r in rows.values()), rows

    # A host whose sshd died is rebuilt by the next up; the healthy ones are kept as they are.
    victim = records[f"{tb.prefix}2"]["sshd_pid"]
    os.kill(victim, signal.SIGKILL)
    tb.up(6, images=images)
    again = {r["name"]: r for r in _records(tb)}
    assert again[f"{tb.prefix}2"]["sshd_pid"] != victim
    assert again[f"{tb.prefix}1"]["sshd_pid"] == records[f"{tb.prefix}1"]["sshd_pid"]
    assert _probe(tb, f"{tb.prefix}2")["codename"] == "trixie"

    # Down, then up again: every image from the cache (nothing debootstrapped, the stamps unchanged).
    tb.down()
    tb.up(6, images=images)
    assert all(r["image"]["built"] is False for r in _records(tb))
    assert {n: Path(i.rootfs).parent.joinpath("image.json").read_text() for n, i in testbed_images.items()} == stamps
    assert _probe(tb, f"{tb.prefix}3")["machine"] == "aarch64"


def test_down_leaves_no_mount_namespace_or_process(imaged):
    tb, _ = imaged
    runtime = str(tb.runtime_dir)
    assert _mounts_mentioning(runtime + "/")  # while up: each image host's overlay
    tb.down()
    assert tb.leftovers() == {"netns": [], "links": [], "routes": [], "pids": [], "files": []}
    assert _mounts_mentioning(runtime + "/") == []
    assert _mounts_mentioning(f"lowerdir={cache_dir()}/") == []


def test_a_recipe_that_cannot_be_built_names_the_package(tmp_path):
    broken = Recipe("broken", "bookworm", "amd64", ("openssh-server", "fleetbench-no-such-package"), None)
    with pytest.raises(TestbedError) as e:
        ensure_recipe(broken, tmp_path)
    msg = str(e.value)
    assert msg.startswith("image recipe broken (bookworm amd64): debootstrap failed"), msg
    assert "fleetbench-no-such-package" in msg.splitlines()[0] and "log tail:" in msg
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
