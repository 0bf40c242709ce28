"""Faults on a real fleet: bad hosts, servers that do not start, agents killed, links cut,
Ctrl-C, pushes cut off, full disks and a controller killed mid-run.

Each test names the README's failure-behaviour row it proves. Every test leaves the hosts
as it found them (links up, mounts gone); tests that need servers deploy first (a no-op when
they are already up). Durations are short and nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fabfile.remote.host import SshHost
from fabfile.remote.shell import RemoteError
from fabfile.remote.ssh import SshSettings, connection, open_checked
from fabfile.ship.push import PART, push

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
INV = Path(sys.executable).parent / "inv"
PORT = 7300

HEAD = """
name = "faults"
[hosts]
servers = ["$h1"]
agents = ["$h4", "$h5"]
[server]
kind = "redis"
port = 7300
"""
STEADY = """
[[benchmark]]
name = "steady"
workload = "set"
agents = 2
duration = "DURATION"
"""
FIRST = """
[[benchmark]]
name = "first"
workload = "set"
agents = 2
iterations = 2000
"""


# -- helpers -------------------------------------------------------------------------------

class Running:
    """``inv ...`` in the background, its output (stdout and stderr) read as it comes."""

    def __init__(self, project, *args: str):
        self.proc = subprocess.Popen([str(INV), "--search-root", str(REPO), *args], cwd=project.path,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._done = False
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._done = True
            self._cv.notify_all()

    @property
    def output(self) -> str:
        with self._cv:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 180) -> None:
        """Until ``count`` lines match ``pattern``; fails (with the output) if the run ends first."""
        regex = re.compile(pattern)
        with self._cv:
            ok = self._cv.wait_for(lambda: sum(1 for x in self.lines if regex.search(x)) >= count or self._done,
                                   timeout)
            seen = sum(1 for x in self.lines if regex.search(x))
        if not ok or seen < count:
            self.proc.kill()
            raise AssertionError(f"never saw {count} line(s) matching {pattern!r}:\n{self.output[-6000:]}")

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout)
        with self._cv:
            self._cv.wait_for(lambda: self._done, 10)
        return code


# python3 gone from /usr/bin for one host: an overlay whose upper layer deletes it.
NO_PYTHON = ("mount -t tmpfs tmpfs /mnt && mkdir /mnt/up /mnt/work && mount -t overlay overlay "
             "-o lowerdir=/usr/bin,upperdir=/mnt/up,workdir=/mnt/work /usr/bin && rm /usr/bin/python3*")


def spawn_file(project, name: str, duration: str = "3s", first: bool = False) -> str:
    """The faults spawn: a standalone redis on h1, agents on h4 and h5 (agent 1 runs on h5)."""
    return str(project.write_spawn(name, HEAD + (FIRST if first else "") + STEADY.replace("DURATION", duration)))


def _testbed(project):
    from devtools.testbed import Testbed

    return Testbed(project.path / ".testbed", prefix=os.environ.get("FLEETBENCH_TEST_PREFIX", "ft"),
                   subnet=int(os.environ.get("FLEETBENCH_TEST_SUBNET", "251")))


def in_host_mounts(project, host: str, script: str) -> None:
    """Run ``script`` as root in ``host``'s own mount namespace (what its logins see)."""
    pid = {h.name: h.sshd_pid for h in _testbed(project).hosts()}[host]
    # -p too: the host's /proc is its own pid namespace's, and mount tools read /proc/self.
    subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "--", "sh", "-ec", script], check=True, timeout=30)


def our_processes(project, host: str) -> list[str]:
    """Every process on ``host`` whose working directory is (or was) under ~/.fleetbench."""
    out = project.ssh(host, 'for p in /proc/[0-9]*; do c=$(readlink "$p/cwd" 2>/dev/null) || continue; '
                            'case "$c" in "$HOME"/.fleetbench*) echo "${p#/proc/} $c";; esac; done').stdout
    return out.split("\n") if out.strip() else []


def checked_connection(project, host: str):
    settings = SshSettings((project.path / ".testbed" / "ssh_config",))
    return open_checked(connection(host, settings), settings)


def deployed(project, spawn: str) -> dict:
    project.inv("deploy", "--spawn", spawn)
    return json.loads((project.path / ".fleetbench" / "state.json").read_text())


def latest_run(project) -> Path:
    return project.path / "runs" / "latest"


def agent_record(run_dir: Path, benchmark: str, n: int) -> dict:
    return json.loads((run_dir / "agents" / benchmark / f"agent-{n}.json").read_text())


