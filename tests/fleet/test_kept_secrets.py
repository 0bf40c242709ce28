"""Issue 11, on the real testbed: protected servers, kept secrets, a bounded controller.

* Every redis node refuses a host without the password (NOAUTH); `fab status` says how to
  connect by hand, and that command works on the host without the password being printed.
* A secret given as { env = ... } reaches the server (its environment: the app checks every
  request's Authorization against it), the HTTP target (requests succeed only with it) and a
  python workload (it checks a digest), and appears nowhere under runs/, the state directory, or
  any process's command line while the run is live.
* A python workload whose agent writes 400 MB of stderr without a newline leaves the
  controller's peak memory bounded, and the other agents' results are merged.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
SECRET = f"Bearer wj-{uuid.uuid4().hex}"
FLOOD_MB = 400

CLUSTER = """
name = "protected"
[hosts]
servers = ["$h1", "$h2", "$h3"]
agents = ["$h4", "$h5"]
[server]
kind = "redis-cluster"
port = 7600
[[benchmark]]
name = "set"
workload = "set"
agents = 2
iterations = 4000
connections = 4
"""

APP = '''
"""Serves 200 to a request whose Authorization is $API_TOKEN, 401 to any other."""
import http.server, os, sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        ok = self.headers.get("Authorization") == os.environ["API_TOKEN"]
        body = b"ok" if ok else b"no"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
'''

LOADS = '''
import asyncio, hashlib, sys


async def check(ctx):
    token = ctx.options["token"]
    if hashlib.sha256(token.encode()).hexdigest() != ctx.options["sha256"]:
        raise RuntimeError("the option did not arrive")
    if ctx.agent_num == 0 and ctx.connection == 0:
        chunk = "e" * (1 << 20)
        for _ in range(FLOOD_MB):  # no newline at all
            sys.stderr.write(chunk)
        sys.stderr.flush()

    async def op():
        await asyncio.sleep(0)

    return op
'''.replace("FLOOD_MB", str(FLOOD_MB))

WEB = """
name = "secrets"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "command"
port = 7610
requirements = ["./authapp"]
script = "authapp"
args = ["{host}", "{port}"]
ready = "tcp"
env = { API_TOKEN = { env = "WJ_API_TOKEN" }, PLAIN = "visible" }
[[benchmark]]
name = "get"
workload = "http"
agents = 2
iterations = 400
connections = 2
params = { paths = ["/"], headers = { Authorization = { env = "WJ_API_TOKEN" } } }
[[benchmark]]
name = "flood"
workload = "python"
agents = 2
iterations = 200
[benchmark.params]
target = "wjloads:check"
modules = ["wjloads.py"]
options = { token = { env = "WJ_API_TOKEN" }, sha256 = "SHA" }
"""


def _inv(project, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(Path(sys.executable).parent / "inv"), "--search-root", str(REPO), *args],
                          cwd=project.path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"inv {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def _holds(path: Path, needle: bytes) -> bool:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return needle in data


def test_redis_nodes_refuse_a_host_without_the_password(project):
    project.reset()
    spawn = project.write_spawn("protected.toml", CLUSTER)
    _inv(project, "deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn), "collect",
         "--spawn", str(spawn))
    try:
        state = json.loads((project.path / ".fleetbench" / "state.json").read_text())
        password = state["redis_password"]
        assert re.fullmatch(r"[0-9a-f]{48}", password)
        assert oct(os.stat(project.path / ".fleetbench" / "state.json").st_mode & 0o777) == "0o600"
        assert oct(os.stat(project.path / ".fleetbench").st_mode & 0o777) == "0o700"
        stranger = project.hosts[5]  # no server, no agent: any host on the fleet network
        for node in state["nodes"]:
            for command in ("PING", "CONFIG SET dir /tmp", "CONFIG SET dbfilename authorized_keys"):
                out = project.ssh(stranger, f"redis-cli -h {node['address']} -p {node['port']} {command}",
                                  check=False)  # redis-tools: on the testbed's shared filesystem
                assert "NOAUTH" in out.stdout + out.stderr, (node, command, out)
        status = project.fab("-H", project.hosts[0], "status").stdout
        (hint,) = [line.split("connect on this host: ", 1)[1] for line in status.splitlines()
                   if "connect on this host: " in line]
        assert password not in status and "REDISCLI_AUTH=" in hint
        assert project.ssh(project.hosts[0], hint + " PING").stdout.strip() == "PONG"
        run_dir = (project.path / "runs" / "latest").resolve()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"
        assert not [p for p in _files_under(run_dir) if _holds(p, password.encode())]
    finally:
        _inv(project, "down", "--spawn", str(spawn))


def _cmdlines() -> dict[int, bytes]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                pass
    return found


def _peak_rss_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) if match else None


def test_env_secrets_reach_server_and_target_and_nothing_keeps_them(project):
    project.reset()
    app = project.path / "authapp"
    app.mkdir(exist_ok=True)
    (app / "authapp.py").write_text(APP)
    (app / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=61"]\n'
                                        'build-backend = "setuptools.build_meta"\n[project]\nname = "authapp"\n'
                                        'version = "0.1.0"\nrequires-python = ">=3.9"\n'
                                        '[tool.setuptools]\npy-modules = ["authapp"]\n')
    (project.path / "wjloads.py").write_text(LOADS)
    spawn = project.write_spawn("secrets.toml", WEB.replace("SHA", hashlib.sha256(SECRET.encode()).hexdigest()))

    missing = _inv(project, "check", "--spawn", str(spawn), check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "server.env.API_TOKEN: environment variable WJ_API_TOKEN is not set" in missing.stderr
    assert "benchmark[0].params.headers.Authorization: environment variable WJ_API_TOKEN" in missing.stderr

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WJ_API_TOKEN": SECRET}
    log_out, log_err = project.path / "spawn.out", project.path / "spawn.err"
    with open(log_out, "w") as stdout, open(log_err, "w") as stderr:  # files: a pipe could fill and stall it
        proc = subprocess.Popen([str(Path(sys.executable).parent / "inv"), "--search-root", str(REPO), "spawn",
                                 "--spawn", str(spawn), "--allow-partial"], cwd=project.path, env=env, text=True,
                                stdout=stdout, stderr=stderr)
    needle = SECRET.encode()
    seen_agents = 0
    peak_kb = 0
    leaks: list[bytes] = []
    while proc.poll() is None:  # while the run is live: every process of every host (one machine)
        for line in _cmdlines().values():
            if needle in line:
                leaks.append(line)
            if b"run\x00--job-file\x00-" in line:
                seen_agents += 1
        peak_kb = max(peak_kb, _peak_rss_kb(proc.pid) or 0)
        time.sleep(0.1)
    out, err = log_out.read_text(), log_err.read_text()
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    assert not leaks, leaks[:3]
    assert seen_agents > 0, "the scan never saw an agent running"
    assert SECRET not in out and SECRET not in err

    run_dir = (project.path / "runs" / "latest").resolve()
    run = json.loads((run_dir / "run.json").read_text())
    get, flood = run["benchmarks"]
    assert (get["agents_ok"], get["ops"], get["errors"]) == (2, 400, 0)  # every request had the token
    assert flood["agents_ok"] == 2 and flood["ops"] == 200
    kept = run_dir / "agents" / "flood" / "agent-0.stderr"
    assert kept.stat().st_size < 5 << 20  # the last few MB of 400
    dropped = re.match(r"\[\.\.\. the first (\d+) bytes of stderr were dropped", kept.read_text()[:200])
    assert dropped and int(dropped.group(1)) > (FLOOD_MB - 5) << 20  # the flood did come through the controller
    # The controller never held the flood: its peak stays far below it (figure in the README).
    print(f"controller peak RSS during the flood: {peak_kb / 1024:.0f} MB")
    assert 0 < peak_kb < 300 * 1024
    leaked = [p for p in _files_under(run_dir, project.path / ".fleetbench") if _holds(p, needle)]
    assert not leaked
    assert json.loads((run_dir / "spawn.json").read_text())["server"]["env"]["API_TOKEN"] == {"env": "WJ_API_TOKEN"}
    shutil.rmtree(app)
