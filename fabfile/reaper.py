"""Finding and stopping every process of ours on a host, even with no record of its pid.

Everything fleetbench starts on a host runs with its working directory inside the private
directory (server nodes in ``nodes/<port>``, agents and samplers in ``runs/<id>/...``), so
"ours" is exactly "cwd under ~/.fleetbench". That survives a controller killed before it
could record a pid.
"""

from __future__ import annotations

from typing import List

from fabric import Connection

from fabfile.remote import REMOTE_DIR, run

_FIND = (
    'base="$HOME/{dir}"; for p in /proc/[0-9]*; do pid=${{p#/proc/}}; '
    '[ "$pid" = "$$" ] && continue; cwd=$(readlink "$p/cwd" 2>/dev/null) || continue; '
    'case "$cwd" in "$base"|"$base"/*) echo "$pid";; esac; done'
).format(dir=REMOTE_DIR)


def our_pids(c: Connection) -> List[int]:
    return [int(p) for p in run(c, _FIND).split() if p.isdigit()]


def reap(c: Connection, grace_s: float = 5.0) -> List[int]:
    """TERM every process of ours, KILL what is left after ``grace_s``; return the pids."""
    script = (
        f"pids=$({_FIND}); [ -z \"$pids\" ] && exit 0; echo $pids; kill $pids 2>/dev/null; "
        f"i=0; while [ $i -lt {int(grace_s * 10)} ]; do alive=''; "
        f"for p in $pids; do [ -d /proc/$p ] && alive=\"$alive $p\"; done; "
        f'[ -z "$alive" ] && exit 0; sleep 0.1; i=$((i+1)); done; kill -9 $alive 2>/dev/null; true'
    )
    return [int(p) for p in run(c, script).split() if p.isdigit()]
