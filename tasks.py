"""fleetbench's ``inv`` entry point: thin tasks composing the pipeline in fabfile/.

    inv demo                      testbed up, spawn the embedded default, testbed down
    inv spawn                     deploy, bench, collect, down
    inv deploy bench collect      the same steps, chained in one call (one connection per host)
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from bench.report import expect
from bench.report.document import RunDoc
from bench.spawn import cli_hosts
from fabfile import stages
from fabfile.errors import clean_errors
from fabfile.runs import gates, reports
from fabfile.session import Session, forget_sessions, load_spawn, session, workspace
from fabfile.terminal import say

SPAWN = "spawn.toml"
SPAWN_HELP = {"spawn": "spawn file (TOML or JSON; default spawn.toml)"}
HELP = {
    **SPAWN_HELP,
    "ssh_config": "an ssh_config file to read first (the testbed's is read when it is up)",
    "accept_new_host_keys": "accept and remember unknown host keys (a changed key is always refused)",
}
BUNDLED_HELP = {"bundled_python": "run the bundled CPython 3.11 on every host, not only where python3 is missing "
                                   "or older than 3.9"}
HOSTS_HELP = {
    "servers": "server hosts, comma-separated: replace the spawn file's [hosts] (with --agents)",
    "agents": "agent hosts, comma-separated: replace the spawn file's [hosts] (with --servers)",
}


def _session(spawn: str, ssh_config: str | None, accept_new_host_keys: bool, *, validate: bool = False,
             servers: str | None = None, agents: str | None = None, bundled_python: bool = False) -> Session:
    s = session(spawn or SPAWN, ssh_config, accept_new_host_keys, cli_hosts.split(servers), cli_hosts.split(agents))
    s.bundled_python = s.bundled_python or bool(bundled_python)
    if validate:
        _ = s.spawn  # parses and validates the spawn file: a bad one fails here, before any SSH
    return s


@task(help={**SPAWN_HELP, **HOSTS_HELP})
def check(c, spawn=SPAWN, servers=None, agents=None):
    """Validate a spawn file without touching any host (nor building anything)."""
    with clean_errors("check"):
        # also: every { env = ... } secret's variable is set
        parsed = load_spawn(Path(spawn), servers=cli_hosts.split(servers), agents=cli_hosts.split(agents))
    print(f"{spawn}: ok ({len(parsed.hosts.servers)} server hosts, {len(parsed.hosts.agents)} agent hosts, "
          f"{len(parsed.benchmarks)} benchmarks)")


@task(help={**HELP, **HOSTS_HELP, **BUNDLED_HELP})
def build(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, servers=None, agents=None,
          bundled_python=False):
    """Build server.pex and agent.pex (and the server's own files) for what the hosts really have."""
    with clean_errors("build"):
        artifacts = stages.deploy.build(_session(spawn, ssh_config, accept_new_host_keys, servers=servers,
                                                 agents=agents, bundled_python=bundled_python))
    for art in artifacts.values():
        print(f"{art.name}: {art.path} sha256 {art.sha256}")


FORCE_HELP = {"force": "take over the hosts' deploy lock when its holder is gone (process ended, or stale)"}


@task(help={**HELP, **HOSTS_HELP, **FORCE_HELP, **BUNDLED_HELP,
            "direct_push": "send every host its own copy from here (no host-to-host relay)"})
def deploy(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, direct_push=False, servers=None,
           agents=None, force=False, bundled_python=False):
    """Build, push (via cat) and start the servers. Does nothing when nothing changed."""
    with clean_errors("deploy"):
        stages.deploy.run(_session(spawn, ssh_config, accept_new_host_keys, servers=servers, agents=agents,
                                   bundled_python=bundled_python),
                          direct_push=direct_push, force=force)


BENCH_HELP = {
    "agent_timeout": "seconds before an agent that has not finished is stopped and given up (default 900)",
    "host_timeout": "seconds without any answer, or with its host run's heartbeat standing still, before a host "
                    "(or a command on it) is given up (default 30: 15 missed 2 s heartbeats)",
    "verbose": "also every agent's own log lines (default: the fleet-wide live view, and a failed agent's lines)",
    "reconnect_for": "seconds to keep retrying a host that stopped answering (default 600)",
    "lease": "seconds the run may go on with no controller attached before the hosts stop it "
             "(default: the planned duration plus 30 min)",
    "detach": "start the run on the hosts and return at once, printing its id (`inv attach` follows it)",
}


def _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, spawn_detached=False, verbose=False):
    return stages.bench.RunOptions(agent_timeout=float(agent_timeout), host_timeout=float(host_timeout),
                                   reconnect_for=float(reconnect_for), lease=None if lease is None else float(lease),
                                   detach=bool(detach), spawn_detached=spawn_detached, verbose=bool(verbose))


