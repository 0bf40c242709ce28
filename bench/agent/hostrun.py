"""``hostrun``: this host's share of a whole run, detached from any SSH session.

    python -m bench.agent hostrun --dir ~/.fleetbench/runs/<run-id> [--detach]

The controller writes ``_run/plan.json`` (0600: it holds the barrier token, and the jobs with
the servers' password and the spawn file's secrets) and starts this, which reads the plan and
removes it: from then on the secrets are only in this process and on each agent's stdin;
with ``--detach`` it double-forks into its own session (stdin /dev/null, stdout and stderr to
``_run/hostrun.log``, SIGHUP and SIGPIPE ignored), prints the daemon's pid and returns, so the
run survives the SSH session, the controller's link and the controller itself.

The run directory, everything in it written on this host first:

    _run/plan.json     every phase in order and this host's agent jobs in each (PLAN_SCHEMA),
                       removed once read
    _run/state.json    status, phase, each agent's state, clock offset: rewritten atomically
                       at every change, so a controller may read it at any time (STATE_SCHEMA)
    _run/lease         its mtime is the lease: a controller that is attached touches it; older
                       than ``lease_s`` and the run stops itself, ``abandoned``
    _run/stop          created by a controller to stop the run (Ctrl-C): status ``stopped``
    _host/             facts.json, metrics.ndjson (the sampler, a child of this process)
    <bench>/agent-<n>.json, .stderr     each agent's result and stderr (its job came on its stdin)
    <bench>/agent-<n>.start(.ready)                the agent says it is ready; we say when it starts

Phases run in order, together with the other hosts (bench.agent.barrier). Stopping (stop file,
expired lease, SIGTERM) TERMs the agents, which then write what they measured.

A phase with a capacity search (bench.wire.search) runs as steps: every host launches its
agents at the step's rate (their jobs labelled ``name#sk``, in ``<dir>+s<k>/``), they measure
together, and each host's arrival at the barrier after the step carries what its agents measured
(summed exactly, histograms added); the coordinator's host run judges the step from every host's
part and chooses the next rate, which the release hands to all. So the hosts choose each next
rate themselves: the search survives the controller like any other run. ``searches`` in
state.json keeps each search's steps and outcome as the coordinator decided them.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from bench.agent.barrier import Coordinator, Participant
from bench.wire import hostrun as wire
from bench.wire import search
from bench.wire.hostrun import HOST_SUBDIR, RUN_SUBDIR, STATE_SCHEMA, Plan, PlanError, PlanJob, load_plan
from bench.wire.labels import step_label

__all__ = ["PlanError", "load_plan"]

STOP_GRACE_S = 10.0  # a stopped agent's time to write its result before it is killed
POLL_S = 0.05
LINGER_S = 1.0  # the sampler records the second in which the last phase ended
CAP_EVERY_S = 0.5  # how often the agents' stderr and stdout files are checked against their cap


def agent_key(item: PlanJob) -> str:
    return wire.agent_key(item["dir"], int(item["job"]["agent_num"]))


def new_state(plan: Plan, pid: int, now: float) -> dict[str, Any]:
    agents = {}
    for k, phase in enumerate(plan["phases"]):
        if phase.get("search") is not None:
            continue  # a search's agents are its steps', added as each step starts
        for item in phase["jobs"]:
            job = item["job"]
            agents[agent_key(item)] = {"benchmark": job["benchmark"], "agent_num": job["agent_num"], "phase": k,
                                       "state": "pending"}
    return {"schema": STATE_SCHEMA, "run_id": plan["run_id"], "host": plan["host"], "pid": pid,
            "status": "running", "started_at": now, "updated_at": now, "phase": None,
            "phases": len(plan["phases"]), "agents": agents, "phase_starts": {}, "alone_phases": {}, "clock": None,
            "barrier": None, "error": None, "searches": {}}


def agent_state(exit_code: int | None, has_result: bool, stopping: bool, timed_out: bool) -> str:
    """An ended agent's state: done, failed, stopped (by us, it reported what it measured), timeout."""
    if timed_out:
        return "timeout"
    if exit_code == 0 and has_result:
        return "done"
    if stopping and has_result:
        return "stopped"
    return "failed"


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lease_expired(lease_path: str, lease_s: float, now: float) -> bool:
    try:
        return now - os.stat(lease_path).st_mtime > lease_s
    except FileNotFoundError:
        return True


_FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc: Any = None


def _punch(fd: int, length: int) -> bool:
    """Free the file's first ``length`` bytes on disk, its size and offsets unchanged (they read
    as zeros): the only way to cut a file another process is appending to without moving where
    its writes land or where a reader that follows it by offset is."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fallocate = getattr(_libc, "fallocate64", None) or _libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return int(fallocate(fd, _FALLOC_PUNCH, 0, length)) == 0


def cap_file(path: str, cap: int = wire.HOST_STDERR_CAP_BYTES, keep: int = wire.STDERR_KEEP_BYTES) -> bool | None:
    """Once ``path`` takes more than ``cap`` bytes of disk, free all of it but its last ``keep``
    bytes (what a controller reads of a stderr). True when cut, False when under the cap, None
    when the file system cannot (then nothing is changed)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_blocks * 512 <= cap:
            return False
        cut = max(0, st.st_size - keep)
        cut -= cut % 4096
        try:
            return True if cut and _punch(fd, cut) else None
        except (OSError, AttributeError):
            return None
    finally:
        os.close(fd)


class HostRun:
    def __init__(self, run_dir: str, plan: Plan) -> None:
        self.dir = os.path.abspath(run_dir)
        self.plan = plan
        self.control = os.path.join(self.dir, RUN_SUBDIR)
        self.home = os.path.expanduser("~")
        self.pex = os.path.join(self.home, plan["agent_pex"])
        # The pex's own environment loses PEX_ROOT (pex scrubs its PEX_* variables before it
        # runs us), and a pex without one unpacks into ~/.cache: every pex we start gets ours.
        self.env = dict(os.environ)
        if plan.get("pex_root"):
            self.env["PEX_ROOT"] = os.path.join(self.home, plan["pex_root"])
        self.state = new_state(plan, os.getpid(), time.time())
        self.ending: str | None = None  # "stopped" | "abandoned" once asked to stop
        self.children: list[subprocess.Popen[bytes]] = []
        self.sampler: subprocess.Popen[bytes] | None = None
        self.coordinator: Coordinator | None = None
        self.participant: Participant | None = None
        self._save_lock = threading.Lock()
        self._beating = threading.Event()
        self._capped_at = 0.0
        self._cannot_cap = False
        self._barrier_step = 0  # every host takes the same steps in the same order
        self._decision: Any = None  # what the last barrier step decided (a search step's)
        self._search_steps: dict[int, list[search.Verdict]] = {}  # the coordinator's: phase -> judged steps
        self._decided: dict[str, Any] = {}  # the coordinator's: phase -> its search so far (state's searches)

    def _heartbeat(self) -> None:
        """state.json rewritten every HEARTBEAT_S, changed or not: its ``updated_at`` tells a
        controller this process is not frozen (a stopped process beats no more)."""
        while not self._beating.wait(wire.HEARTBEAT_S):
            try:
                self.save()
            except (OSError, RuntimeError, ValueError):  # the main thread changing it: next beat
                pass

    # -- state --

    def save(self) -> None:
        with self._save_lock:  # the heartbeat's thread saves too
            self.state["updated_at"] = time.time()
            if self.coordinator is not None:
                self.state["barrier"] = {**(self.state.get("barrier") or {}), **self.coordinator.summary()}
            self.state["searches"] = dict(self._decided)
            write_atomic(os.path.join(self.dir, wire.STATE), json.dumps(self.state, sort_keys=True) + "\n")

    def log(self, message: str) -> None:
        try:
            print(f"{time.strftime('%H:%M:%S')} hostrun[{self.plan['host']}] {message}", flush=True)
        except (OSError, ValueError):
            pass

    def halted(self) -> bool:
        """True once the run must stop: stop file, expired lease or a signal."""
        if self.ending is None:
            if os.path.exists(os.path.join(self.control, "stop")):
                self.ending = "stopped"
            elif lease_expired(os.path.join(self.control, "lease"), float(self.plan["lease_s"]), time.time()):
                self.ending = "abandoned"
            if self.ending is not None:
                self.log(f"run {self.ending}: stopping the agents and the sampler")
        return self.ending is not None

    # -- the run --

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        open(os.path.join(self.control, "lease"), "a").close()
        os.utime(os.path.join(self.control, "lease"))
        self.save()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        status = "failed"  # unless the run gets to say otherwise
        try:
            self._observe()
            self._join_barrier()
            phases = self.plan["phases"]
            for k in range(len(phases)):
                if self.halted():
                    break
                self._phase(k)
            if not self.halted() and self.participant is not None:
                self._arrive()  # the end: every host finishes together
            status = self.ending or "done"
        except Exception as exc:  # still a state a controller can read, with the cause
            status, self.state["error"] = "failed", f"{type(exc).__name__}: {exc}"
            self.log(f"failed: {self.state['error']}")
            self._stop_children()
        finally:
            # The end state is published by the last save only: a host that says done, stopped
            # or abandoned has no process of the run left (the sampler and coordinator end first).
            # One linger serves both: the sampler records the second the run ended in, and the
            # other hosts get the end before the coordinator goes.
            linger_until = time.monotonic() + LINGER_S
            if self.participant is not None:
                self.participant.leave()
            self._finish_sampler(linger_until if status == "done" else None)
            if self.coordinator is not None:
                time.sleep(max(0.0, linger_until - time.monotonic()))
                self.save()
                self.coordinator.close()
            self._beating.set()
            self.state["status"] = status
            self.save()
            self.log(status)
        return 0 if status == "done" else 1

    def _on_term(self, signum: int, frame: object) -> None:
        if self.ending is None:
            self.ending = "stopped"

    def _join_barrier(self) -> None:
        barrier = self.plan.get("barrier")
        if not barrier:
            return
        timeout = float(self.plan["host_timeout_s"])
        if barrier["coordinator"] == self.plan["host"]:
            self.coordinator = Coordinator(barrier.get("bind", barrier["address"]), int(barrier["port"]),
                                           barrier["token"], list(barrier["participants"]),
                                           lead_s=float(self.plan.get("start_lead_s", 2.0)),
                                           host_timeout_s=timeout, decide=self._decide).start()
        self.participant = Participant(barrier["address"], int(barrier["port"]), barrier["token"], self.plan["host"],
                                       host_timeout_s=timeout, log=self.log)
        self.participant.connect()
        p = self.participant
        self.state["clock"] = {"offset_s": p.offset_s, "rtt_s": p.rtt_s, "coordinator": barrier["coordinator"]}
        self.state["barrier"] = {"alone": p.alone}
        self.save()

    def _phase(self, k: int) -> None:
        """Phase k in two barrier steps: first, every host is done with phase k-1 (so no agent
        of k connects or prefills while another host still measures k-1): launch this host's
        agents; then, every host's agents are connected and ready: all open their measured
        window at the instant the barrier gives. A search's phase runs as steps instead."""
        self.state["phase"] = k
        self.save()
        self._arrive()
        if self.halted():
            return
        if self.plan["phases"][k].get("search") is not None:
            self._search(k, search.SearchSpec.from_dict(self.plan["phases"][k]["search"]))
            return
        self._measure(k, self.plan["phases"][k]["jobs"])

    def _search(self, k: int, spec: search.SearchSpec) -> None:
        """Phase k's capacity search: step after step at the rate the coordinator decided, until
        it says the search is over (or the run stops, or this host goes on alone: it cannot judge
        the fleet's steps by itself)."""
        rate: float | None = spec.low
        step = 1
        while rate is not None and not self.halted():
            items = [self._step_item(item, spec, step, rate) for item in self.plan["phases"][k]["jobs"]]
            self.log(f"phase {k}: search step {step} at {rate:g} ops/s")
            self._measure(k, items)
            if self.halted():
                return
            part = {"phase": k, "step": step, "rate": rate, "summary": self._step_summary(items)}
            self._arrive(part)
            decision = self._decision
            if not isinstance(decision, dict):
                self.log(f"phase {k}: no decision from the coordinator after step {step}: the search ends here")
                return
            if decision.get("error"):
                self.log(f"phase {k}: the search ends: {decision['error']}")
            rate = float(decision["next"]) if isinstance(decision.get("next"), (int, float)) else None
            step += 1
            if step > spec.max_steps:
                return

    def _step_item(self, item: PlanJob, spec: search.SearchSpec, step: int, rate: float) -> PlanJob:
        """A search's job for one step: labelled ``name#s<step>``, in its own directory, at its
        share of the step's rate; in state.json from now on."""
        job = {**item["job"], "benchmark": step_label(spec.benchmark, step), "rate": rate / spec.agents}
        stepped: PlanJob = {"dir": f"{item['dir']}+s{step}", "job": job}
        self.state["agents"][agent_key(stepped)] = {"benchmark": job["benchmark"], "agent_num": job["agent_num"],
                                                    "phase": self.state["phase"], "state": "pending",
                                                    "search_step": step}
        return stepped

    def _step_summary(self, items: list[PlanJob]) -> dict[str, Any]:
        """What this host's agents measured in a step, summed (bench.wire.search.combine); an
        agent without a readable result counts as failed, with why."""
        parts = []
        for item in items:
            path = os.path.join(self.dir, item["dir"], f"agent-{int(item['job']['agent_num'])}.json")
            record = self.state["agents"][agent_key(item)]
            try:
                with open(path) as f:
                    parts.append(search.agent_summary(json.load(f)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                why = f"agent {item['job']['agent_num']} on {self.plan['host']}: no result ({record.get('state')}, " \
                      f"exit status {record.get('exit_code')}: {type(exc).__name__})"
                parts.append({**search.empty_summary(), "failed": [why]})
        return search.combine(parts)

    def _decide(self, barrier_step: int, parts: dict[str, Any]) -> dict[str, Any]:
        """The coordinator's decision after a search step, from every host's part (its thread)."""
        first = next(iter(parts.values()))
        k, step, rate = int(first["phase"]), int(first["step"]), float(first["rate"])
        spec = search.SearchSpec.from_dict(self.plan["phases"][k]["search"])
        measured = search.measure(rate, search.combine([p["summary"] for p in parts.values()]))
        verdict = search.judge(spec, measured)
        steps = self._search_steps.setdefault(k, [])
        steps.append(verdict)
        nxt = search.next_rate(spec, steps)
        found = search.outcome(spec, steps)
        self.log(f"phase {k}: step {step} at {rate:g} ops/s: {'pass' if verdict.passed else 'fail'} ({verdict.why})"
                 + ("" if nxt is None else f"; next {nxt:g} ops/s"))
        # Published by the next save. Not under the save lock: a save holds it while it asks the
        # coordinator (whose lock this thread holds) for its summary. One item assignment, atomic.
        self._decided[str(k)] = {"benchmark": spec.benchmark, "steps": [v.to_dict() for v in steps],
                                 "next": nxt, "outcome": found.to_dict() if nxt is None else None}
        if nxt is None:
            self.log(f"phase {k}: search over: {found.text}")
        return {"phase": k, "step": step, "verdict": verdict.to_dict(), "next": nxt}

    def _measure(self, k: int, jobs: list[PlanJob]) -> None:
        """Launch ``jobs``, wait until they are ready, start them with the other hosts, wait for
        them to end."""
        running = [(item, self._launch(item)) for item in jobs]
        self.save()
        self._wait_ready(running)
        at, dropped = self._arrive()
        if dropped:
            self.log(f"phase {k}: going on without {', '.join(dropped)} (silent)")
        self.state["phase_starts"].setdefault(str(k), at)
        if self.participant is not None and self.participant.alone:  # this phase started unsynchronised
            self.state["alone_phases"][str(k)] = self.participant.alone
            self.state["barrier"] = {**(self.state.get("barrier") or {}), "alone": self.participant.alone}
        for item, _child in running:
            write_atomic(self._start_file(item), f"{at!r}\n")
            self.state["agents"][agent_key(item)]["start_at"] = at
        self.save()
        self._wait(running, deadline=time.monotonic() + float(self.plan["agent_timeout_s"]))

    def _arrive(self, part: dict[str, Any] | None = None) -> tuple[float, list[str]]:
        """The next barrier step (every host counts them alike: two per phase, two per search
        step, one at the end); ``part``: this host's share of a search step's decision."""
        step = self._barrier_step
        self._barrier_step += 1
        if self.participant is None:  # a run of one host without a barrier decides alone
            self._decision = self._decide(step, {self.plan["host"]: part}) if part is not None else None
            return time.time() + float(self.plan.get("start_lead_s", 0)), []
        at, dropped = self.participant.arrive(step, self.halted, search=part)
        self._decision = self.participant.decision
        return at, dropped

    def _start_file(self, item: PlanJob) -> str:
        return os.path.join(self.dir, item["dir"], f"agent-{int(item['job']['agent_num'])}.start")

    def _wait_ready(self, running: list[tuple[PlanJob, subprocess.Popen[bytes]]]) -> None:
        """Until every agent says it is ready (or has exited, or the run stops): its connect,
        pex boot and prefill take what they take, and no other host starts measuring meanwhile."""
        deadline = time.monotonic() + float(self.plan["agent_timeout_s"])
        while not self.halted() and time.monotonic() < deadline:
            if all(child.poll() is not None or os.path.exists(self._start_file(item) + ".ready")
                   for item, child in running):
                return
            self._cap_outputs(running)
            time.sleep(POLL_S / 5)

    def _launch(self, item: PlanJob) -> subprocess.Popen[bytes]:
        workdir = os.path.join(self.dir, item["dir"])
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        n = int(item["job"]["agent_num"])
        with open(os.path.join(workdir, f"agent-{n}.stderr"), "wb") as err, \
                open(os.path.join(workdir, f"agent-{n}.stdout"), "wb") as out:
            argv = [self.pex, "run", "--job-file", "-", "--out", f"agent-{n}.json", "--start-file", f"agent-{n}.start"]
            child = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.PIPE, stdout=out, stderr=err, env=self.env)
        try:  # the job holds secrets: on its stdin, never in a file or on its command line
            assert child.stdin is not None
            child.stdin.write(json.dumps(item["job"]).encode())
            child.stdin.close()
        except OSError:  # it died at once: its exit status and stderr say why
            pass
        self.children.append(child)
        self.state["agents"][agent_key(item)].update(state="running", pid=child.pid)
        return child

    def _wait(self, running: list[tuple[PlanJob, subprocess.Popen[bytes]]], deadline: float) -> None:
        pending = list(running)
        stop_sent: float | None = None
        timed_out: set[int] = set()
        while pending:
            if stop_sent is None and self.halted():
                stop_sent = time.monotonic()
                self._signal_all([c for _, c in pending], signal.SIGTERM)
            if stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_S:
                self._signal_all([c for _, c in pending], signal.SIGKILL)
            if stop_sent is None and time.monotonic() > deadline:
                timed_out.update(c.pid for _, c in pending)
                self.log(f"agents still running after {self.plan['agent_timeout_s']:g} s: stopping them")
                stop_sent = time.monotonic()
                self._signal_all([c for _, c in pending], signal.SIGTERM)
            still = []
            for item, child in pending:
                code = child.poll()
                if code is None:
                    still.append((item, child))
                    continue
                result = os.path.join(self.dir, item["dir"], f"agent-{int(item['job']['agent_num'])}.json")
                record = self.state["agents"][agent_key(item)]
                record.update(state=agent_state(code, os.path.exists(result), self.ending is not None,
                                                child.pid in timed_out), exit_code=code)
                self.children.remove(child)
                self.save()
            pending = still
            self._cap_outputs(running)
            if pending:
                time.sleep(POLL_S)

    def _cap_outputs(self, running: list[tuple[PlanJob, subprocess.Popen[bytes]]]) -> None:
        """Each agent's stderr and stdout file cut back to its tail once over its cap (bounded on
        the host: an agent that floods them cannot fill its disk)."""
        now = time.monotonic()
        if self._cannot_cap or now - self._capped_at < CAP_EVERY_S:
            return
        self._capped_at = now
        for item, _child in running:
            stem = os.path.join(self.dir, item["dir"], f"agent-{int(item['job']['agent_num'])}")
            for path in (stem + ".stderr", stem + ".stdout"):
                if cap_file(path) is None:
                    self._cannot_cap = True
                    self.log(f"cannot cap {path} on this file system (no hole punching): left to grow")
                    return

    def _signal_all(self, children: list[subprocess.Popen[bytes]], signum: int) -> None:
        for child in children:
            if child.poll() is None:
                try:
                    child.send_signal(signum)
                except OSError:
                    pass

    def _stop_children(self) -> None:
        self._signal_all(self.children, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(c.poll() is None for c in self.children) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self._signal_all(self.children, signal.SIGKILL)

    # -- observation: facts once, a metrics sampler for the whole run --

    def _observe(self) -> None:
        sampler = self.plan.get("sampler")
        if not sampler:
            return
        host_dir = os.path.join(self.dir, HOST_SUBDIR)
        os.makedirs(host_dir, mode=0o700, exist_ok=True)
        with open(os.path.join(host_dir, "facts.log"), "wb") as log:
            try:
                pex_dir = os.path.join(self.home, sampler["pex_dir"])
                subprocess.run([self.pex, "facts", "--out", os.path.basename(wire.FACTS), "--pex-dir", pex_dir],
                               cwd=host_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120,
                               env=self.env)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.log(f"no host facts: {exc}")
        argv = [self.pex, "metrics", "--interval", str(sampler.get("interval_s", 1.0)),
                "--out", os.path.basename(wire.METRICS),
                "--duration", str(int(sampler["cap_s"]))]
        for path in sampler.get("pid_files", []):
            argv += ["--pid-file", os.path.join(self.home, path)]
        with open(os.path.join(host_dir, "sampler.log"), "wb") as log:
            self.sampler = subprocess.Popen(argv, cwd=host_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env=self.env)
        metrics = os.path.join(self.dir, wire.METRICS)
        deadline = time.monotonic() + 20
        while not (os.path.exists(metrics) and os.path.getsize(metrics)) and time.monotonic() < deadline:
            if self.sampler.poll() is not None:
                self.log(f"the metrics sampler exited with status {self.sampler.returncode}")
                break
            time.sleep(0.1)

    def _finish_sampler(self, linger_until: float | None) -> None:
        if self.sampler is None:
            return
        if linger_until is not None:
            time.sleep(max(0.0, linger_until - time.monotonic()))
        if self.sampler.poll() is None:
            self.sampler.terminate()
            try:
                self.sampler.wait(5)
            except subprocess.TimeoutExpired:
                self.sampler.kill()
                self.sampler.wait()


def detach(control: str) -> int | None:
    """Double fork into a new session; None in the daemon, the daemon's pid in the caller."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            line = pipe.readline()
        os.waitpid(first, 0)
        return int(line) if line.strip().isdigit() else -1
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(os.path.join(control, os.path.basename(wire.LOG)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.write(write_end, f"{os.getpid()}\n".encode())
    os.close(write_end)
    return None


def _lock(control: str) -> IO[str] | None:
    """Hold ``_run/lock`` for the life of the run: a second host run of it is refused."""
    handle = open(os.path.join(control, "lock"), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent hostrun",
                                     description="Run this host's share of a run, detached from the SSH session.")
    parser.add_argument("--dir", required=True, help="the run's directory (holding _run/plan.json)")
    parser.add_argument("--detach", action="store_true", help="double-fork; print the daemon's pid and return")
    args = parser.parse_args(argv)
    control = os.path.join(os.path.abspath(args.dir), RUN_SUBDIR)
    plan_path = os.path.join(control, os.path.basename(wire.PLAN))
    os.umask(0o077)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        lock = _lock(control)  # before the fork: the daemon inherits it and holds it alone once we return
        if lock is None:
            _remove(plan_path)  # a second start's plan: its secrets are not left behind
            print(f"fleetbench-agent hostrun: the run in {args.dir} is already running here", file=sys.stderr,
                  flush=True)
            return 2
        with open(plan_path) as f:
            text = f.read()
        _remove(plan_path)  # it holds secrets: from now on they are in this process's memory only
        plan = load_plan(text)
    except (OSError, PlanError) as exc:
        print(f"fleetbench-agent hostrun: {exc}", file=sys.stderr)
        return 2
    if args.detach:
        pid = detach(control)
        if pid is not None:
            print(pid, flush=True)
            return 0 if pid > 0 else 1
    os.chdir(control)  # our cwd marks us as this run's (the reaper finds us by it)
    code = HostRun(args.dir, plan).run()
    if args.detach:
        sys.stdout.flush()
        os._exit(code)  # the daemon: no return into the caller's stack
    return code
