"""fleetbench's tasks: thin wrappers composing the pipeline in fabfile/, for ``fleetbench`` and ``inv``.

    fleetbench spawn                        deploy, bench, collect, down
    fleetbench --spawn F deploy bench collect
                                            the same steps, chained in one call (one connection per host)

The spawn file, the hosts and the ssh options are shared by a chain: each task's own flag, else
the ``fleetbench`` config (see :mod:`fabfile.cli.options`). Runs go to ./runs (``--runs-dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke import Collection, task
from invoke.exceptions import Exit

from bench.report import expect
from bench.report.document import RunDoc
from fabfile import stages
from fabfile.cli import options
from fabfile.errors import clean_errors
from fabfile.runs import gates, reports
from fabfile.session import Session, load_spawn, session, workspace
from fabfile.terminal import say

SPAWN = options.SPAWN
SHARED_HELP = {
    "spawn": "spawn file (TOML or JSON; default fleetbench.spawn in the config, else spawn.toml)",
    "ssh_config": "an ssh_config file to read first (the testbed's is read when it is up)",
    "accept_new_host_keys": "accept and remember unknown host keys (a changed key is always refused)",
    "servers": "server hosts, comma-separated: replace the spawn file's [hosts] (with --agents)",
    "agents": "agent hosts, comma-separated: replace the spawn file's [hosts] (with --servers)",
}
BUNDLED_HELP = {"bundled_python": "run the bundled CPython 3.11 on every host, not only where python3 is missing "
                                   "or older than 3.9"}
# A run keeps its spawn file and hosts: for a task acting on one, --spawn, --servers and --agents
# only say what the chain runs on (options.RECORDED_RUN_TASKS).
RUN_HOSTS_HELP = {**SHARED_HELP, "spawn": "the chain's spawn file (the run's own spawn file and hosts are used)",
                  "servers": "the chain's server hosts, if given (the run's own hosts are used)",
                  "agents": "the chain's agent hosts, if given (the run's own hosts are used)"}


def _shared(c: Any, recorded_run: bool = False, **given: Any) -> options.ChainOptions:
    """The task's shared options (``given``: the ones it takes, as its flags gave them)."""
    return options.resolve(c.config, given, recorded_run)


def _runs_dir(c: Any) -> Path:
    return workspace(options.runs_dir(c.config)).runs_dir


def _session(c: Any, shared: options.ChainOptions, *, validate: bool = False, bundled_python: bool = False) -> Session:
    servers, agents = shared.host_lists()
    s = session(shared.spawn, shared.ssh_config, shared.accept_new_host_keys, servers, agents,
                runs_dir=options.runs_dir(c.config))
    s.bundled_python = s.bundled_python or bool(bundled_python)
    if validate:
        _ = s.spawn  # parses and validates the spawn file: a bad one fails here, before any SSH
    return s


@task(help=SHARED_HELP)
def check(c, spawn=None, servers=None, agents=None, ssh_config=None, accept_new_host_keys=False):
    """Validate a spawn file without touching any host (nor building anything)."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("check"):
        # also: every { env = ... } secret's variable is set
        servers_given, agents_given = shared.host_lists()
        parsed = load_spawn(Path(shared.spawn), servers=servers_given, agents=agents_given)
    print(f"{shared.spawn}: ok ({len(parsed.hosts.servers)} server hosts, {len(parsed.hosts.agents)} agent hosts, "
          f"{len(parsed.benchmarks)} benchmarks)")


@task(help={**SHARED_HELP, **BUNDLED_HELP})
def build(c, spawn=None, ssh_config=None, accept_new_host_keys=False, servers=None, agents=None,
          bundled_python=False):
    """Build server.pex and agent.pex (and the server's own files) for what the hosts really have."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("build"):
        artifacts = stages.deploy.build(_session(c, shared, validate=True, bundled_python=bundled_python))
    for art in artifacts.values():
        print(f"{art.name}: {art.path} sha256 {art.sha256}")


FORCE_HELP = {"force": "take over the hosts' deploy lock when its holder is gone (process ended, or stale)"}


@task(help={**SHARED_HELP, **FORCE_HELP, **BUNDLED_HELP,
            "direct_push": "send every host its own copy from here (no host-to-host relay)"})
def deploy(c, spawn=None, ssh_config=None, accept_new_host_keys=False, direct_push=False, servers=None,
           agents=None, force=False, bundled_python=False):
    """Build, push (via cat) and start the servers. Does nothing when nothing changed."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("deploy"):
        stages.deploy.run(_session(c, shared, validate=True, bundled_python=bundled_python), direct_push=direct_push,
                          force=force)


BENCH_HELP = {
    "agent_timeout": "seconds before an agent that has not finished is stopped and given up (default 900)",
    "host_timeout": "seconds without any answer, or with its host run's heartbeat standing still, before a host "
                    "(or a command on it) is given up (default 30: 15 missed 2 s heartbeats)",
    "verbose": "also every agent's own log lines (default: the fleet-wide live view, and a failed agent's lines)",
    "reconnect_for": "seconds to keep retrying a host that stopped answering (default 600)",
    "lease": "seconds the run may go on with no controller attached before the hosts stop it "
             "(default: the planned duration plus 30 min)",
    "detach": "start the run on the hosts and return at once, printing its id (`attach` follows it)",
}


def _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, spawn_detached=False, verbose=False):
    return stages.bench.RunOptions(agent_timeout=float(agent_timeout), host_timeout=float(host_timeout),
                                   reconnect_for=float(reconnect_for), lease=None if lease is None else float(lease),
                                   detach=bool(detach), spawn_detached=spawn_detached, verbose=bool(verbose))


@task(help={**SHARED_HELP, **BENCH_HELP})
def bench(c, spawn=None, ssh_config=None, accept_new_host_keys=False, agent_timeout=900.0, host_timeout=30.0,
          servers=None, agents=None, verbose=False, reconnect_for=600.0, lease=None, detach=False):
    """Run the spawn file's benchmarks: each host gets its share of the whole run and runs it
    detached, phases in order; results are written on the hosts and streamed here, shown live.
    A lost link is retried (--reconnect-for), lost hosts are recorded (`collect` fetches them
    later; it decides the exit status); Ctrl-C stops the run everywhere, keeps what was measured,
    leaves the servers."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("bench"):
        stages.bench.run(_session(c, shared, validate=True),
                         _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, verbose=verbose))