@task(help={**HELP, **HOSTS_HELP, **BENCH_HELP})
def bench(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, agent_timeout=900.0, host_timeout=30.0,
          servers=None, agents=None, verbose=False, reconnect_for=600.0, lease=None, detach=False):
    """Run the spawn file's benchmarks: each host gets its share of the whole run and runs it
    detached, phases in order; results are written on the hosts and streamed here, shown live.
    A lost link is retried (--reconnect-for), lost hosts are recorded (`inv collect` fetches them
    later; it decides the exit status); Ctrl-C stops the run everywhere, keeps what was measured,
    leaves the servers."""
    with clean_errors("bench"):
        stages.bench.run(_session(spawn, ssh_config, accept_new_host_keys, validate=True, servers=servers,
                                  agents=agents),
                         _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, verbose=verbose))


REPORT_HELP = {"run": "run id or directory (default: runs/latest)", "format": "simple, github, csv or json",
               "detail": "also the host facts and one row per agent"}


# --spawn is accepted (and unused: the run directory holds the spawn file it ran) so that a chain
# can name it for every task, as in `inv bench --spawn x.toml collect --spawn x.toml`.
COLLECT_HELP = {"spawn": "accepted for chained calls; the run's own spawn file is used",
                **REPORT_HELP, "allow_partial": "exit 0 even when some agents failed"}


@task(help={**COLLECT_HELP, "ssh_config": HELP["ssh_config"], "accept_new_host_keys": HELP["accept_new_host_keys"]})
def collect(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, run=None, format="simple",
            allow_partial=False, detail=False):
    """Fetch from the hosts what they finished of the run (if it lives there and we lack some),
    then merge its agent results and host metrics into run.json and export/, print the tables
    and each expectation with its measured value. Exit 1: agents failed; 3: an expectation failed."""
    with clean_errors("collect"):
        s = _session(spawn, ssh_config, accept_new_host_keys)
        stages.collect.fetch(s, run)
        merged = stages.collect.run(workspace().runs_dir, run, format, detail)
    _exit_for(merged, allow_partial)


def _exit_for(merged: RunDoc, allow_partial: bool) -> None:
    code = gates.exit_code(merged, allow_partial)
    if code == 1:
        raise Exit(f"run {merged['run_id']} is {merged['status']}: see the failures above", code=1)
    if code == gates.EXIT_EXPECTATIONS:
        raise Exit(f"run {merged['run_id']}: {len(expect.failed(merged))} expectation(s) failed", code=code)


@task(help={**HELP, "run": REPORT_HELP["run"]})
def status(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, run=None):
    """Each host's state of a run that lives on the hosts: its phase and agents (read-only)."""
    with clean_errors("status"):
        print(stages.bench.status(_session(spawn, ssh_config, accept_new_host_keys), run))


@task(help={**HELP, **REPORT_HELP, "reconnect_for": BENCH_HELP["reconnect_for"], "verbose": BENCH_HELP["verbose"],
            "host_timeout": BENCH_HELP["host_timeout"] + "; default: the run's own",
            "allow_partial": "exit 0 even when some agents failed"})
def attach(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, run=None, reconnect_for=600.0,
           format="simple", allow_partial=False, detail=False, verbose=False, host_timeout=None):
    """Follow a run live until it ends, then collect it (after a detached `spawn`, also take it down).
    Exit 1: agents failed; 3: an expectation failed."""
    s = _session(spawn, ssh_config, accept_new_host_keys)
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
    with clean_errors("runs"):
        say(reports.runs_table(workspace().runs_dir, format))


@task(help={**REPORT_HELP, "html": "also write runs/<run-id>/report.html: tables and pictures in one file"})
def report(c, run=None, format="simple", detail=False, html=False):
    """Print a collected run's tables again (no SSH)."""
    with clean_errors("report"):
        say(reports.report(workspace().runs_dir, run, format, detail))
        if html:
            print(f"wrote {reports.write_html(workspace().runs_dir, run)}")


