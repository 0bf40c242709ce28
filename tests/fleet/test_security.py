"""Safe to point at real machines: host keys checked, hostile text stays data, files private,
no secret written anywhere.

The hostile run happens once (module fixture) from a project directory whose own path holds
spaces, quotes, ``;``, ``$(...)`` and backticks, with a benchmark name and a param made of the
same; every test then looks at what it left, on the controller and on the hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
INV = Path(sys.executable).parent / "inv"
TAG = uuid.uuid4().hex[:6]
MARK = f"pw{TAG}"  # the name of a file that only running hostile text would create
# Each of these would create a file named pw<TAG>* if any shell ever ran it as code.
HOSTILE = f"it's \"q\"; touch /tmp/{MARK}a $(touch {MARK}b) `touch {MARK}c` | touch {MARK}d &>x"
PREFIX = f"k'; touch /tmp/{MARK}-param; $(touch {MARK}-param2) `id`:"
TOKEN = f"fleetbench-secret-token-{TAG}"  # in the controller's environment: must never travel


def _toml(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def run_inv(cwd: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(INV), "--search-root", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"inv {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def small_spawn(project, path: Path, port: int, name: str = "small", benchmark: str = "set") -> Path:
    path.write_text(project.spawn(f"""
name = "{name}"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "redis"
port = {port}
[[benchmark]]
name = {_toml(benchmark)}
workload = "set"
agents = 2
iterations = 2000
params = {{ key_prefix = {_toml(PREFIX)}, keyspace = 100 }}
"""))
    return path


# -- host keys --------------------------------------------------------------------------------

def test_host_keys_are_checked_and_accept_new_is_opt_in(project, tmp_path):
    h = project.hosts
    known = tmp_path / "known_hosts"  # starts empty: every host is unknown
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n    UserKnownHostsFile {known}\n")
    spawn = small_spawn(project, project.path / "keys.toml", 7400)
    build = ["build", "--spawn", str(spawn), "--ssh-config", str(config)]

    refused = run_inv(project.path, *build, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    for host in (h[0], h[3], h[4]):
        assert f"{host}: unknown host key for " in refused.stderr, refused.stderr
    assert "--accept-new-host-keys" in refused.stderr
    assert not known.exists() or known.read_text() == ""

    run_inv(project.path, *build, "--accept-new-host-keys")
    remembered = known.read_text().splitlines()
    assert len(remembered) == 3, remembered
    run_inv(project.path, *build)  # remembered: accepted without the flag from now on

    # Someone else answers for h1: a key that is not the one remembered is always refused.
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    address = remembered[0].split()[0]
    forged = [f"{address} {other.with_suffix('.pub').read_text().split()[0]} "
              f"{other.with_suffix('.pub').read_text().split()[1]}", *remembered[1:]]
    known.write_text("\n".join(forged) + "\n")
    changed = run_inv(project.path, *build, "--accept-new-host-keys", check=False)
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert "has CHANGED" in changed.stderr and "Refusing to connect" in changed.stderr, changed.stderr
    assert "1 host(s) failed" in changed.stderr
    assert known.read_text() == "\n".join(forged) + "\n"  # never overwritten


# -- hostile text is data ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile(project, tmp_path_factory) -> Iterator[dict]:
    """deploy, bench and collect from a project whose path, benchmark name and params are hostile."""
    root = project.path / f"we ird 'p' \"q\" ; $(touch {MARK}-dir) `touch {MARK}-dir2`"
    (root / ".testbed").mkdir(parents=True)
    shutil.copy(project.path / ".testbed" / "ssh_config", root / ".testbed" / "ssh_config")
    for cache in ("build", "platforms"):  # reuse the pexes already built: the same inputs
        if (project.path / ".fleetbench" / cache).is_dir():
            shutil.copytree(project.path / ".fleetbench" / cache, root / ".fleetbench" / cache)
    spawn = small_spawn(project, root / f"evil 'spawn' $(touch {MARK}-file).toml", 7410, "evil", HOSTILE)
    env = {"FLEETBENCH_TEST_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": TOKEN}
    try:
        proc = run_inv(root, "deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                       "collect", "--spawn", str(spawn), env=env)
        yield {"root": root, "proc": proc, "run": root / "runs" / "latest",
               "hosts": [project.hosts[i] for i in (0, 3, 4)]}
    finally:
        run_inv(root, "down", "--spawn", str(spawn), check=False)


def test_hostile_names_params_and_paths_reach_their_targets_as_data(project, hostile):
    run = json.loads((hostile["run"] / "run.json").read_text())
    assert run["status"] == "ok"
    [entry] = run["benchmarks"]
    assert entry["name"] == HOSTILE and entry["ops"] == 2000  # carried exactly, and it ran
    results = [json.loads(p.read_text()) for p in (hostile["run"] / "agents").glob("*/agent-*.json")]
    assert {r["benchmark"] for r in results} == {HOSTILE}
    for r in results:  # what each agent says it was given, on its host
        assert r["result"]["benchmark"] == HOSTILE and r["result"]["job"]["params"]["key_prefix"] == PREFIX
    # The param reached redis as data: keys carry it verbatim.
    import redis

    address = json.loads((hostile["run"] / "deployment.json").read_text())["nodes"][0]["address"]
    password = json.loads((hostile["root"] / ".fleetbench" / "state.json").read_text())["redis_password"]
    keys = list(redis.Redis(address, 7410, password=password, socket_timeout=10).scan_iter(count=1000))
    assert keys and all(k.startswith(PREFIX.encode()) for k in keys), keys[:5]
    # Nothing ran anywhere: no pwned file on any host, in the project or in /tmp.
    for host in project.hosts:
        found = project.ssh(host, f"find /root /tmp /var/tmp /dev/shm -name '{MARK}*' 2>/dev/null; true").stdout
        assert found.strip() == "", (host, found)
    local = subprocess.run(["find", "/tmp", str(project.path), "-name", f"{MARK}*"],
                           capture_output=True, text=True).stdout
    assert local.strip() == "", local


def test_a_hostile_host_name_is_refused_before_any_connection(project, tmp_path):
    spawn = tmp_path / "hosts.toml"
    spawn.write_text(project.spawn(f"""
