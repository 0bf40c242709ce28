"""fleetbench's ``inv`` entry point: thin tasks composing the pipeline in fabfile/.

    inv demo                      testbed up, spawn the embedded default, testbed down
    inv spawn                     deploy, bench, collect, down
    inv deploy bench collect      the same steps, chained in one call (one connection per host)
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from invoke import Collection, task
from invoke.exceptions import Exit

from bench import spec
from fabfile.cli import clean_errors, forget_sessions, session, workspace

SPAWN = "spawn.toml"
HELP = {
    "spawn": "spawn file (TOML or JSON; default spawn.toml)",
    "ssh_config": "an ssh_config file to read first (the testbed's is read when it is up)",
    "accept_new_host_keys": "accept and remember unknown host keys (a changed key is always refused)",
}


def _session(spawn: str, ssh_config: Optional[str], accept_new_host_keys: bool):
    return session(spawn or SPAWN, ssh_config, accept_new_host_keys)


@task(help=HELP)
def check(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False):
    """Validate a spawn file without touching any host."""
    with clean_errors("check"):
        parsed = spec.load(Path(spawn))
    print(f"{spawn}: ok ({len(parsed.hosts.servers)} server hosts, {len(parsed.hosts.agents)} agent hosts, "
          f"{len(parsed.benchmarks)} benchmarks)")


@task(help=HELP)
def build(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False):
    """Build server.pex and agent.pex for the interpreters the hosts really have."""
    with clean_errors("build"):
        artifacts = _session(spawn, ssh_config, accept_new_host_keys).build()
    for art in artifacts.values():
        print(f"{art.name}: {art.path} sha256 {art.sha256}")


@task(help=HELP)
def deploy(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False):
    """Build, push (via cat) and start the servers. Does nothing when nothing changed."""
    with clean_errors("deploy"):
        _session(spawn, ssh_config, accept_new_host_keys).deploy()


@task(help={**HELP, "agent_timeout": "seconds before an agent that has not finished is given up (default 900)"})
def bench(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, agent_timeout=900.0):
    """Run the spawn file's benchmarks on the agent hosts; results are written as they arrive."""
    with clean_errors("bench"):
        _session(spawn, ssh_config, accept_new_host_keys).bench(float(agent_timeout))


@task(help={**HELP, "run": "run id or directory (default: runs/latest)", "format": "simple, github, csv or json",
            "allow_partial": "exit 0 even when some agents failed"})
def collect(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, run=None, format="simple",
            allow_partial=False):
    """Merge a run's agent results into run.json and print the tables."""
    with clean_errors("collect"):
        merged = _session(spawn, ssh_config, accept_new_host_keys).collect(run, format)
    if merged["status"] != "ok" and not allow_partial:
        raise Exit(f"run {merged['run_id']} is {merged['status']}: see the failures above", code=1)


@task(help={**HELP, "keep_files": "leave ~/.fleetbench on the hosts"})
def down(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, keep_files=False):
    """Stop every server and agent of ours on every host, and remove the remote files."""
    with clean_errors("down"):
        _session(spawn, ssh_config, accept_new_host_keys).down(keep_files)


@task(help={**HELP, "keep_up": "leave the servers running afterwards", "allow_partial": "exit 0 when agents failed"})
def spawn(c, spawn=SPAWN, ssh_config=None, accept_new_host_keys=False, keep_up=False, allow_partial=False):
    """deploy, bench, collect, down."""
    s = _session(spawn, ssh_config, accept_new_host_keys)
    try:
        with clean_errors("spawn"):
            s.deploy()
            s.bench()
            merged = s.collect()
    finally:
        if not keep_up:
            with clean_errors("down"):
                s.down()
    if merged["status"] != "ok" and not allow_partial:
        raise Exit(f"run {merged['run_id']} is {merged['status']}", code=1)


# -- the testbed: a local fleet of real sshd hosts in network namespaces ---------------------

def _testbed():
    from fabfile.testbed import Testbed  # needs root and iproute2; only loaded when asked for

    return Testbed(workspace().testbed_dir)


@task(help={"hosts": "how many hosts (tb1..tbN; default 5)",
            "python": "give one host another interpreter: tb3=/path/to/python3.9 (repeatable)",
            "uplink": "shape the controller's link to the fleet, e.g. 20mbit (hosts talk at full speed)"},
      iterable=["python"])
def testbed_up(c, hosts=5, python=None, uplink=None):
    """Bring up a local fleet of real OpenSSH hosts (needs root)."""
    from fabfile.testbed import TestbedError, parse_python_overrides

    try:
        up = _testbed().up(int(hosts), parse_python_overrides(python or []), uplink)
    except TestbedError as exc:
        raise Exit(f"testbed.up failed: {exc}", code=1) from None
    for h in up:
        print(f"{h.name:6} {h.address:15} python {h.python}")
    print(f"ssh -F {workspace().testbed_dir / 'ssh_config'} {up[0].name}" if up else "no hosts")


@task
def testbed_status(c):
    """Show the testbed's hosts: address, sshd, python."""
    rows: List[dict] = _testbed().status()
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


testbed = Collection("testbed")
testbed.add_task(testbed_up, "up")
testbed.add_task(testbed_status, "status")
testbed.add_task(testbed_down, "down")

ns = Collection(check, build, deploy, bench, collect, down, spawn, demo, testbed)
