"""The host-run contract, defined once for both ends of SSH.

The controller (fabfile.runs.hostrun, fabfile.runs.follow) hands each host a plan and then
only reads what the host run (bench.agent.hostrun) writes into its run directory; this module
is what both sides agree on: the run directory's layout, the plan, the state file, the poll's
framing, the byte limits, and the checks of everything that comes back from a host.

What comes back is untrusted (a broken, stopped or hostile host may send anything): every
reader here returns a typed answer or raises :class:`WireError` naming the field that is
wrong, in time bounded by the input's length. Never a hang, never another exception.

Layout of a run directory on a host (relative to ``~/.fleetbench/runs/<run>``)::

    _run/plan.json     PLAN_SCHEMA, 0600, removed once read (it holds secrets)
    _run/state.json    STATE_SCHEMA, replaced atomically at every change and every
                       HEARTBEAT_S at least (``updated_at``: the host run's heartbeat)
    _run/lease, _run/stop, _run/lock, _run/hostrun.log
    _host/facts.json, _host/metrics.ndjson
    <bench>/agent-<n>.json, .stderr, .stdout, .start(.ready)

Python 3.9, stdlib only: it ships in the agent pex.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from bench.wire.job import AgentJob

PLAN_SCHEMA = "fleetbench.host-plan/1"
STATE_SCHEMA = "fleetbench.host-run/1"
RUN_SUBDIR = "_run"
HOST_SUBDIR = "_host"
PLAN = f"{RUN_SUBDIR}/plan.json"
STATE = f"{RUN_SUBDIR}/state.json"
LOG = f"{RUN_SUBDIR}/hostrun.log"
METRICS = f"{HOST_SUBDIR}/metrics.ndjson"
FACTS = f"{HOST_SUBDIR}/facts.json"

#: A host run's statuses once it has ended, and an agent's states once it has.
TERMINAL = ("done", "stopped", "abandoned", "failed")
RUN_STATUSES = ("running", *TERMINAL)
AGENT_ENDED = ("done", "failed", "stopped", "timeout")
AGENT_STATES = ("pending", "running", *AGENT_ENDED)

#: The host run rewrites its state at least this often, changed or not: a controller that sees
#: the same ``updated_at`` for --host-timeout seconds knows the host run is frozen or stuck.
HEARTBEAT_S = 2.0

# -- byte limits ------------------------------------------------------------------------------

#: The stderr an agent's record keeps (its end: where a traceback or the last progress is).
STDERR_KEEP_BYTES = 4 << 20
#: On the host, an agent's stderr (and stdout) file is cut back to its last STDERR_KEEP_BYTES
#: once it holds more than this: a flooding agent cannot fill the host's disk.
HOST_STDERR_CAP_BYTES = 2 * STDERR_KEEP_BYTES
#: A shown stderr line is cut here: one line without a newline must not flood the terminal.
ECHO_LINE_BYTES = 4 << 10
#: A per-second record (its histogram encoded) is one stderr line and may be long; still bounded.
RECORD_LINE_BYTES = 1 << 20
#: The largest result accepted. A 15-minute run's per-second histograms take about 3 MiB.
MAX_RESULT_BYTES = 16 << 20
#: What one poll takes of state.json, facts.json or the metrics (the rest comes next time).
POLL_FILE_BYTES = 8 << 20
#: What one poll takes of a stderr (its last bytes: a flood is skipped on the host).
POLL_STDERR_BYTES = STDERR_KEEP_BYTES
#: A result one byte past the largest accepted (so a larger one is known to be too large).
POLL_RESULT_BYTES = MAX_RESULT_BYTES + 1
#: What one poll sends besides state.json, whatever the number of agents on the host: the
#: files past it wait for the next poll (a result is sent whole or not at all).
POLL_BUDGET_BYTES = 40 << 20
#: The most a poll's answer can hold (framing included); past it the host is refused.
POLL_MAX_BYTES = POLL_FILE_BYTES + POLL_BUDGET_BYTES + (1 << 20)
#: Of hostrun.log, what a poll takes while the host run has written no state (why it died).
POLL_LOG_BYTES = 4 << 10

# -- the poll's framing -----------------------------------------------------------------------

FRAME = b"@@fleetbench "
MISSING = b"@@fleetbench-missing"
ALIVE = "_alive"  # a pseudo file in a poll's answer: 1 while the host run's process lives
# "#": a repetition's label ("fast#2", bench.wire.labels.repetition_label) names its directory
_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+#-]*(/[A-Za-z0-9_][A-Za-z0-9_.+#-]*)*\Z")
_MAX_HEADER = 4096


class WireError(ValueError):
    """What a host sent breaks the contract; the message names what and where."""


class PlanError(WireError):
    pass


Poll = dict[str, tuple[int, bytes]]


def poll_limit(path: str) -> tuple[int, str]:
    """(the most bytes a poll takes of ``path``, how): ``last`` its last bytes when more are new
    (a stderr), ``whole`` all or nothing (a result), ``next`` its next bytes (the rest)."""
    if path.endswith(".stderr"):
        return POLL_STDERR_BYTES, "last"
    if path.endswith(".json") and not path.startswith((RUN_SUBDIR + "/", HOST_SUBDIR + "/")):
        return POLL_RESULT_BYTES, "whole"
    return POLL_FILE_BYTES, "next"


def parse_poll(data: bytes) -> Poll | None:
    """path -> (offset, bytes) from a poll's answer; None when the host has no such run.
    Raises WireError on anything else than frames ``@@fleetbench <path> <start> <length>\\n
    <length bytes>\\n`` with a plain relative path and non-negative decimal numbers."""
    if data.startswith(MISSING):
        return None
    out: Poll = {}
    pos = 0
    frame = 0
    while pos < len(data):
        frame += 1
        if not data.startswith(FRAME, pos):
            raise WireError(f"poll answer, frame {frame} (byte {pos}): expected {FRAME!r}, got {data[pos:pos + 40]!r}")
        end = data.find(b"\n", pos, pos + _MAX_HEADER)
        if end < 0:
            raise WireError(f"poll answer, frame {frame}: no end to its header")
        fields = data[pos + len(FRAME):end].split(b" ")
        if len(fields) != 3 or not all(f.isdigit() for f in fields[1:]):
            raise WireError(f"poll answer, frame {frame}: header {data[pos:end][:120]!r} "
                            "is not <path> <start> <length>")
        try:
            path = fields[0].decode("ascii")
        except UnicodeDecodeError:
            raise WireError(f"poll answer, frame {frame}: path {fields[0][:80]!r} is not ascii") from None
        if not _PATH.match(path) or ".." in path.split("/"):
            raise WireError(f"poll answer, frame {frame}: path {path[:80]!r} is not a plain relative path")
        offset, length = int(fields[1]), int(fields[2])
        start = end + 1
        stop = start + length
        if stop >= len(data) or data[stop:stop + 1] != b"\n":
            raise WireError(f"poll answer, frame {frame} ({path}): {length} bytes announced, "
                            f"{max(0, len(data) - start)} sent")
        if path in out:
            raise WireError(f"poll answer, frame {frame}: {path} sent twice")
        out[path] = (offset, data[start:stop])
        pos = stop + 1
    return out


# -- the state file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostState:
    """A host run's state.json, checked: ``data`` is the whole (JSON) state, every field this
    side reads of it being of the right type; ``notes`` say what was ignored in it."""

    data: dict[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def updated_at(self) -> float:
        return float(self.data["updated_at"])

    @property
    def agents(self) -> dict[str, dict[str, Any]]:
        return self.data["agents"]

    @property
    def clock_offset(self) -> float | None:
        clock = self.data.get("clock")
        return float(clock["offset_s"]) if isinstance(clock, dict) and _number(clock.get("offset_s")) else None

    @property
    def alone(self) -> str | None:
        barrier = self.data.get("barrier")
        reason = barrier.get("alone") if isinstance(barrier, dict) else None
        return reason if isinstance(reason, str) and reason else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_state(data: bytes, host: str) -> HostState:
    """A host's state.json, checked for every field the controller reads; a clock offset that is
    not a finite number is dropped (and said in ``notes``), anything else wrong is a WireError."""
    notes: list[str] = []
    try:
        state = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"its state.json is not JSON: {str(exc)[:200]}") from None
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
        raise WireError(f"its state.json is not a {STATE_SCHEMA} state")
    if state.get("status") not in RUN_STATUSES:
        raise WireError(f"its state.json: status {str(state.get('status'))[:40]!r} "
                        f"is none of {', '.join(RUN_STATUSES)}")
    for key in ("updated_at", "started_at"):
        if not _number(state.get(key)):
            raise WireError(f"its state.json: {key} {str(state.get(key))[:40]!r} is not a time")
    if not _count(state.get("pid")):
        raise WireError("its state.json: pid is not a process id")
    phase = state.get("phase")
    if phase is not None and not _count(phase):
        raise WireError(f"its state.json: phase {str(phase)[:40]!r} is not a phase number")
    agents = state.get("agents")
    if not isinstance(agents, dict):
        raise WireError("its state.json: agents is not an object")
    for key, agent in agents.items():
        where = f"its state.json: agent {key[:80]!r}"
        if not _PATH.match(key) or key.count("/") != 1 or not key.split("/")[1].startswith("agent-"):
            raise WireError(f"{where}: not <benchmark dir>/agent-<n>")
        if not isinstance(agent, dict):
            raise WireError(f"{where} is not an object")
        if not isinstance(agent.get("benchmark"), str) or not _count(agent.get("agent_num")) \
                or not _count(agent.get("phase")):
            raise WireError(f"{where}: benchmark, agent_num or phase is missing or of the wrong type")
        if agent.get("state") not in AGENT_STATES:
            raise WireError(f"{where}: state {str(agent.get('state'))[:40]!r} is none of {', '.join(AGENT_STATES)}")
        code = agent.get("exit_code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise WireError(f"{where}: exit_code {str(code)[:40]!r} is not an exit status")
    for key in ("phase_starts", "alone_phases"):
        value = state.get(key)
        if value is not None and not isinstance(value, dict):
            raise WireError(f"its state.json: {key} is not an object")
    for key in ("clock", "barrier"):
        value = state.get(key)
        if value is not None and not isinstance(value, dict):
            raise WireError(f"its state.json: {key} is not an object")
    clock = state.get("clock")
    if isinstance(clock, dict) and clock.get("offset_s") is not None and not _number(clock.get("offset_s")):
        notes.append(f"{host}'s clock offset {clock.get('offset_s')!r} is not a finite number: ignored "
                     "(its seconds are taken as they are)")
        state["clock"] = None
    return HostState(state, tuple(notes))


def finite_offset(value: object) -> float | None:
    """A clock offset as a float, or None when it is not a finite number."""
    return float(value) if _number(value) else None  # type: ignore[arg-type]


# -- the plan ---------------------------------------------------------------------------------


def plain_dir(name: object) -> bool:
    """A benchmark's directory name in a run: one plain path component of ours."""
    return isinstance(name, str) and bool(name) and "/" not in name and not name.startswith(".") \
        and name not in (RUN_SUBDIR, HOST_SUBDIR)