# -- 1. bad hosts: one preflight names them all, before anything starts anywhere --------------

def test_preflight_names_every_bad_host_before_anything_starts(project):
    h = project.hosts
    subnet = os.environ.get("FLEETBENCH_TEST_SUBNET", "251")
    unreachable = f"root@10.213.{subnet}.250:22"  # in the testbed's subnet, where no host answers
    spawn = project.write_spawn("bad-hosts.toml", f"""
name = "bad-hosts"
[hosts]
servers = ["{h[0]}"]
agents = ["no-such-user@{h[1]}", "{unreachable}", "{h[4]}", "{h[5]}"]
[server]
kind = "redis"
[[benchmark]]
name = "b"
workload = "set"
iterations = 10
""")
    def snapshot() -> list[str]:
        return [project.ssh(host, "find ~/.fleetbench -type f 2>/dev/null | sort; true").stdout
                + "\n".join(our_processes(project, host)) for host in (h[0], h[3])]

    before = snapshot()
    # h5: a disk with 2 MB free where fleetbench keeps its files; h6: no python3 at all (not a failure).
    in_host_mounts(project, h[4],
                   "mkdir -p /root/.fleetbench && mount -t tmpfs -o size=2m,mode=700 tmpfs /root/.fleetbench")
    in_host_mounts(project, h[5], NO_PYTHON)
    try:
        proc = project.inv("deploy", "--spawn", str(spawn), check=False, timeout=180)
    finally:
        in_host_mounts(project, h[4], "umount /root/.fleetbench")
        in_host_mounts(project, h[5], "umount -l /usr/bin && umount -l /mnt")  # lazy: sh itself runs from there
    assert proc.returncode == 1, proc.stdout
    err = proc.stderr
    assert "Traceback" not in err
    assert "3 host(s) failed" in err, err
    assert f"no-such-user@{h[1]}: login refused" in err
    assert f"{unreachable}: cannot reach" in err
    assert f"{h[4]}: " in err and re.search(r"only \d MB free in /root/\.fleetbench ", err), err
    # A host without python3 is no failure (it gets the bundled python), and with bad hosts in the
    # fleet nothing is pushed to it either (the snapshot below covers the good hosts).
    assert f"{h[5]}:" not in err and "bundled python on" not in proc.stdout
    assert f"{h[0]}:" not in err  # the good host is not blamed
    assert "connected to" not in proc.stdout  # nothing went further than the preflight
    assert snapshot() == before  # no file pushed, nothing started or stopped on the good hosts


# -- 2. a server that fails to start: its log tail, and nothing left running ----------------------

