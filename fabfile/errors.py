"""The controller's errors: the one base, and how a task shows them.

Every known failure (a bad spawn file, a host that cannot be reached, a command that failed
remotely, a build that failed, a run that cannot be merged) derives from
:class:`FleetbenchError` and reaches the user as one clear message and a non-zero exit, never
as a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from invoke.exceptions import Exit

from bench.errors import FleetbenchError
from fabfile.terminal import printable

__all__ = ["FleetbenchError", "PipelineError", "clean_errors"]


class PipelineError(FleetbenchError):
    """A stage cannot go on (e.g. ``inv bench`` with nothing deployed); the message says why."""


@contextlib.contextmanager
def clean_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (FleetbenchError, FileNotFoundError) as exc:
        raise Exit(f"{what} failed: {printable(str(exc))}", code=1) from None  # messages quote hosts
    except KeyboardInterrupt:
        raise Exit(f"{what} interrupted", code=130) from None
