"""Down: stop every process of ours on every host it can reach and remove our files.

Teardown is never blocked by one bad host: no preflight (stopping processes and removing files
takes a shell, not python3), every host is cleaned on its own, and those that could not be
(unreachable, locked by another controller) are named with why, after the others were cleaned;
then down fails, and keeps the deployment record so that running it again retries them.
"""

from __future__ import annotations

from fabfile.remote import lock, reaper
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.host import Host
from fabfile.remote.shell import REMOTE_DIR, cmd
from fabfile.remote.shell import run as run_remote
from fabfile.session import Session
from fabfile.ship.interpreter_host import REMOVE_ELSEWHERE


def hosts_of(s: Session) -> list[str]:
    """--servers/--agents when given; else the deployment record's hosts when there is one (the
    spawn file may have changed since); else the spawn file's."""
    deployment = s.deployment()
    if not any(s.host_lists) and deployment is not None and deployment.hosts:
        return list(deployment.hosts)
    return list(dict.fromkeys([*s.spawn.hosts.servers, *s.spawn.hosts.agents]))


def run(s: Session, keep_files: bool = False, force: bool = False) -> None:
    """``keep_files`` leaves ~/.fleetbench on the hosts. Another controller's deployment is left
    alone (the deploy lock, taken host by host; ``force`` as for deploy)."""
    hosts = hosts_of(s)
    opened = s.open_fleet()
    fleet = opened if opened is not None and set(opened.names) == set(hosts) else Fleet(hosts, s.settings)
    mine = lock.me("down")

    def clean(name: str) -> list[int]:
        lock.take_host(fleet, name, mine, force=force, echo=s.echo)
        return clear_host(fleet[name], keep_files)

    try:
        stopped = fleet.connect(clean, what="down")
        failed: FleetError | None = None
    except FleetError as exc:
        stopped, failed = exc.results, exc
    finally:
        if fleet is not opened:
            fleet.close()
    total = sum(len(p or []) for p in stopped.values())
    s.echo(f"stopped {total} process(es) on {len(stopped)} host(s)"
           + ("" if keep_files else f"; removed ~/{REMOTE_DIR} on each"))
    if failed is not None:
        raise FleetError(f"down could not clean every host (the deployment record is kept: `inv down` again "
                         f"retries; cleaned: {', '.join(stopped) or 'none'})", failed.failures, stopped)
    s.forget_deployment()


def clear_host(c: Host, keep_files: bool = False) -> list[int]:
    """Every process of ours on the host reaped (their pids), and unless ``keep_files`` every file
    of ours removed: ~/.fleetbench (the deploy lock with it) and a bundled python kept elsewhere."""
    pids = reaper.reap(c)
    if not keep_files:
        run_remote(c, f"{REMOVE_ELSEWHERE}; {cmd('rm', '-rf', REMOTE_DIR)}")
    return pids
