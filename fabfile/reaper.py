"""Finding and stopping every process of ours on a host, even with no record of its pid.

Everything fleetbench starts on a host runs with its working directory inside the private
directory (server nodes in ``nodes/<port>``, agents and samplers in ``runs/<id>/...``), so
"ours" is exactly "cwd under ~/.fleetbench". That survives a controller killed before it
could record a pid.
"""

from __future__ import annotations

from typing import List

from fabric import Connection

from fabfile.remote import REMOTE_DIR, cmd, run


def find_command(under: str = REMOTE_DIR) -> str:
    """Shell that prints the pid of every process whose cwd is ``~/under`` or below it."""
    # One `ls -l` reads every cwd link (a readlink per process would fork once per process).
    return (
        f'base="$HOME"/{cmd(under)}; ls -l /proc/[0-9]*/cwd 2>/dev/null | '
        'awk -v base="$base" -v self="$$" \'{ i = index($0, " -> "); if (!i) next; '
        'target = substr($0, i + 4); if (target != base && index(target, base "/") != 1) next; '
        'n = split(substr($0, 1, i - 1), parts, "/"); pid = parts[n - 1]; if (pid != self) print pid }\''
    )


def our_pids(c: Connection, under: str = REMOTE_DIR) -> List[int]:
    return [int(p) for p in run(c, find_command(under)).split() if p.isdigit()]


def reap(c: Connection, grace_s: float = 5.0, under: str = REMOTE_DIR) -> List[int]:
    """TERM every process of ours (or only those under ``~/under``, e.g. one run's directory),
    KILL what is left after ``grace_s``; return the pids."""
    script = (
        f"pids=$({find_command(under)}); [ -z \"$pids\" ] && exit 0; echo $pids; kill $pids 2>/dev/null; "
        f"i=0; while [ $i -lt {int(grace_s * 10)} ]; do alive=''; "
        f"for p in $pids; do [ -d /proc/$p ] && alive=\"$alive $p\"; done; "
        f'[ -z "$alive" ] && exit 0; sleep 0.1; i=$((i+1)); done; kill -9 $alive 2>/dev/null; true'
    )
    return [int(p) for p in run(c, script).split() if p.isdigit()]
