"""Down: stop every process of ours on every host of the deployment and remove our files."""

from __future__ import annotations

from fabfile.remote import lock, reaper
from fabfile.remote.shell import REMOTE_DIR, cmd
from fabfile.remote.shell import run as run_remote
from fabfile.session import Session
from fabfile.ship.interpreter_host import REMOVE_ELSEWHERE


def run(s: Session, keep_files: bool = False, force: bool = False) -> None:
    """The hosts come from the deployment record when there is one (the spawn file may have
    changed since), else from the spawn file; ``keep_files`` leaves ~/.fleetbench on them.
    Another controller's deployment is left alone (the deploy lock; ``force`` as for deploy)."""
    deployment = s.deployment()
    hosts = list(deployment.hosts) if deployment and deployment.hosts else None
    fleet = s.fleet(hosts, python=False)  # no bundled python pushed only to be removed
    lock.take(fleet, "down", force=force, echo=s.echo)

    def clean(name: str) -> list[int]:
        pids = reaper.reap(fleet[name])
        if not keep_files:
            run_remote(fleet[name], f"{REMOVE_ELSEWHERE}; {cmd('rm', '-rf', REMOTE_DIR)}")  # + the bundled python
        return pids

    stopped = fleet.each(clean, what="down")
    total = sum(len(p) for p in stopped.values())
    s.echo(f"stopped {total} process(es) on {len(stopped)} host(s)"
           + ("" if keep_files else f"; removed ~/{REMOTE_DIR} on each"))
    s.forget_deployment()
