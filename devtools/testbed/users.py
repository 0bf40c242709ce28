"""An unprivileged login user on every host (``up(user=NAME)``): its passwd and group lines,
and a home reached through a symlink (``/home/NAME -> data/NAME``), as on machines where
``/home`` is a link to a data disk. The user cannot sudo (no sudoers entry, no password)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .system import TestbedError

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
FIRST_UID = 2000


@dataclass(frozen=True)
class LoginUser:
    name: str
    uid: int
    gid: int

    @property
    def home(self) -> str:
        return f"/home/{self.name}"

    @property
    def real_home(self) -> str:
        return f"/home/data/{self.name}"


def validate_user(name: str) -> str:
    if not isinstance(name, str) or not _USER_RE.match(name) or name == "root":
        raise TestbedError(f"bad testbed user {name!r}: a login name like 'bench' (lowercase letters, digits,"
                           " '_' or '-', not root)")
    return name


def plan_user(name: str, passwd: str, group: str) -> LoginUser:
    """``name`` with a uid and gid that this machine's passwd and group do not use."""
    validate_user(name)
    taken = {int(f[2]) for f in _entries(passwd) if len(f) > 3 and f[2].isdigit()}
    taken |= {int(f[2]) for f in _entries(group) if len(f) > 2 and f[2].isdigit()}
    uid = FIRST_UID
    while uid in taken:
        uid += 1
    return LoginUser(name, uid, uid)


def passwd_text(base: str, user: LoginUser) -> str:
    """The hosts' /etc/passwd: the machine's, with ``user`` (replacing one of that name)."""
    lines = [line for line in base.splitlines() if line.split(":", 1)[0] != user.name]
    return "\n".join([*lines, f"{user.name}:*:{user.uid}:{user.gid}:fleetbench testbed:{user.home}:/bin/sh"]) + "\n"


def group_text(base: str, user: LoginUser) -> str:
    lines = [line for line in base.splitlines() if line.split(":", 1)[0] != user.name]
    return "\n".join([*lines, f"{user.name}:x:{user.gid}:"]) + "\n"


def home_lines(user: LoginUser) -> list[str]:
    """Shell (run as root on a host, after /home got its fresh tmpfs) making the user's home."""
    q = shlex.quote
    return [
        f"mkdir -p {q(user.real_home)}",
        f"chown {user.uid}:{user.gid} {q(user.real_home)}",
        f"chmod 700 {q(user.real_home)}",
        f"ln -s data/{q(user.name)} {q(user.home)}",
    ]


def read_base(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise TestbedError(f"cannot read {path}: {exc.strerror or exc}") from None


def _entries(text: str) -> Sequence[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
