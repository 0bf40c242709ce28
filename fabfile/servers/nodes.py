"""Server processes on hosts: start one node, wait until it answers, stop it by pid.

A node lives in its own private directory (``~/.fleetbench/nodes/<port>``), with its HOME in
there too (``home/``), and is started detached (setsid, nohup), so it outlives the SSH session.
The pid we record is the server's own: the server pex is built ``--venv --sh-boot`` and execs
the server in place. A node is only ever killed after checking that the pid's working
directory is that node's directory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from fabfile.remote.host import Host
from fabfile.remote.reaper import find_command
from fabfile.remote.shell import PEX_ROOT, REMOTE_DIR, RemoteError, cmd, label, run, run_input, tail_command

LOG = "server.log"
START_LOG = "start.log"
SECRETS = ".start-secrets"  # the start script's secrets, only while it starts the node
NODE_HOME = "home"  # the server process's HOME, inside its node directory
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Node:
    host: str  # ssh destination
    address: str  # where agents and peers reach it
    port: int
    index: int
    pid: int = 0
    role: str = "master"
    version: str = ""  # what the server says it is (redis-server --version), when it says

    @property
    def dir(self) -> str:
        return f"{REMOTE_DIR}/nodes/{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:  # how a node is named in errors: by its host
        return self.host


def start(c: Host, node: Node, pex_path: str, args: Sequence[str], env: Mapping[str, str] | None = None,
          files: Mapping[str, str] | None = None) -> int:
    """Start ``pex_path args`` detached in the node's fresh directory; return its pid.

    ``env`` and ``files`` (name -> text: a password file, a config with one) may hold secrets:
    they travel on the start command's stdin as a small script of shell builtins, which the
    node's shell writes to a 0600 file, sources, and removes. No secret is ever in a command
    line: neither ours, nor the server's, nor a helper's (printf and export are builtins)."""
    # Three statements, not one &&-chain: "a && b &" would background the whole chain in a
    # subshell that keeps the SSH channel open, and $! would be that subshell, not the server.
    script = (
        # A leftover of ours in this node's directory (a deploy that was killed) holds the port.
        f"pids=$({find_command(node.dir)}); [ -n \"$pids\" ] && kill -9 $pids 2>/dev/null\n"
        f"umask 077 && rm -rf {cmd(node.dir)} && mkdir -p {cmd(node.dir + '/' + NODE_HOME)} && cd {cmd(node.dir)} "
        "|| exit 1\n"
        f"cat > {SECRETS} && . ./{SECRETS} && rm -f {SECRETS} || exit 1\n"
        # The server's HOME is inside its node directory: whatever it keeps there (gunicorn's
        # ~/.gunicorn, caches, histories) goes when the node does, never into the login's home.
        f'PEX_ROOT="$HOME/{PEX_ROOT}" HOME="$PWD/{NODE_HOME}" setsid nohup "$HOME"/{cmd(pex_path)} {cmd(*args)} '
        f"> {START_LOG} 2>&1 < /dev/null &\n"
        "echo $!"
    )
    out = run_input(c, script, secrets_script(env or {}, files or {}), what=f"start the server in ~/{node.dir}").strip()
    try:
        return int(out.splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(label(c), "start server", f"could not read its pid from: {out!r}") from None


def secrets_script(env: Mapping[str, str], files: Mapping[str, str]) -> str:
    """Shell builtins only: write each file (0600: the start script's umask) and export each
    variable. Names are checked; values are quoted, so they stay data."""
    lines = []
    for name, text in files.items():
        if not _FILE_NAME.match(name):
            raise ValueError(f"not a plain file name: {name!r}")
        lines.append(f"printf '%s' {cmd(text)} > {name} || exit 1")
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"not an environment variable name: {key!r}")
        lines.append(f"export {key}={cmd(value)}")
    return "".join(line + "\n" for line in lines) or ":\n"


def is_ours_command(node: Node) -> str:
    """Shell test: the node's pid is alive and runs in the node's directory."""
    # The kernel reports a cwd by its real path: compare with the directory's real path, since
    # $HOME may go through a symlink (/home -> /data/home). No directory, no match.
    return (
        f'{{ d=$(cd -P "$HOME"/{cmd(node.dir)} 2>/dev/null && pwd) && '
        f'[ "$(readlink /proc/{int(node.pid)}/cwd 2>/dev/null)" = "$d" ]; }}'
    )


def alive(c: Host, node: Node) -> bool:
    return run(c, f"{is_ours_command(node)} && echo yes || true").strip() == "yes"


def log_tail(c: Host, node: Node, lines: int = 20) -> str:
    """The last lines of the node's logs, for error messages."""
    each = tail_command('"$f"', lines)
    out = run(c, f"cd {cmd(node.dir)} 2>/dev/null && for f in {START_LOG} {LOG}; do "
                 f'[ -f "$f" ] && {{ echo "==> $f <=="; {each}; }}; done; true', check=False)
    return out.strip() or "(no log)"


def wait_until(c: Host, node: Node, ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``ready`` (backing off to 0.5 s) until true; fail at once if the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        # Liveness first: a dead server's port may be held by something that never answers.
        if node.pid and not alive(c, node):
            raise RemoteError(label(c), what, f"the server (pid {node.pid}) exited; its log:\n{log_tail(c, node)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RemoteError(label(c), what, f"not ready after {timeout:.0f}s; its log:\n{log_tail(c, node)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def stop(c: Host, node: Node, timeout: float = 10.0) -> None:
    """TERM the node's pid (if it is still ours), then KILL after ``timeout``."""
    if not node.pid:
        return
    pid = int(node.pid)
    script = (
        f"if {is_ours_command(node)}; then kill {pid}; "
        f"i=0; while [ -d /proc/{pid} ] && [ $i -lt {int(timeout * 10)} ]; do sleep 0.1; i=$((i+1)); done; "
        f"[ -d /proc/{pid} ] && kill -9 {pid}; fi; true"
    )
    run(c, script)