def agent_key(bench_dir: str, agent_num: int) -> str:
    """An agent's name in state.json and the stem of its files: ``<bench dir>/agent-<n>``."""
    return f"{bench_dir}/agent-{int(agent_num)}"


class PlanJob(TypedDict):
    dir: str  # the benchmark's directory in the run (plain_dir)
    job: dict[str, Any]  # the job as its agent gets it (wire_job: secrets in)


class _PlanPhase(TypedDict):
    benchmarks: list[str]
    jobs: list[PlanJob]  # this host's agents in the phase (none: it still keeps the order)


class PlanPhase(_PlanPhase, total=False):
    # A capacity search (bench.wire.search.SearchSpec.to_dict): the phase runs as steps, each its
    # jobs at the rate the coordinator chose, labelled bench.wire.labels.step_label.
    search: dict[str, Any]


class _Barrier(TypedDict):
    coordinator: str
    address: str  # where the participants reach the coordinator
    port: int
    token: str  # secret
    participants: list[str]


class PlanBarrier(_Barrier, total=False):
    bind: str  # where the coordinator listens, when not ``address``


class PlanSampler(TypedDict):
    interval_s: float
    cap_s: float
    pid_files: list[str]  # servers' pid files, relative to the login's home
    pex_dir: str


class Plan(TypedDict):
    """A host's plan.json (PLAN_SCHEMA): every phase of the run and this host's jobs in each."""

    schema: str
    run_id: str
    host: str
    agent_pex: str  # relative to the login's home
    pex_root: str
    lease_s: float
    host_timeout_s: float
    agent_timeout_s: float
    start_lead_s: float
    sampler: PlanSampler | None
    barrier: PlanBarrier | None
    phases: list[PlanPhase]


