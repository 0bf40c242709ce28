"""An agent's job as it travels, and the bounds on what an agent sends back: both are part of
the host-run contract (bench.wire.hostrun), named here for the controller's stages."""

from __future__ import annotations

from bench.wire.hostrun import (
    ECHO_LINE_BYTES,
    MAX_RESULT_BYTES,
    RECORD_LINE_BYTES,
    STDERR_KEEP_BYTES,
    public_job,
    wire_job,
)

__all__ = ["ECHO_LINE_BYTES", "MAX_RESULT_BYTES", "RECORD_LINE_BYTES", "STDERR_KEEP_BYTES", "public_job", "wire_job"]
