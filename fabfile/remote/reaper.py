"""Finding and stopping every process of ours on a host, even with no record of its pid.

Everything fleetbench starts on a host runs with its working directory inside the private
directory (server nodes in ``nodes/<port>``, agents and samplers in ``runs/<id>/...``), so
"ours" is exactly "cwd under ~/.fleetbench". That survives a controller killed before it
could record a pid.
"""

from __future__ import annotations

from fabfile.remote.host import Host
from fabfile.remote.shell import REMOTE_DIR, cmd, run


def find_command(under: str = REMOTE_DIR) -> str:
    """Shell that prints the pid of every process whose cwd is ``~/under`` or below it."""
    # Runs no program, so a status execs nothing on a host: `cd -P` into a process's cwd link
    # leaves its real path in $PWD. It does so in a subshell, leaving the caller's cwd alone,
    # and that subshell, whose own cwd moves, skips itself: it finds its pid by /proc/self
    # ($$ would name its parent).
    return (
        # The leading space keeps `$({find_command()})` a command substitution, not `$((` arithmetic.
        f' (cd -P "$HOME"/{cmd(under)} 2>/dev/null || exit 0; base=$PWD; cd -P /proc/self; me=${{PWD#/proc/}}; '
        'for p in /proc/[0-9]*; do [ "${p#/proc/}" = "$me" ] && continue; '
        'cd -P "$p/cwd" 2>/dev/null || continue; '
        'case "$PWD/" in "$base"/*) echo "${p#/proc/}";; esac; done)'
    )


def our_pids(c: Host, under: str = REMOTE_DIR) -> list[int]:
    return [int(p) for p in run(c, find_command(under)).split() if p.isdigit()]


def reap(c: Host, grace_s: float = 5.0, under: str = REMOTE_DIR) -> list[int]:
    """TERM every process of ours (or only those under ``~/under``, e.g. one run's directory),
    KILL what is left after ``grace_s``; return the pids."""
    script = (
        f"pids=$({find_command(under)}); [ -z \"$pids\" ] && exit 0; echo $pids; kill $pids 2>/dev/null; "
        f"i=0; while [ $i -lt {int(grace_s * 10)} ]; do alive=''; "
        f"for p in $pids; do [ -d /proc/$p ] && alive=\"$alive $p\"; done; "
        f'[ -z "$alive" ] && exit 0; sleep 0.1; i=$((i+1)); done; kill -9 $alive 2>/dev/null; true'
    )
    return [int(p) for p in run(c, script).split() if p.isdigit()]