def load_plan(text: str) -> Plan:
    """The plan, checked for what the host run relies on (a bad one is named before anything runs)."""
    try:
        plan = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"plan.json is not JSON: {exc}") from None
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA:
        raise PlanError(f"plan.json is not a {PLAN_SCHEMA} plan")
    for key, kind in (("run_id", str), ("host", str), ("agent_pex", str), ("phases", list),
                      ("lease_s", (int, float)), ("host_timeout_s", (int, float)), ("agent_timeout_s", (int, float))):
        if not isinstance(plan.get(key), kind):
            raise PlanError(f"plan.json: {key} is missing or of the wrong type")
    for k, phase in enumerate(plan["phases"]):
        if not isinstance(phase, dict) or not isinstance(phase.get("jobs"), list):
            raise PlanError(f"plan.json: phase {k} has no job list")
        for item in phase["jobs"]:
            if not isinstance(item, dict) or not isinstance(item.get("job"), dict) or not plain_dir(item.get("dir")) \
                    or not _count(item["job"].get("agent_num")):
                raise PlanError(f"plan.json: phase {k}: a job needs 'job' (with its agent_num) and a plain 'dir'")
        if phase.get("search") is not None:
            from bench.wire.search import SearchError, SearchSpec

            try:
                SearchSpec.from_dict(phase["search"])
            except SearchError as exc:
                raise PlanError(f"plan.json: phase {k}: {exc}") from None
    barrier = plan.get("barrier")
    if barrier is not None:
        for key in ("address", "port", "token", "participants", "coordinator"):
            if key not in barrier:
                raise PlanError(f"plan.json: barrier.{key} is missing")
    return cast(Plan, plan)  # checked above for what the host run reads


# -- jobs as they travel ----------------------------------------------------------------------


def wire_job(job: AgentJob, auth: str | None, environ: Mapping[str, str]) -> str:
    """The job as its agent gets it (inside its host's plan, then on its stdin): the redis
    password in, every { env = ... } resolved. Controller side only."""
    from dataclasses import replace

    from bench.spawn import secrets

    return replace(job, params=secrets.resolve(job.params, environ, f"benchmark {job.benchmark!r} params"),
                   auth=auth).to_json()


def public_job(job: AgentJob) -> dict[str, Any]:
    """The job as a result may keep it: secrets by name (``{"env": NAME}``), no password."""
    from bench.spawn import secrets

    return {**job.to_dict(), "params": secrets.public(job.params), "auth": None}