FORMAT_HELP = "simple, github, csv or json"
REPORT_HELP = {"run": "run id or directory (default: runs/latest)", "format": FORMAT_HELP,
               "detail": "also the host facts and one row per agent"}


@task(help={**RUN_HOSTS_HELP, **REPORT_HELP, "allow_partial": "exit 0 even when some agents failed"})
def collect(c, spawn=None, ssh_config=None, accept_new_host_keys=False, run=None, format="simple",
            allow_partial=False, detail=False, servers=None, agents=None):
    """Fetch from the hosts what they finished of the run (if it lives there and we lack some),
    then merge its agent results and host metrics into run.json and export/, print the tables
    and each expectation with its measured value. Exit 1: agents failed; 3: an expectation failed."""
    options.check_format("collect", format)
    shared = _shared(c, recorded_run=True, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("collect"):
        s = _session(c, shared)
        stages.collect.fetch(s, run)
        merged = stages.collect.run(s.workspace.runs_dir, run, format, detail)
    _exit_for(merged, allow_partial)


def _exit_for(merged: RunDoc, allow_partial: bool) -> None:
    code = gates.exit_code(merged, allow_partial)
    if code == 1:
        raise Exit(f"run {merged['run_id']} is {merged['status']}: see the failures above", code=1)
    if code == gates.EXIT_EXPECTATIONS:
        raise Exit(f"run {merged['run_id']}: {len(expect.failed(merged))} expectation(s) failed", code=code)


@task(help={**RUN_HOSTS_HELP, "run": REPORT_HELP["run"]})
def status(c, spawn=None, ssh_config=None, accept_new_host_keys=False, run=None, servers=None, agents=None):
    """Each host's state of a run that lives on the hosts: its phase and agents (read-only)."""
    shared = _shared(c, recorded_run=True, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("status"):
        print(stages.bench.status(_session(c, shared), run))


@task(help={**RUN_HOSTS_HELP, **REPORT_HELP, "reconnect_for": BENCH_HELP["reconnect_for"],
            "verbose": BENCH_HELP["verbose"], "host_timeout": BENCH_HELP["host_timeout"] + "; default: the run's own",
            "allow_partial": "exit 0 even when some agents failed"})
def attach(c, spawn=None, ssh_config=None, accept_new_host_keys=False, run=None, reconnect_for=600.0,
           format="simple", allow_partial=False, detail=False, verbose=False, host_timeout=None, servers=None,
           agents=None):
    """Follow a run live until it ends, then collect it (after a detached `spawn`, also take it down).
    Exit 1: agents failed; 3: an expectation failed."""
    options.check_format("attach", format)
    shared = _shared(c, recorded_run=True, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    s = _session(c, shared)
    with clean_errors("attach"):
        run_dir = stages.bench.attach(s, run, float(reconnect_for), verbose=verbose,
                                      host_timeout=float(host_timeout) if host_timeout is not None else None)
    try:
        with clean_errors("attach"):
            stages.collect.fetch(s, run_dir.run_id)
            merged = stages.collect.run(s.workspace.runs_dir, run_dir.run_id, format, detail, echo=s.echo)
    finally:
        if run_dir.meta()["host_run"].get("spawn_detached"):
            with clean_errors("down"):
                stages.down.run(s)
    _exit_for(merged, allow_partial)


@task(help={"format": "simple, github, csv (one row per run with each benchmark's ops/s, latency and errors, "
                      "for change-point tools such as Apache Otava) or json"})
def runs(c, format="simple"):
    """List the runs under runs/: id, date, name, benchmarks, status (csv: their headline figures)."""
    options.check_format("runs", format)
    with clean_errors("runs"):
        say(reports.runs_table(_runs_dir(c), format))


@task(help={**REPORT_HELP, "html": "also write runs/<run-id>/report.html: tables and pictures in one file"})
def report(c, run=None, format="simple", detail=False, html=False):
    """Print a collected run's tables again (no SSH)."""
    options.check_format("report", format)
    with clean_errors("report"):
        say(reports.report(_runs_dir(c), run, format, detail))
        if html:
            print(f"wrote {reports.write_html(_runs_dir(c), run)}")


@task(help={"a": "the baseline: a run id or directory, or several comma-separated (pooled)",
            "b": "the contender, likewise", "format": FORMAT_HELP,
            "fail_on": "exit 3 when a benchmark's throughput falls, or p99 rises, significantly by more than this "
                       "(e.g. 5%)"})
def compare(c, a, b, format="simple", fail_on=None):
    """Per benchmark, B's throughput and latency against A's: the change, or ~ when within the noise."""
    options.check_format("compare", format)
    with clean_errors("compare"):
        table, regressions = reports.compare(_runs_dir(c), a, b, format, fail_on)
        say(table)
    if regressions:
        raise Exit("\n".join(regressions), code=gates.EXIT_EXPECTATIONS)


@task(help={"run": "run id or directory (default: runs/latest)",
            "against": "other runs, comma-separated: one more line each in the latency spectra"})
def plot(c, run=None, against=None):
    """Write PNGs into runs/<run-id>/plots/: throughput, latency, hosts, latency spectra."""
    with clean_errors("plot"):
        for path in reports.plot(_runs_dir(c), run, against):
            print(f"wrote {path}")


@task(help={**SHARED_HELP, **FORCE_HELP, "keep_files": "leave ~/.fleetbench on the hosts",
            "servers": "server hosts, comma-separated: clean these (with --agents) instead of the deployment's",
            "agents": "agent hosts, comma-separated: clean these (with --servers) instead of the deployment's"})
def down(c, spawn=None, ssh_config=None, accept_new_host_keys=False, keep_files=False, force=False, servers=None,
         agents=None):
    """Stop every server and agent of ours on every host it can reach, and remove the remote files.
    Exit 1 when a host could not be cleaned (each named, with why; the others are cleaned)."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("down"):
        stages.down.run(_session(c, shared), keep_files, force=force)


@task(help={**SHARED_HELP, **BENCH_HELP, **FORCE_HELP, **BUNDLED_HELP,
            "keep_up": "leave the servers running afterwards (also after Ctrl-C)",
            "allow_partial": "exit 0 when agents failed",
            "detach": "deploy, start the run and return at once; `attach` follows, collects and takes it down"})
def spawn(c, spawn=None, ssh_config=None, accept_new_host_keys=False, keep_up=False, allow_partial=False,
          agent_timeout=900.0, host_timeout=30.0, servers=None, agents=None, force=False, verbose=False,
          reconnect_for=600.0, lease=None, detach=False, bundled_python=False):
    """deploy, bench, collect, down. Exit 1: agents failed; 3: an expectation failed.
    With --detach: deploy, start the run and return; `attach` follows, collects and takes it down."""
    shared = _shared(c, spawn=spawn, servers=servers, agents=agents, ssh_config=ssh_config,
                     accept_new_host_keys=accept_new_host_keys)
    with clean_errors("spawn"):
        s = _session(c, shared, validate=True, bundled_python=bundled_python)
    run_options = _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, spawn_detached=not keep_up,
                               verbose=verbose)
    leave_up = keep_up
    try:
        with clean_errors("spawn"):
            stages.deploy.run(s, force=force)
            run_dir = stages.bench.run(s, run_options)
            if detach:  # the run needs its servers: `attach` takes them down at its end
                leave_up = True
                return
            stages.collect.fetch(s, run_dir.run_id)
            merged = stages.collect.run(s.workspace.runs_dir, run_dir.run_id, echo=s.echo)
    finally:
        if not leave_up:
            with clean_errors("down"):
                stages.down.run(s, force=force)
    _exit_for(merged, allow_partial)


TASKS = (check, build, deploy, bench, status, attach, collect, down, spawn, runs, report, compare, plot)


def namespace() -> Collection:
    """A new collection of fleetbench's tasks, with the shared options' defaults in its config
    (``inv`` in the checkout adds its developer tools to its own copy)."""
    ns = Collection(*TASKS)
    ns.configure({"fleetbench": dict(options.DEFAULTS)})
    return ns


ns = namespace()
