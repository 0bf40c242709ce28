"""Watching the hosts while benchmarks run: facts once, a metrics sampler per host, server logs.

When ``bench`` starts, every host of the spawn file (servers and agents) gets, from the agent
pex that deploy put there:

* ``facts`` once (cpu, memory, kernel, OS, python, the sha256 of every pex in ~/.fleetbench/bin);
* a ``metrics`` sampler, started detached (setsid, nohup) like a server node, writing one JSON
  line per second and watching the pid in each of the host's server nodes' ``server.pid``.

Everything of ours on a host lives in ``~/.fleetbench/runs/<run-id>/_host/`` and the sampler
runs with that as its cwd, so the reaper (``inv down``) finds it. A sampler also stops by
itself after ``cap_s`` seconds (``--duration``), so one orphaned by a lost controller does not
run for ever.

Downloads go through a raw SSH channel, compressed on the host (``gzip -c``; plain ``cat`` if a
host has no gzip): after every benchmark phase the metrics lines written since the last fetch
are appended to ``runs/<run-id>/hosts/<host>/metrics.ndjson`` (so a controller that dies mid-run
leaves every finished phase's metrics on disk), and at the end the samplers are stopped, the
last lines fetched, and each server node's logs are kept as ``hosts/<host>/logs/<port>-server.log.gz``
(the server's own log file) and ``<port>-start.log.gz`` (its stdout and stderr; all a ``command``
server may log). The whole logs, since the node started, up to their last LOG_KEEP_BYTES: a node
serves every run of a deployment and what it logged before this run (its start, an earlier
failover) may explain this one. Every download is bounded (see the limits below), compressed
and inflated alike: a broken or hostile host cannot make the controller hold more.

Observation never fails a run: a host whose sampler cannot start or whose files cannot be
fetched is reported as a warning naming the host, and the benchmarks go on.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fabric import Connection

from bench.report import hosts as host_metrics
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import (
    BIN_DIR,
    PEX_ROOT,
    REMOTE_DIR,
    TAIL_BYTES,
    RemoteError,
    cmd,
    label,
    run,
    tail,
    tail_command,
)
from fabfile.remote.streams import ByteTail, gunzip, mib
from fabfile.runs.store import RunDir
from fabfile.servers.kinds import PID_FILE
from fabfile.servers.nodes import LOG, START_LOG, Node
from fabfile.terminal import scrub

Echo = Callable[[str], None]

HOST_SUBDIR = "_host"  # a benchmark's directory never starts with "_" (see runstore.dir_name)
METRICS = "metrics.ndjson"
FACTS = "facts.json"
SAMPLER_LOG = "sampler.log"
INTERVAL_S = 1.0
STOP_GRACE_S = 5.0
FETCH_TIMEOUT_S = 120.0
GZIP_MAGIC = b"\x1f\x8b"
# What a host may cost us (it may be broken or hostile): per metrics fetch, metrics per host in
# all (a 1 s sample is ~1.5 KB: 12 hours), per server log (its last bytes), per download.
METRICS_FETCH_BYTES = 16 << 20
METRICS_KEEP_BYTES = 64 << 20
LOG_KEEP_BYTES = 16 << 20
MAX_DOWNLOAD_BYTES = 32 << 20


def remote_dir(run_id: str) -> str:
    return f"{REMOTE_DIR}/runs/{run_id}/{HOST_SUBDIR}"


def pex_command(agent_pex: str, *args: object, wrapper: str = "") -> str:
    """The agent pex with ``args``; ``wrapper`` (e.g. ``setsid nohup``) goes after the
    environment assignment, which the shell only takes at the start of a command."""
    return f'PEX_ROOT="$HOME/{PEX_ROOT}" {wrapper + " " if wrapper else ""}"$HOME"/{cmd(agent_pex)} {cmd(*args)}'


def sampler_command(agent_pex: str, run_id: str, pid_files: Sequence[str], cap_s: float) -> str:
    """Start the sampler detached in the run's host directory; print its pid.

    Three statements, as in ``nodes.start``: ``a && b &`` would background a subshell.
    """
    directory = remote_dir(run_id)
    watch = "".join(f' --pid-file "$HOME"/{cmd(path)}' for path in pid_files)
    return (
        f"umask 077 && mkdir -p {cmd(directory)} && cd {cmd(directory)} || exit 1\n"
        + pex_command(agent_pex, "metrics", "--interval", INTERVAL_S, "--out", METRICS, "--duration", int(cap_s),
                      wrapper="setsid nohup")
        + f"{watch} > {SAMPLER_LOG} 2>&1 < /dev/null &\n"
        "echo $!"
    )


def facts_command(agent_pex: str, run_id: str) -> str:
    directory = remote_dir(run_id)
    return (f"umask 077 && mkdir -p {cmd(directory)} && cd {cmd(directory)} && "
            f'{pex_command(agent_pex, "facts", "--out", FACTS)} --pex-dir "$HOME"/{cmd(BIN_DIR)}')


def stop_command(run_id: str, pid: int, grace_s: float = STOP_GRACE_S) -> str:
    """TERM the sampler if that pid is still ours (its cwd is the run's host directory), wait
    for it to finish its line and exit, KILL it after ``grace_s``."""
    pid = int(pid)
    return (
        # Real paths on both sides: $HOME may go through a symlink, /proc/PID/cwd never does.
        f'if d=$(cd -P "$HOME"/{cmd(remote_dir(run_id))} 2>/dev/null && pwd) && '
        f'[ "$(readlink /proc/{pid}/cwd 2>/dev/null)" = "$d" ]; then kill {pid}; '
        f"i=0; while [ -d /proc/{pid} ] && [ $i -lt {int(grace_s * 10)} ]; do sleep 0.1; i=$((i+1)); done; "
        f"[ -d /proc/{pid} ] && kill -9 {pid}; fi; true"
    )


def fetch_command(path: str, offset: int = 0, limit: int | None = None, last: int | None = None) -> str:
    """The bytes of ``path`` (relative to the login's home) from ``offset`` on (at most ``limit``
    of them), or its ``last`` bytes; gzip'd on the host when it has gzip; nothing at all when the
    file does not exist."""
    if last is not None:
        part = f'tail -c {int(last)} "$f"'
    else:
        part = f'tail -c +{int(offset) + 1} "$f"' + (f" | head -c {int(limit)}" if limit is not None else "")
    return (f'f="$HOME"/{cmd(path)}; [ -f "$f" ] || exit 0; '
            f"if command -v gzip >/dev/null 2>&1; then {part} | gzip -c; else {part}; fi")


def read_stream(c: Connection, command: str, timeout: float = FETCH_TIMEOUT_S,
                max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """Run ``command`` over a raw channel and return all its stdout bytes (binary-safe, unlike
    ``Connection.run``, which decodes); a host sending more than ``max_bytes`` is refused."""
    channel = c.transport.open_session()
    channel.settimeout(timeout)
    chunks: list[bytes] = []
    size = 0
    errors = ByteTail(TAIL_BYTES)
    try:
        channel.exec_command(command)
        channel.shutdown_write()
        while True:
            data = channel.recv(1 << 16)
            if not data:
                break
            size += len(data)
            if size > max_bytes:
                raise RemoteError(label(c), command, f"sent more than {mib(max_bytes)}; refused")
            chunks.append(data)
        while channel.recv_stderr_ready():
            errors.feed(channel.recv_stderr(1 << 16))
        status = channel.recv_exit_status()
    except OSError as exc:  # socket.timeout included
        raise RemoteError(label(c), command, f"download failed: {exc}") from None
    finally:
        channel.close()
    if status != 0:
        raise RemoteError(label(c), command, tail(errors.text()), status)
    return b"".join(chunks)


def unpack(data: bytes, limit: int = MAX_DOWNLOAD_BYTES, what: str = "a download") -> bytes:
    """``data`` as it was on the host: inflated (never past ``limit``) when it came gzip'd."""
    return gunzip(data, limit, what) if data.startswith(GZIP_MAGIC) else data


@dataclass
class _Host:
    name: str
    nodes: list[Node]
    pid: int | None = None  # the sampler's


class Observer:
    """One run's observation of its hosts; ``start``, then ``checkpoint`` after each phase, then
    ``finish`` (always, also after a failure or Ctrl-C)."""

    def __init__(self, fleet: Fleet, run_dir: RunDir, agent_pex: str, nodes: Sequence[Node],
                 *, cap_s: float, echo: Echo):
        self.fleet = fleet
        self.run_dir = run_dir
        self.agent_pex = agent_pex
        self.cap_s = cap_s
        self.echo = echo
        by_host: dict[str, list[Node]] = {name: [] for name in fleet.names}
        for node in nodes:
            by_host.setdefault(node.host, []).append(node)
        self.hosts = {name: _Host(name, by_host[name]) for name in by_host if name in fleet.connections}
        self._warned: set = set()
        self._pending: list[str] = []  # warnings from worker threads, said after each step

    # -- the steps --

    def start(self) -> None:
        started = time.monotonic()
        done = self._each(self._start_host, "start host metrics")
        # Agents start only once every sampler has taken its first reading, so the metrics
        # cover every second of the run (a sampler needs a pex boot and one interval first).
        self._each(self._wait_first_sample, "first host metrics sample")
        facts = sum(1 for ok in done.values() if ok)
        self.echo(f"host metrics: sampling {len(done)} host(s) every {INTERVAL_S:g}s, facts from {facts} "
                  f"({time.monotonic() - started:.1f}s)")

    def checkpoint(self) -> None:
        """Fetch what the samplers wrote since the last fetch (between phases: cheap)."""
        self._each(self._fetch_metrics, "fetch host metrics")

    def finish(self, linger: bool = True) -> None:
        """Stop the samplers and fetch the rest: metrics, then this run's part of the server logs.

        With ``linger`` it first waits one interval, so the second in which the last benchmark
        ended is sampled too (a sampler writes nothing for a partial interval when stopped).
        """
        if linger and any(h.pid for h in self.hosts.values()):
            time.sleep(INTERVAL_S)
        self._each(self._finish_host, "stop host metrics")
        counts = {name: self.run_dir.host_metrics_text(name).count("\n") for name in self.hosts}
        self.echo("host metrics: " + ", ".join(f"{name} {n}s" for name, n in counts.items()))

    # -- per host --

    def _start_host(self, name: str) -> bool:
        host = self.hosts[name]
        c = self.fleet[name]
        facts_ok = True
        try:
            out = run(c, facts_command(self.agent_pex, self.run_dir.run_id), timeout=120)
            self.run_dir.write_host_facts(name, json.loads(out.strip().splitlines()[-1]))
        except (RemoteError, ValueError, IndexError) as exc:
            facts_ok = False
            self._warn(name, f"no host facts: {exc}")
        pid_files = [f"{node.dir}/{PID_FILE}" for node in host.nodes]
        out = run(c, sampler_command(self.agent_pex, self.run_dir.run_id, pid_files, self.cap_s)).strip()
        try:
            host.pid = int(out.splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteError(name, "start metrics sampler", f"could not read its pid from: {out!r}") from None
        return facts_ok

    def _wait_first_sample(self, name: str, timeout: float = 20.0) -> None:
        path = f"{remote_dir(self.run_dir.run_id)}/{METRICS}"
        deadline = time.monotonic() + timeout
        while run(self.fleet[name], f"test -s {cmd(path)} && echo yes || true").strip() != "yes":
            if time.monotonic() > deadline:
                self._warn(name, f"no host metrics sample after {timeout:.0f}s")
                return
            time.sleep(0.2)

    def _fetch_metrics(self, name: str) -> int:
        offset = self.run_dir.host_metrics_size(name)
        if offset >= METRICS_KEEP_BYTES:
            self._warn(name, f"host metrics reached {mib(METRICS_KEEP_BYTES)}; the rest is not fetched")
            return 0
        path = f"{remote_dir(self.run_dir.run_id)}/{METRICS}"
        data = unpack(read_stream(self.fleet[name], fetch_command(path, offset, METRICS_FETCH_BYTES)),
                      METRICS_FETCH_BYTES, f"{name}: {METRICS}")
        complete = data[:data.rfind(b"\n") + 1]  # a line being written is fetched next time
        if complete:
            self.run_dir.append_host_metrics(name, complete)
        return len(complete)

    def _finish_host(self, name: str) -> None:
        host = self.hosts[name]
        c = self.fleet[name]
        if host.pid:
            run(c, stop_command(self.run_dir.run_id, host.pid), timeout=STOP_GRACE_S + 30)
            host.pid = None
        self._fetch_metrics(name)
        if not self.run_dir.host_metrics_size(name):
            sampler_log = cmd(f"{remote_dir(self.run_dir.run_id)}/{SAMPLER_LOG}")
            log = run(c, tail_command(sampler_log, 5), check=False).strip()
            self._warn(name, "the metrics sampler wrote nothing" + (f"; its log:\n{log}" if log else ""))
        for node in host.nodes:
            for log in (LOG, START_LOG):
                # Its end, where a failure is; the whole log when it is smaller than that.
                data = read_stream(c, fetch_command(f"{node.dir}/{log}", last=LOG_KEEP_BYTES))
                plain = unpack(data, LOG_KEEP_BYTES, f"{name}: {node.dir}/{log}")
                if plain:  # (an empty file still gives a gzip header)
                    # A server that logs its own secret does not put it into runs/.
                    kept = scrub(plain.decode(errors="surrogateescape")).encode(errors="surrogateescape")
                    self.run_dir.write_host_log(name, f"{node.port}-{log}.gz", gzip.compress(kept))

    # -- helpers --

    def _each(self, fn: Callable[[str], Any], what: str) -> dict[str, Any]:
        reachable = [name for name in self.hosts if _connected(self.fleet[name])]
        for name in self.hosts:
            if name not in reachable:
                self._warn(name, f"{what}: skipped, the connection is lost")
        try:
            return self.fleet.each(fn, reachable, what=what)
        except FleetError as exc:
            for host, error in exc.failures.items():
                self._warn(host, f"{what}: {error}")
            return exc.results
        finally:
            pending, self._pending = self._pending, []
            for line in pending:
                self.echo(line)

    def _warn(self, host: str, message: str) -> None:
        key = (host, message)
        if key not in self._warned:
            self._warned.add(key)
            self._pending.append(f"warning: {message}" if message.startswith(f"{host}:")
                                 else f"warning: {host}: {message}")


def _connected(c: Connection) -> bool:
    transport = c.transport
    return transport is not None and transport.is_active()


def host_section(run_dir: RunDir, run: Mapping[str, Any], warn: Echo = lambda _: None) -> dict[str, dict[str, Any]]:
    """run.json's ``hosts`` from what the run directory holds (see bench.report.hosts.host_section).
    A host whose metrics cannot be read or summarised is said with ``warn`` and has none: the
    other hosts and the run are still collected."""
    roles = host_metrics.roles_of(run.get("spawn") or {})
    names = list(dict.fromkeys([*roles, *run_dir.observed_hosts()]))
    facts = {name: _facts(run_dir, name, warn) for name in names}
    windows = host_metrics.benchmark_windows(run.get("benchmarks", ()))
    metrics = {name: _metrics(run_dir, name, windows, warn) for name in names}
    if not any(facts.values()) and not any(metrics.values()):
        return {}  # a run benched before host metrics existed
    return host_metrics.host_section(roles, facts, metrics, windows)


def _facts(run_dir: RunDir, name: str, warn: Echo) -> dict[str, Any] | None:
    try:
        facts = run_dir.host_facts(name)
    except (ValueError, RecursionError) as exc:
        warn(f"warning: {name}: {FACTS} cannot be read ({type(exc).__name__}); no host facts")
        return None
    return facts if isinstance(facts, dict) else None


def _metrics(run_dir: RunDir, name: str, windows: Mapping[str, Any], warn: Echo) -> list[dict[str, Any]]:
    where = f"{run_dir.path}/hosts/{name}/{METRICS}"
    try:
        samples = host_metrics.parse_ndjson(run_dir.host_metrics_text(name), where)
        host_metrics.host_section({}, {}, {name: samples}, windows)  # what collect will do with them
    except Exception as exc:  # anything: the samples came from the host; pure code, so nothing else fails
        warn(f"warning: {name}: its host metrics cannot be used ({type(exc).__name__}: {str(exc)[:200]})")
        return []
    return samples
