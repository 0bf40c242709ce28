"""Hosts without a usable Python get the bundled one: a host with no python3 at all (the
``minimal`` image) runs a gunicorn server pex from PyPI and an agent, a host whose python3 is 3.6
runs an agent, ordinary hosts run their own python3; ``ok``, every agent merged, and a second
deploy pushes nothing. With ``--bundled-python`` an arm64 host (Debian 12 under qemu-user) and
an ordinary one run the bundle built for their machines."""

from __future__ import annotations

import json
import os

import pytest

from devtools.testbed import Testbed

from .conftest import Project, _need_testbed, _pyenv

pytestmark = pytest.mark.fleet

SPAWN = """
name = "bundled-python"
[hosts]
servers = ["$h1"]
agents = ["$h1", "$h2", "$h3", "$h4"]
[server]
kind = "command"
port = 7310
requirements = ["httpbin==0.10.4", "gunicorn==23.0.0"]
script = "gunicorn"
args = ["--bind", "{host}:{port}", "--workers", "2", "--worker-class", "gthread", "--threads", "4",
        "--pid", "{data_dir}/gunicorn.pid", "httpbin:app"]
ready = "http:/get"
[[benchmark]]
name = "get"
workload = "http"
agents = 4
duration = "1s"
connections = 2
params = { paths = ["/get", "/bytes/64"] }
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, testbed_images):
    _need_testbed()
    python36 = _pyenv("3.6")
    if python36 is None:
        if os.environ.get("CI"):
            pytest.fail("no pyenv Python 3.6 on this machine: the 3.6 host cannot be made")
        pytest.skip("no pyenv Python 3.6 on this machine")
    path = tmp_path_factory.mktemp("bundled-python")
    prefix = os.environ.get("FLEETBENCH_TEST_PREFIX2", "fw")
    testbed = Testbed(path / ".testbed", prefix=prefix, subnet=int(os.environ.get("FLEETBENCH_TEST_SUBNET2", "249")))
    pythons = {f"{prefix}2": python36}
    try:
        images = {f"{prefix}1": "minimal", f"{prefix}5": "debian12-arm64"}
        hosts = [h.name for h in testbed.up(5, pythons, images=images)]
        yield Project(path, hosts, pythons)
    finally:
        testbed.down()


def test_a_host_without_python3_and_one_with_python36_run_agents_and_a_gunicorn_server(fleet):
    h = fleet.hosts
    assert fleet.ssh(h[0], "command -v python3", check=False).returncode != 0  # really none there
    assert fleet.ssh(h[1], "python3 --version").stdout.strip().startswith("Python 3.6")
    spawn = str(fleet.write_spawn("bundled.toml", SPAWN))
    out = fleet.inv("deploy", "--spawn", spawn, "bench", "--spawn", spawn, "collect", "--spawn", spawn,
                    timeout=1200).stdout
    try:
        print(out)
        # Said per host, before anything is pushed.
        said = out.index(f"{h[0]}: runs the bundled python (no python3 on the PATH")
        assert f"{h[1]}: runs the bundled python (python3 is 3.6." in out, out
        assert f"{h[2]}: runs its own python3 3.11" in out, out
        assert said < out.index("bundled python on 2 host(s)") < out.index("pushed ")
        assert "started 1 gunicorn node(s)" in out, out
        run = json.loads((fleet.path / "runs" / "latest" / "run.json").read_text())
        assert run["status"] == "ok", out
        (bench,) = run["benchmarks"]
        assert (bench["agents"], bench["agents_ok"], bench["errors"]) == (4, 4, 0), bench
        assert bench["ops"] > 0
        assert sorted(a["host"] for a in bench["agent_results"]) == sorted(h[:4]), bench["agent_results"]
        for host in h[:2]:  # the bundled interpreter ran the agent there
            facts = run["hosts"][host]["facts"]
            assert facts["python"]["version"] == "3.11.2", facts
            real = fleet.ssh(host, f"readlink -f {facts['python']['executable']}").stdout.strip()  # the pex's venv
            assert "/.fleetbench/python/" in real and real.endswith("/bin/python3.11"), real
        # The gunicorn master on the python-less host runs on the bundled interpreter.
        (node,) = run["deployment"]["nodes"]
        exe = fleet.ssh(h[0], f"readlink /proc/{int(node['pid'])}/exe").stdout.strip()
        assert "/.fleetbench/python/" in exe and exe.endswith("/bin/python3.11"), exe

        again = fleet.inv("deploy", "--spawn", spawn).stdout
        print(again)
        assert "bundled python on 2 host(s): pushed to 0, 2 had it" in again, again
        assert "pushed 0 file(s)" in again and "building the bundled python" not in again, again
        assert "nothing to restart" in again, again

        fleet.inv("down", "--spawn", spawn)
        twice = fleet.inv("down", "--spawn", spawn).stdout  # ~/.fleetbench is gone: no python is brought back
        assert "bundled python on" not in twice and "runs the bundled python" not in twice, twice
        assert fleet.ssh(h[0], "test -e ~/.fleetbench", check=False).returncode != 0
    finally:
        fleet.inv("down", "--spawn", spawn)


FORCED = SPAWN.replace('servers = ["$h1"]', 'servers = ["$h3"]').replace(
    'agents = ["$h1", "$h2", "$h3", "$h4"]', 'agents = ["$h3", "$h5"]').replace("agents = 4", "agents = 2")


def test_bundled_python_forced_on_an_arm64_host_and_an_ordinary_one(fleet):
    h = fleet.hosts
    spawn = str(fleet.write_spawn("forced.toml", FORCED))
    out = fleet.inv("deploy", "--spawn", spawn, "--bundled-python", "bench", "--spawn", spawn, "collect",
                    "--spawn", spawn, timeout=1200).stdout
    try:
        print(out)
        for host in (h[2], h[4]):
            assert f"{host}: runs the bundled python (--bundled-python)" in out, out
        assert "bundled python on 2 host(s)" in out, out
        run = json.loads((fleet.path / "runs" / "latest" / "run.json").read_text())
        assert run["status"] == "ok", out
        (bench,) = run["benchmarks"]
        assert (bench["agents"], bench["agents_ok"], bench["errors"]) == (2, 2, 0), bench
        for host, machine in ((h[2], "x86_64"), (h[4], "aarch64")):
            facts = run["hosts"][host]["facts"]
            assert facts["machine"] == machine and facts["python"]["version"] == "3.11.2", facts
            real = fleet.ssh(host, f"readlink -f {facts['python']['executable']}").stdout.strip()
            assert "/.fleetbench/python/" in real, real
    finally:
        fleet.inv("down", "--spawn", spawn)
