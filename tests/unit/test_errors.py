"""Every error a task shows derives from the one base, and clean_errors turns it into one line."""

from __future__ import annotations

import pytest
from invoke.exceptions import Exit

from bench.errors import FleetbenchError
from bench.report.merge import ResultError
from bench.spawn.spec import SpecError
from fabfile import errors
from fabfile.deployment import StateError
from fabfile.errors import PipelineError, clean_errors
from fabfile.remote.fleet import FleetError
from fabfile.remote.shell import RemoteError
from fabfile.remote.ssh import ConnectError
from fabfile.runs.reports import ReportError
from fabfile.ship.build import BuildError


@pytest.mark.parametrize("kind", [SpecError, ResultError, FleetError, RemoteError, ConnectError, BuildError,
                                  PipelineError, ReportError, StateError])
def test_every_error_a_task_shows_has_the_one_base(kind: type) -> None:
    assert issubclass(kind, FleetbenchError) and errors.FleetbenchError is FleetbenchError


def test_result_error_is_still_a_value_error() -> None:
    assert issubclass(ResultError, ValueError)


@pytest.mark.parametrize("exc", [RemoteError("tb1", "ls", "No such file", 2), PipelineError("nothing is deployed"),
                                 FileNotFoundError("runs/latest")])
def test_a_known_error_is_one_line_and_exit_1(exc: Exception) -> None:
    with pytest.raises(Exit) as caught, clean_errors("deploy"):
        raise exc
    assert caught.value.code == 1 and caught.value.message == f"deploy failed: {exc}"


def test_ctrl_c_is_exit_130_and_anything_else_is_a_traceback() -> None:
    with pytest.raises(Exit) as caught, clean_errors("bench"):
        raise KeyboardInterrupt
    assert caught.value.code == 130 and caught.value.message == "bench interrupted"
    with pytest.raises(ZeroDivisionError), clean_errors("bench"):
        _ = 1 / 0