@task(help={"a": "the baseline: a run id or directory, or several comma-separated (pooled)",
            "b": "the contender, likewise", "format": "simple, github, csv or json",
            "fail_on": "exit 3 when a benchmark's throughput falls, or p99 rises, significantly by more than this "
                       "(e.g. 5%)"})
def compare(c, a, b, format="simple", fail_on=None):
    """Per benchmark, B's throughput and latency against A's: the change, or ~ when within the noise."""
    with clean_errors("compare"):
        table, regressions = reports.compare(workspace().runs_dir, a, b, format, fail_on)
        say(table)
    if regressions:
        raise Exit("\n".join(regressions), code=gates.EXIT_EXPECTATIONS)


@task(help={"run": "run id or directory (default: runs/latest)",
            "against": "other runs, comma-separated: one more line each in the latency spectra"})
def plot(c, run=None, against=None):
    """Write PNGs into runs/<run-id>/plots/: throughput, latency, hosts, latency spectra."""
    with clean_errors("plot"):
        for path in reports.plot(workspace().runs_dir, run, against):
            print(f"wrote {path}")


@task(help={**HELP, **FORCE_HELP, "keep_files": "leave ~/.fleetbench on the hosts",
            "servers": "server hosts, comma-separated: clean these (with --agents) instead of the deployment's",
            "agents": "agent hosts, comma-separated: clean these (with --servers) instead of the deployment's"})
def down(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, keep_files=False, force=False, servers=None,
         agents=None):
    """Stop every server and agent of ours on every host it can reach, and remove the remote files.
    Exit 1 when a host could not be cleaned (each named, with why; the others are cleaned)."""
    with clean_errors("down"):
        stages.down.run(_session(spawn, ssh_config, accept_new_host_keys, servers=servers, agents=agents), keep_files,
                        force=force)


@task(help={**HELP, **HOSTS_HELP, **BENCH_HELP, **FORCE_HELP, **BUNDLED_HELP,
            "keep_up": "leave the servers running afterwards (also after Ctrl-C)",
            "allow_partial": "exit 0 when agents failed",
            "detach": "deploy, start the run and return at once; `inv attach` follows, collects and takes it down"})
def spawn(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, keep_up=False, allow_partial=False,
          agent_timeout=900.0, host_timeout=30.0, servers=None, agents=None, force=False, verbose=False,
          reconnect_for=600.0, lease=None, detach=False, bundled_python=False):
    """deploy, bench, collect, down. Exit 1: agents failed; 3: an expectation failed.
    With --detach: deploy, start the run and return; `inv attach` follows, collects and takes it down."""
    with clean_errors("spawn"):
        s = _session(spawn, ssh_config, accept_new_host_keys, validate=True, servers=servers, agents=agents,
                     bundled_python=bundled_python)
    options = _run_options(agent_timeout, host_timeout, reconnect_for, lease, detach, spawn_detached=not keep_up,
                           verbose=verbose)
    leave_up = keep_up
    try:
        with clean_errors("spawn"):
            stages.deploy.run(s, force=force)
            run_dir = stages.bench.run(s, options)
            if detach:  # the run needs its servers: `inv attach` takes them down at its end
                leave_up = True
                return
            stages.collect.fetch(s, run_dir.run_id)
            merged = stages.collect.run(s.workspace.runs_dir, run_dir.run_id, echo=s.echo)
    finally:
        if not leave_up:
            with clean_errors("down"):
                stages.down.run(s, force=force)
    _exit_for(merged, allow_partial)


# -- the testbed: a local fleet of real sshd hosts in network namespaces ---------------------

def _testbed(user=None, bastion=False, nat=False, stock_sshd=False):
    from devtools.testbed import Testbed  # needs root and iproute2; only loaded when asked for

    return Testbed(workspace().testbed_dir, user=user, bastion=bastion, nat=nat,
                   sshd_limits="stock" if stock_sshd else "relaxed")