[hosts]
servers = ["$h1"]
agents = [{_toml(f"$h4;touch /tmp/{MARK}-host")}, {_toml(f"$(touch {MARK}-host2)")}]
[server]
kind = "redis"
[[benchmark]]
name = "b"
workload = "set"
iterations = 10
"""))
    proc = run_inv(project.path, "deploy", "--spawn", str(spawn), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "hosts.agents[0]: " in proc.stderr and "hosts.agents[1]: " in proc.stderr, proc.stderr
    assert "is not an ssh destination" in proc.stderr
    assert "connected to" not in proc.stdout


# -- private files, no secrets -----------------------------------------------------------------

def test_remote_files_are_private_and_nothing_goes_to_shared_tmp(project, hostile):
    for host in hostile["hosts"]:
        modes = project.ssh(host, "stat -c '%a %U %n' ~/.fleetbench ~/.fleetbench/bin/*.pex").stdout.splitlines()
        assert modes and all(line.split()[:2] == ["700", "root"] for line in modes), (host, modes)
        assert project.ssh(host, "ls -A ~").stdout.split() == [".fleetbench"], host  # nothing else in the home
        shared = project.ssh(host, "find /tmp /var/tmp /dev/shm -mindepth 1 2>/dev/null").stdout
        assert shared.strip() == "", (host, shared)


def secrets_of(project) -> list[str]:
    """What must never be written: the private key's body, and a token from the environment."""
    key = (project.path / ".testbed" / "id_ed25519").read_text().splitlines()
    body = [line for line in key if line and not line.startswith("-----")]
    return [TOKEN, "PRIVATE KEY", *body]


def test_no_key_or_token_is_written_to_logs_results_or_hosts(project, hostile):
    secrets = secrets_of(project)
    written = [hostile["proc"].stdout, hostile["proc"].stderr]
    for path in [*(hostile["root"] / "runs").rglob("*"), hostile["root"] / ".fleetbench" / "state.json"]:
        if path.is_file():
            written.append(path.read_text(errors="replace"))
    for host in hostile["hosts"]:  # every file of ours on the host, and the environment of every process
        written.append(project.ssh(host, "find ~/.fleetbench -type f -size -2M ! -name '*.pex' ! -path '*/pex/*' "
                                         "-exec cat {} + 2>/dev/null; "
                                         "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; true"
                                   ).stdout)
    for text in written:
        for secret in secrets:
            assert secret not in text
