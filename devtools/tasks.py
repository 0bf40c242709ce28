"""The checkout's developer tasks (not installed with fleetbench): the testbed, the demo, perf.

    inv testbed.up / testbed.status / testbed.down    a local fleet of real sshd hosts in network namespaces
    inv demo                                          testbed up, spawn the embedded default, testbed down
    inv perf                                          fleetbench's own benchmarks on a testbed of their own
"""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from fabfile.cli.tasks import SPAWN, spawn
from fabfile.errors import clean_errors
from fabfile.session import forget_sessions, workspace


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
