"""Small system helpers of the testbed: running tools, reading /proc, ending processes, files."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

class TestbedError(RuntimeError):
    """Anything that stops the testbed from coming up, reporting or going down."""

    __test__ = False  # not a pytest test class


def run_tool(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                            env=TOOL_ENV, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from e
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        if input:
            detail += "\n-- input --\n" + input.strip()
        raise TestbedError(f"`{shlex.join(argv)}` failed (exit {cp.returncode}): {detail}")
    return cp


def ip_batch(lines: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    run_tool(argv, input="\n".join(lines) + "\n", check=not force)


def proc_cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def proc_alive(pid: int) -> bool:
    """Running (a zombie counts as gone: on some inits they linger until reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def pids_with(marker: bytes) -> dict[int, bytes]:
    """Every live process whose command line contains ``marker``."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if pid == os.getpid():
                continue
            cmd = proc_cmdline(pid)
            if marker in cmd and proc_alive(pid):
                out[pid] = cmd
    return out


def terminate(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGTERM, wait, SIGKILL what is left. Returns pids that would not die."""
    pids = [p for p in set(pids) if proc_alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if proc_alive(p)]
            if pids:
                time.sleep(0.01)
        if not pids:
            break
    return pids


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else f"({path.name} is empty)"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def netns_inode(netns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def list_netns() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except OSError:
        return []

