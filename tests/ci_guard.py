"""Under CI (``CI=true``) the real suite must have run: a skipped fleet test fails the run, and
golden files are never rewritten. A pytest plugin (loaded by tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FLEET_DIR = Path(__file__).resolve().parent / "fleet"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _is_fleet(item: pytest.Item) -> bool:
    return item.get_closest_marker("fleet") is not None or FLEET_DIR in Path(str(item.path)).resolve().parents


def pytest_configure(config: pytest.Config) -> None:
    if under_ci() and os.environ.get("FLEETBENCH_UPDATE_GOLDEN"):
        raise pytest.UsageError("FLEETBENCH_UPDATE_GOLDEN is refused under CI=true: golden files are only "
                                "rewritten by hand, and the diff read, never by CI")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and under_ci() and _is_fleet(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"CI=true, but the fleet test {item.nodeid} was skipped ({reason}): "
                           "under CI the real suite must run (root, sshd, network namespaces)")
