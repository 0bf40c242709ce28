"""The deploy lock: one controller at a time deploys to a host's login.

``take`` writes ``~/.fleetbench/lock`` on every host, atomically (the shell's noclobber is an
O_EXCL create), naming its holder: the user and machine of the controller, its project
directory and pid, what it deploys and since when. The lock stays with the deployment (``down``
removes it with ``~/.fleetbench``), so a second controller deploying to the same hosts and login
is refused, naming the holder. The holder itself takes it again (same user, machine and
project) unless another of its processes is deploying right now. ``force`` takes a lock over
only when its holder is gone: its process has ended (known only when it ran on this machine),
or the lock is older than ``STALE_AFTER_S``. A refusal on any host releases what was taken.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench.errors import FleetbenchError
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import REMOTE_DIR, cmd, run

LOCK = f"{REMOTE_DIR}/lock"
STALE_AFTER_S = 12 * 3600  # longer than any run: a lock this old has no one behind it


@dataclass(frozen=True)
class Holder:
    user: str
    controller: str  # the controller machine's host name
    project: str
    pid: int
    run: str  # what it is doing, e.g. "deploy e2e"
    since: float

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            fields = json.loads(text)
            return cls(str(fields["user"]), str(fields["controller"]), str(fields["project"]), int(fields["pid"]),
                       str(fields["run"]), float(fields["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def same_controller(self, other: Holder) -> bool:
        return (self.user, self.controller, self.project) == (other.user, other.controller, other.project)

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"{self.user}@{self.controller} ({self.run}, from {self.project}, pid {self.pid}) since {when}"


def me(what: str) -> Holder:
    return Holder(getpass.getuser(), socket.gethostname(), os.getcwd(), os.getpid(), what, time.time())


def gone(holder: Holder, now: float | None = None) -> str | None:
    """Why ``holder`` no longer holds anything (None: it may well be at work)."""
    age = (now or time.time()) - holder.since
    if age > STALE_AFTER_S:
        return f"the lock is {age / 3600:.0f} h old"
    if holder.controller == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return f"its process {holder.pid} has ended"
        except PermissionError:  # another user's live process
            pass
    return None


def take_command(line: str) -> str:
    """Create the lock with ``line`` unless one exists: prints ``taken``, or ``held`` + the lock."""
    return (
        f"umask 077 && mkdir -p {cmd(REMOTE_DIR)} && chmod 700 {cmd(REMOTE_DIR)} || exit 1; "
        f"if (set -C; printf '%s\\n' {cmd(line)} > {cmd(LOCK)}) 2>/dev/null; then echo taken; "
        f"else echo held; cat {cmd(LOCK)}; fi"
    )


def replace_command(old: str, line: str) -> str:
    """Put ``line`` in place of the lock if it still says ``old`` (else print ``held`` + it)."""
    tmp = f"{LOCK}.new"
    return (
        f"umask 077; cur=$(cat {cmd(LOCK)} 2>/dev/null); "
        f'if [ "$cur" = {cmd(old)} ]; then printf \'%s\\n\' {cmd(line)} > {cmd(tmp)} && mv -f {cmd(tmp)} {cmd(LOCK)} '
        f'&& echo taken; else echo held; printf \'%s\\n\' "$cur"; fi'
    )


def release_command(line: str) -> str:
    """Remove the lock if it is still ``line``'s."""
    return f'[ "$(cat {cmd(LOCK)} 2>/dev/null)" = {cmd(line)} ] && rm -f {cmd(LOCK)}; true'


class LockRefused(FleetbenchError):
    """This host's login is locked by another controller."""


def _take_over(name: str, old: str, mine: Holder, force: bool) -> str | None:
    """May ``mine`` replace the lock line ``old``? None, or what to say when it takes over
    another controller's lock; LockRefused naming the holder when it may not."""
    holder = Holder.parse(old)
    why = "it is unreadable" if holder is None else gone(holder)
    if holder is not None and holder.same_controller(mine) and holder.pid == mine.pid:
        why = "it is this process's own"
    if holder is not None and why is None:
        hint = ("" if holder.same_controller(mine) else
                " (--force takes over only once that controller is gone)" if force else
                "; pass --force to take over once that controller is gone")
        raise LockRefused(f"{name}: deploying is locked by {holder}{hint}")
    if holder is not None and not holder.same_controller(mine) and not force:
        raise LockRefused(f"{name}: deploying is locked by {holder}; {why}: pass --force to take over")
    if holder is not None and not holder.same_controller(mine):
        return f"{name}: took the deploy lock over from {holder} ({why})"
    return None


def take_host(fleet: Fleet, name: str, mine: Holder, *, force: bool = False,
              echo: Callable[[str], None] = print) -> str:
    """Lock ``name``'s login for ``mine``, or raise LockRefused naming the holder."""
    answer, _, held = run(fleet[name], take_command(mine.line())).partition("\n")
    for _attempt in range(3):  # a concurrent take-over may change the lock under us
        if answer.strip() == "taken":
            return name
        old = held.strip()
        said = _take_over(name, old, mine, force)
        if said:
            echo(said)
        answer, _, held = run(fleet[name], replace_command(old, mine.line())).partition("\n")
    raise LockRefused(f"{name}: the deploy lock kept changing under us; try again")


def peek_host(fleet: Fleet, name: str, mine: Holder, *, force: bool = False) -> str:
    """What ``take_host`` would refuse, without taking anything (LockRefused naming the holder)."""
    old = run(fleet[name], f"cat {cmd(LOCK)} 2>/dev/null; true").strip()
    if old:
        _take_over(name, old, mine, force)
    return name


def take(fleet: Fleet, what: str, *, force: bool = False, echo: Callable[[str], None] = print) -> Holder:
    """Lock every host of ``fleet`` for this controller, or raise FleetError naming each holder.

    The first host by name is taken alone, before the others: two controllers (or two processes
    of one) taking the same hosts at once cannot each win some hosts and both be refused; the
    one refused there takes nothing and only looks at the other hosts, to name every holder."""
    mine = me(what)
    head = min(fleet.names)
    rest = [name for name in fleet.names if name != head]
    try:
        fleet.each(lambda name: take_host(fleet, name, mine, force=force, echo=echo), [head], what="deploy lock")
    except FleetError as refused:
        try:
            fleet.each(lambda name: peek_host(fleet, name, mine, force=force), rest, what="deploy lock")
        except FleetError as more:
            raise FleetError("deploy lock", {**refused.failures, **more.failures}) from None
        raise
    try:
        fleet.each(lambda name: take_host(fleet, name, mine, force=force, echo=echo), rest, what="deploy lock")
    except FleetError as exc:
        taken = [head, *exc.results]
        fleet.each(lambda name: run(fleet[name], release_command(mine.line())), taken, what="deploy unlock")
        raise
    return mine
