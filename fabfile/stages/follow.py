"""Following host runs: stream what the hosts write, ride out lost links, fetch what was missed.

One thread per host polls its run directory (fabfile.runs.hostrun.poll_command) about once a
second: the host run's state, the new bytes of each agent's stderr (echoed, labelled), each
result once it exists, the host metrics since the last poll. Everything lands in the local run
directory as it arrives, so a controller killed at any moment leaves what it had, and a later
``inv collect`` fetches the rest from the hosts (nothing a host finished is lost).

A host that stops answering is said once ("lost tb4, retrying ..."), retried with backoff for
``reconnect_for`` seconds, and greeted when it is back ("tb4 back after 45 s"); the offsets
make the next poll fetch exactly what was missed. A host still silent after that is recorded
lost. One the barrier coordinator also gave up (frozen or dead, not merely cut off from us) is
recorded lost after ``host_timeout`` once every other host has finished.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.wire.result import AgentRecord, AgentResult, Failure
from fabfile.remote.fleet import Fleet
from fabfile.remote.shell import RemoteError, tail
from fabfile.remote.ssh import open_checked, set_host_timeout
from fabfile.runs import hostrun
from fabfile.runs.observe import GZIP_MAGIC, fetch_command, unpack
from fabfile.runs.store import RunDir, write_json
from fabfile.servers.nodes import LOG, START_LOG, Node

Echo = Callable[[str], None]
MAX_BACKOFF_S = 15.0
STDERR_TAIL = 200


def backoff(attempt: int, left_s: float) -> float:
    """Seconds before reconnect attempt ``attempt`` (0-based): 1, 2, 4, 8, then every 15 s,
    never past the time left."""
    return max(0.0, min(MAX_BACKOFF_S, 2.0 ** attempt, left_s))


def duration_text(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class HostFollow:
    name: str
    state: dict[str, Any] | None = None
    missing: bool = False  # the host has no such run
    stderr: dict[str, bytearray] = field(default_factory=dict)  # agent key -> what it wrote so far
    results: dict[str, AgentResult | None] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)
    facts: bool = False
    dead: bool = False  # its host run's process is gone without having ended the run
    lost_since: float | None = None
    last_answer: float | None = None  # monotonic time of its last answer: a loss is counted from there
    lost_for: float = 0.0  # the last loss's length
    gave_up: str | None = None
    finished: bool = False

    @property
    def status(self) -> str | None:
        status = (self.state or {}).get("status")
        return "failed" if self.dead and status not in hostrun.TERMINAL else status


def agent_record(host: str, agent: Mapping[str, Any], result: AgentResult | None, stderr: str) -> AgentRecord:
    """The local agent record (store.RunDir.write_agent) of an agent the host run is done with."""
    benchmark = str(agent.get("benchmark"))
    code = agent.get("exit_code")
    if result is not None and code == 0 and not result.get("fatal"):
        return {"benchmark": benchmark, "result": result}
    reasons = {"stopped": "stopped: the run was stopped before it ended (what it measured is kept)",
               "timeout": "stopped: it ran past the agent timeout",
               "pending": "never started: the run ended before its phase",
               "running": "lost: the host run ended while it ran"}
    if isinstance(code, int) and code < 0 and result is None:
        error = f"the agent was killed by a signal ({-code}) and wrote no result"
    else:
        fatal = result.get("fatal") if result is not None else None
        error = fatal or reasons.get(str(agent.get("state"))) or (
            f"exit status {code}" + (" and no result" if result is None else ""))
    failure: Failure = {"agent_num": int(agent.get("agent_num", -1)), "host": host, "error": error,
                        "stderr_tail": tail(stderr)}
    return {"benchmark": benchmark, "failure": failure, "result": result}


class Follower:
    def __init__(self, fleet: Fleet, run_dir: RunDir, hosts: Sequence[str], *, nodes: Sequence[Mapping[str, Any]],
                 expected: Mapping[str, Sequence[Mapping[str, Any]]], echo: Echo, renew: bool, reconnect_for: float,
                 host_timeout: float, poll_s: float = 1.0, stream: bool = True,
                 phases: Sequence[Sequence[str]] = (), write: bool = True):
        self.fleet = fleet
        self.run_dir = run_dir
        self.run_id = run_dir.run_id
        self.hosts = {name: HostFollow(name) for name in hosts}
        self.nodes = [Node(**n) for n in nodes]
        self.expected = expected  # host -> the agents its plan gave it (benchmark, agent_num)
        self.echo = echo
        self.renew = renew
        self.reconnect_for = reconnect_for
        self.host_timeout = host_timeout
        self.poll_s = poll_s
        self.stream = stream
        self.halt = threading.Event()
        self.phases = [list(p) for p in phases]
        self.write = write  # False (status): read the hosts' states, write nothing locally
        self._announced: set[int] = set()
        self._lock = threading.Lock()

    # -- the whole fleet --

    def follow(self) -> None:
        """Until every host's run has ended and been fetched, or the host is recorded lost."""
        threads = [threading.Thread(target=self._follow_host, args=(h,), daemon=True) for h in self.hosts.values()]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # short slices: Ctrl-C is seen at once
        finally:
            self.halt.set()

    def fetch_once(self) -> None:
        """One pass over every host (collect): what each finished, whatever state it is in."""
        def one(h: HostFollow) -> None:
            try:
                self._connect(h.name)
                self._poll(h)
                if h.state is not None and self.write:
                    self._poll(h)  # now knowing its agents: their files
                if h.status in hostrun.TERMINAL and self.write:
                    self._fetch_logs(h)
            except Exception as exc:  # any way of not answering (paramiko has many): unreachable
                h.gave_up = f"unreachable: {str(exc) or type(exc).__name__}"
        threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in self.hosts.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.host_timeout + self.fleet.settings.connect_timeout + 30)

    def stop(self, timeout: float) -> None:
        """Ask every host we can reach to stop the run (Ctrl-C)."""
        def one(name: str) -> None:
            try:
                self._connect(name)
                hostrun.exec_with_stdin(self.fleet[name], hostrun.stop_command(self.run_id), b"", timeout)
            except Exception as exc:  # tell and go on: the others must still be asked
                self.echo(f"warning: could not ask {name} to stop: {str(exc) or type(exc).__name__}")
        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in self.hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + self.fleet.settings.connect_timeout)

    def lost(self) -> list[str]:
        return [h.name for h in self.hosts.values() if h.gave_up]

    def clock(self) -> dict[str, dict[str, Any]]:
        return {h.name: h.state["clock"] for h in self.hosts.values() if h.state and h.state.get("clock")}

    def statuses(self) -> dict[str, str | None]:
        return {h.name: h.status for h in self.hosts.values()}

    # -- one host --

    def _follow_host(self, h: HostFollow) -> None:
        attempt = 0
        while not self.halt.is_set():
            try:
                self._connect(h.name)
                self._poll(h)
            except Exception as exc:  # any way of not answering (paramiko has many) is a lost host
                now = time.monotonic()
                if h.lost_since is None:
                    h.lost_since = h.last_answer or now
                    attempt = 0
                    self.echo(f"lost {h.name}, retrying for up to {duration_text(self.reconnect_for)} ...")
                lost_for = now - h.lost_since
                if lost_for >= self.reconnect_for or self._given_up_by_the_fleet(h, lost_for):
                    h.gave_up = f"no answer for {duration_text(lost_for)} ({str(exc) or type(exc).__name__})"
                    self.echo(f"gave up on {h.name} after {duration_text(lost_for)}: recorded lost; "
                              f"`inv collect --run {self.run_id}` fetches what it finished once it is back")
                    self._record_lost(h)
                    return
                self._drop(h.name)
                self.halt.wait(backoff(attempt, self.reconnect_for - lost_for))
                attempt += 1
                continue
            h.last_answer = time.monotonic()
            if h.lost_since is not None:
                h.lost_for = h.last_answer - h.lost_since
                self.echo(f"{h.name} back after {duration_text(h.lost_for)}")
                h.lost_since = None
            if h.missing or h.finished:
                if h.finished:
                    self._fetch_logs(h)
                return
            self.halt.wait(self.poll_s)

    def _given_up_by_the_fleet(self, h: HostFollow, lost_for: float) -> bool:
        """Frozen or dead rather than cut off from us: the coordinator dropped it too, and every
        other host is done."""
        if lost_for < self.host_timeout:
            return False
        others = [o for o in self.hosts.values() if o is not h]
        if not others or not all(o.finished or o.gave_up for o in others):
            return False
        return any(h.name in ((o.state or {}).get("barrier") or {}).get("dropped", {}) for o in others)

    def _connect(self, name: str) -> None:
        c = self.fleet[name]
        if c.transport is None or not c.transport.is_active():
            self._drop(name)
            open_checked(c, self.fleet.settings)
            set_host_timeout(c, self.host_timeout, self.fleet.settings.keepalive_s)

    def _drop(self, name: str) -> None:
        try:
            self.fleet[name].close()
        except Exception:  # a dead transport may fail to close in many ways; it is gone either way
            pass

    def _poll(self, h: HostFollow) -> None:
        offsets: dict[str, int] = {hostrun.METRICS: self.run_dir.host_metrics_size(h.name)}
        if not h.facts:
            offsets[hostrun.FACTS] = 0
        for key in (h.state or {}).get("agents", {}):
            if key not in h.recorded:
                offsets[f"{key}.stderr"] = len(h.stderr.get(key, b""))
                if h.results.get(key) is None:
                    offsets[f"{key}.json"] = 0
        if not self.write:
            offsets = {}
        command = hostrun.poll_command(self.run_id, offsets, self.renew)
        data = unpack(hostrun.exec_with_stdin(self.fleet[h.name], command, b"", self.host_timeout))
        files = hostrun.parse_poll(data)
        if files is None:
            h.missing = True
            return
        if not self.write:
            h.state = json.loads(files[hostrun.STATE][1]) if hostrun.STATE in files else None
            h.dead = files.get(hostrun.ALIVE, (0, b"1"))[1].strip() == b"0"
            return
        self._take(h, files, asked={p[:-len(".json")] for p in offsets if p.endswith(".json")})

    def _take(self, h: HostFollow, files: Mapping[str, tuple[int, bytes]], asked: set[str] | None = None) -> None:
        """One poll's files. An agent is recorded once it has ended and its result file was
        asked for (so "no result" is a fact, not a file not yet asked about); ``asked`` None:
        every agent's was."""
        if hostrun.STATE in files:
            h.state = json.loads(files[hostrun.STATE][1])
            write_json(self.run_dir.host_dir(h.name) / "hostrun.json", h.state)
            self._announce((h.state or {}).get("phase"))
        if hostrun.FACTS in files:
            try:
                self.run_dir.write_host_facts(h.name, json.loads(files[hostrun.FACTS][1]))
                h.facts = True
            except ValueError:
                pass  # being written: next time
        offset, metrics = files.get(hostrun.METRICS, (0, b""))
        complete = metrics[:metrics.rfind(b"\n") + 1]
        if complete and offset == self.run_dir.host_metrics_size(h.name):
            self.run_dir.append_host_metrics(h.name, complete)
        agents = (h.state or {}).get("agents", {})
        for key, agent in agents.items():
            self._take_stderr(h, key, agent, files.get(f"{key}.stderr"))
            if f"{key}.json" in files:
                try:
                    h.results[key] = json.loads(files[f"{key}.json"][1])
                except ValueError:
                    h.results[key] = None
        if hostrun.ALIVE in files:
            h.dead = files[hostrun.ALIVE][1].strip() == b"0"
        ended = h.status in hostrun.TERMINAL
        for key, agent in agents.items():
            known = asked is None or key in asked or h.results.get(key) is not None
            if key not in h.recorded and known and (agent.get("state") in hostrun.AGENT_ENDED or ended):
                self._record(h, key, agent)
        h.finished = ended and all(k in h.recorded for k in agents)

    def _announce(self, phase: object) -> None:
        """``benchmark <names> ...`` once, when the first host reaches a phase."""
        if not isinstance(phase, int) or not 0 <= phase < len(self.phases) or not self.stream:
            return
        with self._lock:
            if phase in self._announced:
                return
            self._announced.add(phase)
        self.echo(f"benchmark {', '.join(self.phases[phase])} ...")

    def _take_stderr(self, h: HostFollow, key: str, agent: Mapping[str, Any], part: tuple[int, bytes] | None) -> None:
        if part is None:
            return
        buffer = h.stderr.setdefault(key, bytearray())
        offset, data = part
        if offset != len(buffer):
            return  # not what we asked for (cannot happen unless the file shrank)
        before = bytes(buffer).rsplit(b"\n", 1)[-1] if buffer else b""
        buffer += data
        if self.stream:
            text = (before + data).decode(errors="replace")
            *lines, _partial = text.split("\n")
            for line in lines:
                self.echo(f"[{h.name} {agent.get('benchmark')}#{agent.get('agent_num')}] {line.rstrip()}")

    def _record(self, h: HostFollow, key: str, agent: Mapping[str, Any]) -> None:
        stderr = bytes(h.stderr.get(key, b"")).decode(errors="replace")
        record = agent_record(h.name, agent, h.results.get(key), stderr)
        lines = stderr.splitlines()[-STDERR_TAIL:]
        self.run_dir.write_agent(str(agent["benchmark"]), int(agent["agent_num"]), record, lines)
        h.recorded.add(key)
        if "failure" in record and agent.get("state") not in ("stopped", "pending"):
            self.echo(f"agent {agent['benchmark']}#{agent['agent_num']} on {h.name} failed: "
                      f"{record['failure']['error']}")

    def _record_lost(self, h: HostFollow) -> None:
        """A failure record for each of its agents we have no record of (a later collect that
        reaches the host replaces it with what the agent wrote there)."""
        for agent in self.expected.get(h.name, ()):
            key = f"{agent['dir']}/agent-{agent['agent_num']}"
            if key in h.recorded:
                continue
            stderr = bytes(h.stderr.get(key, b"")).decode(errors="replace")
            failure: Failure = {"agent_num": int(agent["agent_num"]), "host": h.name, "stderr_tail": tail(stderr),
                                "error": f"lost the connection to {h.name} ({h.gave_up}); its result stays on the host"}
            record: AgentRecord = {"benchmark": str(agent["benchmark"]), "failure": failure, "result": None}
            self.run_dir.write_agent(record["benchmark"], int(agent["agent_num"]), record, stderr.splitlines())

    def _fetch_logs(self, h: HostFollow) -> None:
        """Each server node's logs on this host, whole (see fabfile.runs.observe)."""
        for node in (n for n in self.nodes if n.host == h.name):
            for log in (LOG, START_LOG):
                try:
                    data = hostrun.exec_with_stdin(self.fleet[h.name], fetch_command(f"{node.dir}/{log}"), b"",
                                                   self.host_timeout)
                except (RemoteError, OSError, EOFError) as exc:
                    self.echo(f"warning: {h.name}: no server log {node.port}-{log}: {exc}")
                    continue
                if unpack(data):
                    packed = data if data.startswith(GZIP_MAGIC) else gzip.compress(data)
                    self.run_dir.write_host_log(h.name, f"{node.port}-{log}.gz", packed)
