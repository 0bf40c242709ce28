"""The controller's side of host runs (bench.agent.hostrun): plans, starting, polling, stopping.

A run lives on the hosts: ``start`` hands every host of the fleet its plan (over the SSH
channel's stdin: it holds the barrier token, so never a command line) and starts its host run
detached; from then on the controller only reads what the hosts wrote (``poll``), renews the
lease while it is attached and asks for a stop on Ctrl-C. Every command here has a timeout.

The pure parts (plans, the poll script and its framing, the run's summary) are apart from the
few side effects at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.spawn import plan as planner
from bench.spawn import spec
from bench.wire.hostrun import (
    AGENT_ENDED,
    ALIVE,
    FACTS,
    FRAME,
    LOG,
    METRICS,
    MISSING,
    PLAN,
    PLAN_SCHEMA,
    POLL_BUDGET_BYTES,
    POLL_FILE_BYTES,
    POLL_LOG_BYTES,
    POLL_MAX_BYTES,
    RUN_SUBDIR,
    STATE,
    TERMINAL,
    Plan,
    PlanBarrier,
    PlanPhase,
    WireError,
    parse_poll,
    poll_limit,
    wire_job,
)
from bench.wire.job import AgentJob
from fabfile.remote.host import Host, HostLost
from fabfile.remote.shell import BIN_DIR, PEX_ROOT, REMOTE_DIR, RemoteError, cmd, tail
from fabfile.runs.store import dir_name
from fabfile.servers.kinds import PID_FILE
from fabfile.servers.nodes import Node

__all__ = ["AGENT_ENDED", "ALIVE", "FACTS", "FRAME", "LOG", "METRICS", "STATE", "TERMINAL", "WireError", "parse_poll"]

START_LEAD_S = 0.5  # from "every agent of phase k is ready" to its start: the start files reach them all
START_TIMEOUT_S = 120.0  # starting a host run boots the agent pex: slow on a busy host, whatever --host-timeout
LEASE_MARGIN_S = 1800.0


def run_path(run_id: str) -> str:
    """The run's directory on a host, relative to the login's home."""
    return f"{REMOTE_DIR}/runs/{dir_name(run_id)}"


@dataclass(frozen=True)
class Barrier:
    coordinator: str
    address: str
    port: int
    token: str
    participants: tuple[str, ...]

    def to_dict(self) -> PlanBarrier:
        return {"coordinator": self.coordinator, "address": self.address, "port": self.port, "token": self.token,
                "participants": list(self.participants)}


def new_barrier(hosts: Sequence[str], coordinator: str, address: str) -> Barrier:
    return Barrier(coordinator, address, 20000 + secrets.randbelow(40000), secrets.token_hex(32), tuple(hosts))


PhaseJobs = tuple[list[str], list[tuple[str, AgentJob]]]


def phase_jobs(spawn: spec.Spawn, run_id: str, targets: Sequence[str]) -> list[PhaseJobs]:
    """Every phase in order: its benchmark names and (host, job) for each of its agents."""
    out = []
    for phase in planner.phases(spawn):
        jobs: list[tuple[str, AgentJob]] = []
        for benchmark in phase:
            jobs += planner.assign(planner.agent_jobs(spawn, benchmark, run_id, targets), spawn.hosts.agents)
        out.append(([b.name for b in phase], jobs))
    return out


def planned_seconds(spawn: spec.Spawn) -> float:
    """How long the run should take when every phase's duration is known (ops-counted phases
    count for nothing: the lease's margin covers them); a capacity search at its most steps."""
    total = 0.0
    for phase in planner.phases(spawn):
        for b in phase:
            searched = planner.search_spec(b)
            if searched is not None:
                total += searched.max_steps * (2 * START_LEAD_S + b.warmup_s + searched.step_s)
        total += START_LEAD_S + max((b.warmup_s + (b.duration_s or 0.0)) for b in phase)
    return total


def default_lease(spawn: spec.Spawn) -> float:
    return planned_seconds(spawn) + LEASE_MARGIN_S


def host_plans(*, spawn: spec.Spawn, run_id: str, hosts: Sequence[str], targets: Sequence[str], agent_pex: str,
               nodes: Sequence[Mapping[str, Any]], barrier: Barrier | None, lease_s: float, host_timeout_s: float,
               agent_timeout_s: float, sampler_cap_s: float, auth: str | None = None,
               environ: Mapping[str, str] = os.environ) -> dict[str, Plan]:
    """Each host's plan.json: every phase (so hosts without agents in it still keep the order)
    and this host's agent jobs in each, as their agents get them (:func:`wire_job`: the redis
    password ``auth`` in, every { env = ... } resolved from ``environ``). A plan is secret: it
    travels on stdin, and the host run removes it once read."""
    phases = phase_jobs(spawn, run_id, targets)
    searches = [next((s.to_dict() for s in map(planner.search_spec, phase) if s is not None), None)
                for phase in planner.phases(spawn)]  # a search runs alone in its phase
    pid_files: dict[str, list[str]] = {h: [] for h in hosts}
    for n in nodes:
        node = Node(**n)
        pid_files.setdefault(node.host, []).append(f"{node.dir}/{PID_FILE}")
    plans: dict[str, Plan] = {}
    for host in hosts:
        plans[host] = {
            "schema": PLAN_SCHEMA, "run_id": run_id, "host": host, "agent_pex": agent_pex, "pex_root": PEX_ROOT,
            "lease_s": lease_s, "host_timeout_s": host_timeout_s, "agent_timeout_s": agent_timeout_s,
            "start_lead_s": START_LEAD_S,
            "sampler": {"interval_s": 1.0, "cap_s": sampler_cap_s, "pid_files": pid_files.get(host, []),
                        "pex_dir": BIN_DIR},
            "barrier": barrier.to_dict() if barrier is not None else None,
            "phases": [_plan_phase(names, [(dir_name(job.benchmark), json.loads(wire_job(job, auth, environ)))
                                           for h, job in jobs if h == host], search)
                       for (names, jobs), search in zip(phases, searches, strict=True)],
        }
    return plans