@task(help={"hosts": "how many hosts (tb1..tbN; default 5)",
            "python": "give one host another interpreter: tb3=/path/to/python3.9 (repeatable)",
            "uplink": "shape the controller's link to the fleet, e.g. 20mbit (hosts talk at full speed)",
            "user": "hosts log in as this unprivileged user (no sudo; its home is reached through a symlink)",
            "bastion": "the fleet is reachable only through a bastion host tb0 (ssh_config gets ProxyJump)",
            "nat": "every host behind a 1:1 NAT, as in a cloud: reached only at a public address (198.18.x.y), "
                   "holding only its private one (with --bastion: the bastion)",
            "stock_sshd": "the hosts' sshd keeps OpenSSH's stock limits (MaxStartups 10:30:100, MaxSessions 10) "
                          "instead of 100/100",
            "image": "give one host (or '*': all) its own root filesystem: tb3=debian11, a recipe (debian11,"
                     " debian13, debian12-arm64, minimal) or the path of a rootfs directory or tarball (repeatable)"},
      iterable=["python", "image"])
def testbed_up(c, hosts=5, python=None, uplink=None, user=None, bastion=False, nat=False, stock_sshd=False,
               image=None):
    """Bring up a local fleet of real OpenSSH hosts (needs root)."""
    from devtools.testbed import TestbedError, parse_image_overrides, parse_python_overrides

    try:
        up = _testbed(user, bastion, nat, stock_sshd).up(int(hosts), parse_python_overrides(python or []), uplink,
                                                         images=parse_image_overrides(image or []))
    except TestbedError as exc:
        raise Exit(f"testbed.up failed: {exc}", code=1) from None
    for h in up:
        print(f"{h.name:6} {h.address:15} python {h.python or 'none'}" + (f"  image {h.image}" if h.image else ""))
    print(f"ssh -F {workspace().testbed_dir / 'ssh_config'} {up[0].name}" if up else "no hosts")


@task
def testbed_status(c):
    """Show the testbed's hosts: address, sshd, python."""
    rows: list[dict] = _testbed().status()
    if not rows:
        print("no testbed is up")
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


@task
def testbed_down(c):
    """Take the testbed down: its sshd processes, namespaces, links and files."""
    forget_sessions()
    _testbed().down()
    print("testbed down")


@task(help={"hosts": "testbed hosts (default 5)", "keep": "leave the testbed up afterwards"})
def demo(c, hosts=5, keep=False):
    """testbed.up, spawn with the embedded default spawn.toml, testbed.down."""
    testbed_up(c, hosts=hosts)
    try:
        spawn(c, spawn=SPAWN)
    finally:
        if not keep:
            testbed_down(c)


@task(help={"json": "print one JSON object instead of the table", "keep": "leave the perf testbed up",
            "only": "comma-separated figures to measure (default: all)", "hosts": "testbed hosts (default 128)",
            "prefix": "the perf testbed's host prefix (default $FLEETBENCH_PERF_PREFIX or pf)",
            "subnet": "its subnet, 10.213.N.0/24 (default $FLEETBENCH_PERF_SUBNET or 210)"})
def perf(c, json=False, keep=False, only=None, hosts=128, prefix=None, subnet=None):
    """fleetbench's own benchmarks on a testbed of their own: controller per host, spawn at 128 hosts,
    fan-out, push, no-op deploy, the agent against redis-benchmark and wrk, merge."""
    import json as json_module
    import os

    from devtools import perf as suite
    from devtools.testbed import TestbedError

    if os.geteuid() != 0:
        raise Exit("perf failed: the perf testbed needs root (network namespaces)", code=1)
    try:
        runner = suite.Suite(workspace().root, prefix=prefix, subnet=subnet, hosts=int(hosts))
    except suite.PerfError as exc:
        raise Exit(f"perf failed: {exc}", code=1) from None
    try:
        with clean_errors("perf"):
            figures = runner.run(only.split(",") if only else suite.FIGURES, keep=keep)
    except (suite.PerfError, TestbedError) as exc:
        raise Exit(f"perf failed: {exc}", code=1) from None
    if json:
        print(json_module.dumps(suite.report(figures, runner.testbed, runner.count, runner.errors), indent=1))
    else:
        print(suite.table(figures, runner.errors))
    if runner.errors:
        raise Exit(f"perf: {len(runner.errors)} figure(s) could not be measured: {', '.join(runner.errors)}", code=1)


testbed = Collection("testbed", up=testbed_up, status=testbed_status, down=testbed_down)

ns = Collection(check, build, deploy, bench, status, attach, collect, down, spawn, demo, testbed, runs, report, compare,
                plot, perf)
