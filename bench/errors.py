"""The one root of every error fleetbench shows its user.

It lives in ``bench/`` (pure, importable on a host's Python 3.9) so both halves can derive from
it: the spawn-file and merge errors here, the SSH, build and pipeline errors in ``fabfile/``.
``fabfile.errors.clean_errors`` turns any of them into one clear message and a non-zero exit.
"""

from __future__ import annotations


class FleetbenchError(Exception):
    """A failure the user can act on; its message names the culprit (host, key, command)."""