def _plan_phase(names: list[str], jobs: list[tuple[str, dict[str, Any]]], search: dict[str, Any] | None) -> PlanPhase:
    phase: PlanPhase = {"benchmarks": names, "jobs": [{"dir": d, "job": job} for d, job in jobs]}
    if search is not None:
        phase["search"] = search
    return phase


# -- the commands -----------------------------------------------------------------------------


def start_command(run_id: str, agent_pex: str) -> str:
    """Read the plan from stdin into the private run directory and start the host run detached;
    prints the host run's pid. The plan (it holds secrets) is removed whatever happens: the host
    run removes it once read, this once the host run has returned or failed to start."""
    base = run_path(run_id)
    control = f"{base}/{RUN_SUBDIR}"
    tmp, final = f"{base}/{PLAN}.tmp", f"{base}/{PLAN}"
    return (
        f"umask 077 && cd && mkdir -p {cmd(control)} && chmod 700 {cmd(REMOTE_DIR)} {cmd(base)} && "
        f"{{ cat > {cmd(tmp)} && mv {cmd(tmp)} {cmd(final)} && "
        f"( cd {cmd(control)} && "
        f'PEX_ROOT="$HOME/{PEX_ROOT}" "$HOME"/{cmd(agent_pex)} hostrun --dir "$HOME"/{cmd(base)} --detach ); '
        f"s=$?; rm -f {cmd(tmp)} {cmd(final)}; exit $s; }}"
    )


def poll_bytes(paths: Sequence[str]) -> int:
    """The most a poll can send, however many files it asks for (the host is refused past it)."""
    return POLL_MAX_BYTES


#: ``emit PATH OFFSET MAX MODE``: a frame of PATH's bytes from OFFSET, at most MAX of them, the
#: file opened once (fd 3; its size and its bytes are both read through /dev/fd/3, so a file
#: replaced meanwhile is read whole, old or new, never half of each). MODE ``last``: its last MAX
#: bytes when more are new; ``whole``: all or nothing (a result); ``next``: its next bytes.
#: Every file but state.json spends the poll's budget ``b``: the rest waits for the next poll
#: (a result that does not fit is framed empty from its end: "there, but later").
_EMIT = r"""emit() { [ -f "$1" ] || return 0; { _emit "$@"; } 2>/dev/null 3<"$1"; }
_emit() {
  s=$(wc -c </dev/fd/3) || return 0; s=$((s+0)); o=$2; [ "$s" -gt "$o" ] || return 0
  [ "$4" = last ] && [ $((s-o)) -gt "$3" ] && o=$((s-$3))
  n=$((s-o)); [ "$n" -gt "$3" ] && n=$3
  if [ "$1" != "$STATE" ]; then
    [ "$4" = whole ] && [ "$n" -gt "$b" ] && { printf '@@fleetbench %s %s 0\n\n' "$1" "$s"; return 0; }
    [ "$n" -gt "$b" ] && n=$b
    [ "$n" -gt 0 ] || return 0
    b=$((b-n))
  fi
  printf '@@fleetbench %s %s %s\n' "$1" "$o" "$n"
  tail -c +$((o+1)) </dev/fd/3 | head -c "$n"; echo
}"""