def test_server_that_cannot_start_shows_its_log_and_leaves_nothing_running(project):
    h = project.hosts
    text = (HEAD + STEADY).replace('servers = ["$h1"]', 'servers = ["$h1", "$h2", "$h3"]')
    spawn = project.write_spawn("port-taken.toml",
                                text.replace('kind = "redis"', 'kind = "redis-cluster"').replace("DURATION", "1s"))
    # Something that is not ours already listens on the port on h2: its node cannot start.
    squatter = project.ssh(h[1], f"nohup python3 -c 'import socket, time; s = socket.socket(); "
                                 f"s.bind((\"0.0.0.0\", {PORT})); s.listen(); time.sleep(600)' "
                                 ">/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
    try:
        proc = project.inv("deploy", "--spawn", str(spawn), check=False, timeout=300)
        assert proc.returncode == 1, proc.stdout
        assert "Traceback" not in proc.stderr
        assert "Address already in use" in proc.stderr, proc.stderr  # the tail of the node's own log
        assert f"{h[1]}: `redis-server" in proc.stderr or f"  - {h[1]}:" in proc.stderr, proc.stderr
        for host in h[:3]:  # the nodes that did start were stopped again
            assert our_processes(project, host) == []
        assert project.ssh(h[1], f"kill -0 {squatter} && echo alive").stdout.strip() == "alive"  # not ours: untouched
    finally:
        project.ssh(h[1], f"kill {squatter} || true")
        project.inv("down", "--spawn", str(spawn), check=False)


# -- 3. an agent killed mid-run: the others' results kept and merged ------------------------------

def test_killed_agent_is_recorded_and_the_others_are_merged(project):
    h = project.hosts
    spawn = spawn_file(project, "killed.toml", "4s")
    deployed(project, spawn)
    # --verbose: the agents' own lines ("measuring ...") say when to strike
    run = Running(project, "bench", "--spawn", spawn, "--verbose", "collect", "--spawn", spawn)
    run.wait_for(r"\] measuring", count=2)
    # agent 1 runs on h5 (round-robin over [h4, h5]); kill -9 leaves it no chance to report.
    # Only the agent: its host run (which started it) sees it die and records how.
    project.ssh(h[4], 'for p in /proc/[0-9]*; do case "$(readlink "$p/cwd")" in */.fleetbench/runs/*/steady) '
                      'kill -9 "${p#/proc/}";; esac; done')
    assert run.finish() == 1, run.output  # a partial run fails `collect` unless --allow-partial
    out = run.output
    assert "Traceback" not in out
    assert f"agent steady#1 on {h[4]} failed: the agent was killed by a signal" in out, out
    run_dir = latest_run(project)
    merged = json.loads((run_dir / "run.json").read_text())
    assert merged["status"] == "partial"
    steady = merged["benchmarks"][0]
    assert steady["agents"] == 2 and steady["agents_ok"] == 1 and steady["ops"] > 0
    failure = agent_record(run_dir, "steady", 1)["failure"]
    assert failure["host"] == h[4] and "killed by a signal" in failure["error"]
    assert "measuring" in failure["stderr_tail"]  # what the agent said before it died
    assert agent_record(run_dir, "steady", 0)["result"]["ops"] == steady["ops"]
    assert project.inv("collect", "--spawn", spawn, "--allow-partial").returncode == 0


# -- 4. a host's link cut mid-run (from us and from the other hosts): given up after --host-timeout ----

def test_lost_host_is_given_up_after_the_host_timeout(project):
    h = project.hosts
    spawn = spawn_file(project, "lost.toml", "6s")
    deployed(project, spawn)
    link = f"fbv-{h[4]}"  # h5's veth in the root namespace: its only way to anywhere
    run = Running(project, "bench", "--spawn", spawn, "--host-timeout", "4", "--verbose", "collect", "--spawn", spawn)
    try:
        run.wait_for(r"\] measuring", count=2)
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        code = run.finish(timeout=120)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    out = run.output
    assert code == 1, out
    assert "Traceback" not in out
    assert f"lost {h[4]}, retrying" in out, out
    assert f"gave up on {h[4]} after" in out, out  # the other hosts were done and had dropped it too
    assert f"lost host(s): {h[4]}" in out
    run_dir = latest_run(project)
    assert agent_record(run_dir, "steady", 0)["result"]["ops"] > 0  # h4's agent finished and was kept
    failure = agent_record(run_dir, "steady", 1)["failure"]
    assert failure["host"] == h[4] and f"lost the connection to {h[4]}" in failure["error"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["lost_hosts"] == [h[4]] and meta["status"] == "partial"
    project.fab("-H", h[4], "stop")  # its agent, cut off from the server, is ours to clean


# -- 5. Ctrl-C: agents stop everywhere, partial results saved, servers as the flag says ----------

@pytest.mark.parametrize("keep_up", [True, False], ids=["keep-up", "default"])
def test_ctrl_c_stops_every_agent_and_keeps_what_they_measured(project, keep_up):
    h = project.hosts
    spawn = spawn_file(project, "sigint.toml", "60s")
    run = Running(project, "spawn", "--spawn", spawn, "--verbose", *(["--keep-up"] if keep_up else []))
    run.wait_for(r"\] measuring", count=2)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=120) == 130, run.output
    out = run.output
    assert "Traceback" not in out and "spawn interrupted" in out
    assert "stopping this run's agents" in out
    run_dir = latest_run(project)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    for n in (0, 1):  # each agent was stopped, not killed: it reported what it had measured
        record = agent_record(run_dir, "steady", n)
        assert record["result"]["interrupted"] is True and record["result"]["ops"] > 0, record
    for host in (h[0], h[3], h[4]):  # agents and host samplers: nothing of the run is left
        assert not [p for p in our_processes(project, host) if "/runs/" in p]
    servers = our_processes(project, h[0])
    if keep_up:
        assert [p for p in servers if f"/nodes/{PORT}" in p], servers  # the server stayed up
    else:
        assert servers == []  # `inv spawn` took everything down
        for host in h[:5]:
            assert project.ssh(host, "test -e ~/.fleetbench && echo left || true").stdout.strip() == ""
    project.inv("collect", "--spawn", spawn, "--allow-partial")  # what they measured merges
    run = json.loads((run_dir / "run.json").read_text())
    assert run["bench_status"] == "interrupted" and run["benchmarks"][0]["ops"] > 0


# -- 6. a push cut off halfway: never executed, completed by the next deploy ---------------------

def test_push_cut_off_halfway_is_never_run_and_the_next_deploy_completes_it(project):
    h = project.hosts
    spawn = spawn_file(project, "cut.toml")
    agent = deployed(project, spawn)["artifacts"]["agent"]
    local, remote, sha = Path(agent["path"]), agent["remote_path"], agent["sha256"]
    folder, name = str(Path(remote).parent), Path(remote).name
    # A push whose host died halfway (power loss) leaves its temporary file, as `cat` made it.
    project.ssh(h[3], f"cd ~/{folder} && umask 077 && head -c 1000000 {name} > {name}{PART}dead && rm {name}")

    c = checked_connection(project, h[3])

    def cut(host: str, sent: int, total: int) -> None:
        assert sent < total
        c.transport.sock.shutdown(socket.SHUT_RDWR)  # the network goes away mid-stream

    with pytest.raises(RemoteError, match=rf"(?s)^{h[3]}: `cat > ~/{re.escape(remote)}{PART}.*the connection was lost"):
        push(SshHost(c), local, remote, sha, cut)
    c.close()

    def listing() -> str:
        return project.ssh(h[3], f"cd ~/{folder} && stat -c '%a %s %n' {name}* 2>/dev/null; true").stdout

    # The cut-off stream fails its sha256 check on the host, which removes it (polled: the
    # host-side shell finishes after the connection is gone); the final name never appears.
    left = poll(listing, lambda text: len(text.splitlines()) == 1)
    assert left.split() == ["600", "1000000", f"{name}{PART}dead"], left

    out = project.inv("deploy", "--spawn", spawn).stdout
    assert "pushed 1 file(s)" in out, out
    done = project.ssh(h[3], f"cd ~/{folder} && sha256sum {name} && stat -c '%a' {name}* ").stdout.split()
    assert done == [sha, name, "700"], done  # complete, executable, and the leftover is gone


def poll(read, ok, tries: int = 100):
    """``read()`` until ``ok`` of it, backing off; returns the last value (asserted by the caller)."""
    import time

    value = read()
    delay = 0.05
    for _ in range(tries):
        if ok(value):
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
        value = read()
    return value


# -- 7. a full disk: an error naming the host and the path ------------------------------------

def test_full_disk_during_a_push_names_the_host_and_the_file(project):
    h = project.hosts
    spawn = spawn_file(project, "full.toml")
    agent = deployed(project, spawn)["artifacts"]["agent"]
    bin_dir = str(Path(agent["remote_path"]).parent)
    in_host_mounts(project, h[5],
                   f"mkdir -p /root/{bin_dir} && mount -t tmpfs -o size=2m,mode=700 tmpfs /root/{bin_dir}")
    try:
        c = checked_connection(project, h[5])
        with pytest.raises(RemoteError) as caught:
            push(SshHost(c), Path(agent["path"]), agent["remote_path"], agent["sha256"])
        c.close()
        left = project.ssh(h[5], f"ls -A ~/{bin_dir}").stdout.strip()
    finally:
        in_host_mounts(project, h[5], f"umount /root/{bin_dir}")
    message = str(caught.value)
    assert message.startswith(f"{h[5]}: `cat > ~/{agent['remote_path']}{PART}"), message
    assert "No space left on device" in message, message
    assert left == "", left  # the partial file was removed


# -- 8. the controller killed mid-run: finished work on disk, `inv down` cleans everything --------

def test_controller_killed_mid_run_keeps_what_finished_and_down_cleans_up(project):
    h = project.hosts
    spawn = spawn_file(project, "killed-controller.toml", "60s", first=True)
    deployed(project, spawn)
    run = Running(project, "bench", "--spawn", spawn, "--verbose")
    run.wait_for(r"steady#\d\] .* measuring", count=2)
    run.proc.kill()
    run.finish()
    run_dir = latest_run(project)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "running"  # it never got to finish
    for n in (0, 1):
        assert agent_record(run_dir, "first", n)["result"]["ops"] == 1000
    assert [p for p in our_processes(project, h[3]) if "/runs/" in p]  # orphaned agents still run

    project.inv("down", "--spawn", spawn)
    for host in (h[0], h[3], h[4]):  # every host of the deployment
        assert our_processes(project, host) == []
        assert project.ssh(host, "test -e ~/.fleetbench && echo left || true").stdout.strip() == ""
    merged = project.inv("collect", "--spawn", spawn, "--allow-partial").stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert run["bench_status"] == "running" and run["benchmarks"][0]["ops"] == 2000, merged
