"""Running commands on a host: every argument quoted, every failure named.

Remote files live under one private directory in the login's home (never a shared /tmp),
created 0700 before anything is written into it.
"""

from __future__ import annotations

import shlex

from fabfile.errors import FleetbenchError
from fabfile.remote.host import Host, HostLost, TimedOut

#: Relative to the login's home, so each user of a host gets their own.
REMOTE_DIR = ".fleetbench"
PEX_ROOT = f"{REMOTE_DIR}/pex"
BIN_DIR = f"{REMOTE_DIR}/bin"

TAIL_LINES = 20
#: What a tail of a host's file may cost us: a log "line" can be any length (or the whole file).
TAIL_BYTES = 64 * 1024


class RemoteError(FleetbenchError):
    """A command failed on a host: names the host, the command and the tail of its output."""

    def __init__(self, host: str, command: str, detail: str, exit_code: int | None = None):
        self.host = host
        self.command = command
        self.detail = detail
        self.exit_code = exit_code
        status = f" (exit {exit_code})" if exit_code is not None else ""
        super().__init__(f"{host}: `{command}` failed{status}" + (f":\n{indent(detail)}" if detail.strip() else ""))


def indent(text: str, prefix: str = "    | ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def tail_command(word: str, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """Shell: the last ``lines`` lines of the file ``word`` (a shell word, already quoted), at
    most ``max_bytes`` of them however long its lines are; nothing when it does not exist."""
    return f"tail -c {int(max_bytes)} {word} 2>/dev/null | tail -n {int(lines)}"


def cmd(*parts: object) -> str:
    """A shell command line from parts, each quoted: data can never become code."""
    return " ".join(shlex.quote(str(p)) for p in parts)


def label(h: Host) -> str:
    """How a host is named in messages: the destination the user gave."""
    return h.name


#: Seconds any remote command may take unless its caller says otherwise: a frozen host (its
#: kernel still answers TCP, nothing of it runs) must never hang a fleetbench command.
DEFAULT_TIMEOUT_S = 300.0


def run(h: Host, command: str, *, timeout: float | None = DEFAULT_TIMEOUT_S, check: bool = True) -> str:
    """Run ``command`` (already quoted) and return its stdout; on failure raise RemoteError."""
    try:
        result = h.run(command, timeout=timeout)
    except TimedOut:
        raise RemoteError(h.name, command, f"no answer after {timeout:.0f}s") from None
    if check and result.exited != 0:
        raise RemoteError(h.name, command, tail(result.err_text or result.text), result.exited)
    return result.text


#: What a command given stdin by run_input may print: it answers with a line or two.
INPUT_ANSWER_BYTES = 1 << 20


def run_input(h: Host, command: str, data: str, *, what: str, timeout: float = 60) -> str:
    """Run ``command`` with ``data`` on its stdin and return its stdout. This is how secrets
    reach a host: never in a command line (``ps`` shows those to every user of the host).
    Errors name ``what`` and the output's tail, not the command."""
    try:
        result = h.run_input(command, data.encode(), timeout=timeout, limit=INPUT_ANSWER_BYTES)
    except HostLost as exc:
        raise RemoteError(h.name, what, f"no answer: {exc}") from None
    if result.exited != 0:
        raise RemoteError(h.name, what, tail(result.err_text or result.text), result.exited)
    return result.text


def private_dir_command(*subdirs: str) -> str:
    """Create the private directory tree (0700) and refuse one that others could write."""
    dirs = [REMOTE_DIR, *[f"{REMOTE_DIR}/{s}" for s in subdirs]]
    return (
        f"umask 077 && cd && mkdir -p {cmd(*dirs)} && chmod 700 {cmd(REMOTE_DIR)}"
        f" && test -O {cmd(REMOTE_DIR)}"
    )
