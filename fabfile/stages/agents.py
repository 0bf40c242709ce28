"""An agent's job as it travels, and the bounds on what an agent sends back.

A job may hold secrets (the redis password, the spawn file's { env = ... } values): it reaches
its agent inside its host's plan, over the SSH channel's stdin, and then on the agent's own
stdin (fabfile.runs.hostrun, bench.agent.hostrun), never on a command line or in a file that
stays. A result keeps the job without them (:func:`public_job`).

What an agent sends is bounded here, whatever it sends (fabfile.stages.follow): the last
STDERR_KEEP_BYTES of its stderr are kept (a shown line is cut at ECHO_LINE_BYTES), and a result
over MAX_RESULT_BYTES is refused as that agent's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bench.spawn import secrets
from bench.wire.job import AgentJob

#: The stderr an agent's record keeps (its end: where a traceback or the last progress is).
STDERR_KEEP_BYTES = 4 << 20
#: A shown stderr line is cut here: one line without a newline must not flood the terminal.
ECHO_LINE_BYTES = 4 << 10
#: A per-second record (its histogram encoded) is one stderr line and may be long; still bounded.
RECORD_LINE_BYTES = 1 << 20
#: The largest result accepted. A 15-minute run's per-second histograms take about 3 MiB.
MAX_RESULT_BYTES = 16 << 20


def wire_job(job: AgentJob, auth: str | None, environ: Mapping[str, str]) -> str:
    """The job as its agent gets it: the redis password in, every { env = ... } resolved."""
    return replace(job, params=secrets.resolve(job.params, environ, f"benchmark {job.benchmark!r} params"),
                   auth=auth).to_json()


def public_job(job: AgentJob) -> dict[str, Any]:
    """The job as a result may keep it: secrets by name (``{"env": NAME}``), no password."""
    return {**job.to_dict(), "params": secrets.public(job.params), "auth": None}