def poll_command(run_id: str, offsets: Mapping[str, int], renew: bool) -> str:
    """state.json whole, then every file in ``offsets`` (paths relative to the run directory)
    from its offset (:func:`bench.wire.hostrun.poll_limit` says how much), results first, each
    framed as ``@@fleetbench <path> <start> <length>\\n<bytes>\\n``, ``start`` where the bytes
    begin in the file; gzip'd when the host has gzip. Touches the lease first when ``renew``."""
    base = run_path(run_id)
    parts = [f'cd -P "$HOME"/{cmd(base)} 2>/dev/null || {{ echo "{MISSING.decode()}"; exit 0; }}']
    if renew:
        parts.append(f"touch {cmd(RUN_SUBDIR + '/lease')} 2>/dev/null")
    parts.append(f"STATE={cmd(STATE)}; b={POLL_BUDGET_BYTES}")
    # Is the host run still alive (its pid, with its cwd in this run)? A killed one never says
    # "done". Asked before state.json is read: one that ends between the two has written "done".
    parts.append(f"pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' {cmd(STATE)} 2>/dev/null); "
                 f'a=0; [ -n "$pid" ] && [ "$(readlink /proc/$pid/cwd 2>/dev/null)" = "$PWD/{RUN_SUBDIR}" ] && a=1')
    parts.append(f"emit {cmd(STATE)} 0 {POLL_FILE_BYTES} next")
    parts.append(f"printf '@@fleetbench {ALIVE} 0 1\\n%s\\n' $a")
    # No state yet: the end of hostrun.log says why (a host run that died at its start).
    parts.append(f"[ -f {cmd(STATE)} ] || emit {cmd(LOG)} 0 {POLL_LOG_BYTES} last")
    for path in sorted((p for p in offsets if p != STATE), key=lambda p: poll_limit(p)[1] != "whole"):
        most, mode = poll_limit(path)
        parts.append(f"emit {cmd(path)} {int(offsets[path])} {most} {mode}")
    body = "\n".join([_EMIT, *parts])
    return f"if command -v gzip >/dev/null 2>&1; then ( {body}\n) | gzip -c; else {body}\nfi"


def stop_command(run_id: str) -> str:
    return f'cd "$HOME"/{cmd(run_path(run_id) + "/" + RUN_SUBDIR)} 2>/dev/null && touch stop; true'


def live_runs_command() -> str:
    """``<run dir> <started_at>`` for every host run of ours still alive here (its pid is live
    and its cwd is that run's control directory)."""
    return (
        # cd -P: /proc's cwd is the real path, so ours must be too (a symlinked home)
        f'cd -P "$HOME" 2>/dev/null || exit 0; '
        f'for s in "$PWD"/{REMOTE_DIR}/runs/*/{RUN_SUBDIR}/state.json; do [ -f "$s" ] || continue; '
        'd=${s%/state.json}; pid=$(sed -n \'s/.*"pid": *\\([0-9]*\\).*/\\1/p\' "$s"); [ -n "$pid" ] || continue; '
        '[ "$(readlink /proc/$pid/cwd 2>/dev/null)" = "$d" ] || continue; '
        'r=${d%/' + RUN_SUBDIR + '}; printf \'%s %s\\n\' "${r##*/}" '
        '"$(sed -n \'s/.*"started_at": *\\([0-9.]*\\).*/\\1/p\' "$s")"; done; true'
    )


def parse_live_runs(text: str) -> list[tuple[str, float | None]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if parts:
            started = float(parts[1]) if len(parts) > 1 and parts[1].replace(".", "", 1).isdigit() else None
            out.append((parts[0], started))
    return out


# -- side effects -----------------------------------------------------------------------------


def exec_with_stdin(h: Host, command: str, data: bytes, timeout: float, limit: int = 1 << 20) -> bytes:
    """Run ``command`` with ``data`` on its stdin; its stdout (raise RemoteError on failure), of
    which more than ``limit`` bytes is refused (HostDataError): a host cannot fill our memory."""
    try:
        out = h.run_input(command, data, timeout=timeout, limit=limit)
    except HostLost as exc:
        raise RemoteError(h.name, command, f"no answer: {exc}") from None
    if out.exited != 0:
        raise RemoteError(h.name, command, tail(out.err_text), out.exited)
    return out.stdout


def start(h: Host, run_id: str, agent_pex: str, plan: Mapping[str, Any], timeout: float) -> int:
    """Hand the host its plan and start its host run; its pid."""
    out = exec_with_stdin(h, start_command(run_id, agent_pex), json.dumps(plan).encode(), timeout)
    text = out.decode(errors="replace").strip()
    if not text.splitlines() or not text.splitlines()[-1].isdigit():
        raise RemoteError(h.name, "hostrun --detach", f"no pid from the host run: {text!r}")
    return int(text.splitlines()[-1])


def started_text(started_at: float | None, now: float | None = None) -> str:
    if started_at is None:
        return "at an unknown time"
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started_at))
    return f"at {stamp} ({max(0.0, now - started_at):.0f} s ago)"


def phase_skews(phases: Sequence[Sequence[str]], records: Sequence[tuple[str, Mapping[str, Any]]],
                host_of: Mapping[tuple[str, int], str], offsets: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per phase: how far apart its agents' measured windows began, in the coordinator's clock
    (each result's ``started_at`` plus the measured offset of the host that ran it)."""
    starts: dict[str, list[float]] = {}
    for benchmark, record in records:
        result = record.get("result") or {}
        if result.get("started_at") is not None and result.get("ops"):  # an agent that never began has no start
            host = host_of.get((benchmark, int(result.get("agent_num", -1))), "")
            starts.setdefault(benchmark, []).append(float(result["started_at"]) + float(offsets.get(host, 0.0)))
    out = []
    for k, names in enumerate(phases):
        times = [t for name in names for t in starts.get(name, [])]
        out.append({"phase": k, "benchmarks": list(names), "agents": len(times),
                    "start_skew_ms": round((max(times) - min(times)) * 1000, 3) if times else None})
    return out
