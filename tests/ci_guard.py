"""Under CI (``CI=true``) the real suite must have run: a skipped or xfailed fleet test fails the
run, a fleet module skipped as a whole (a module-level ``pytest.skip`` or ``importorskip``) fails
it too, and golden files are never rewritten. A pytest plugin (loaded by tests/conftest.py).

The fleet tests are those marked ``fleet`` and everything under the ini option ``fleet_dirs``
(default ``tests/fleet``, relative to the rootdir): a module skipped at import has no items, so
only its path can say it was a fleet module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

FLEET_DIRS_INI = "fleet_dirs"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(FLEET_DIRS_INI, "directories (relative to the rootdir) whose tests must all run under CI=true",
                  type="paths", default=[])


def _fleet_dirs(config: pytest.Config) -> list[Path]:
    dirs = config.getini(FLEET_DIRS_INI) or [config.rootpath / "tests" / "fleet"]
    return [Path(d).resolve() for d in dirs]


def _under_fleet_dir(config: pytest.Config, path: Path) -> bool:
    path = path.resolve()
    return any(d == path or d in path.parents for d in _fleet_dirs(config))


def _is_fleet(item: pytest.Item) -> bool:
    return item.get_closest_marker("fleet") is not None or _under_fleet_dir(item.config, Path(str(item.path)))


def pytest_configure(config: pytest.Config) -> None:
    if under_ci() and os.environ.get("FLEETBENCH_UPDATE_GOLDEN"):
        raise pytest.UsageError("FLEETBENCH_UPDATE_GOLDEN is refused under CI=true: golden files are only "
                                "rewritten by hand, and the diff read, never by CI")
    if under_ci():
        config.pluginmanager.register(SkippedFleetModules(config), "ci-guard-skipped-fleet-modules")


def _reason(longrepr: object) -> str:
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return str(reason).removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not under_ci() or not _is_fleet(item):
        return
    if hasattr(report, "wasxfail"):  # xfailed (reported as skipped) or xpassed (as passed)
        if report.skipped or report.passed:
            report.outcome = "failed"
            report.longrepr = (f"CI=true, but the fleet test {item.nodeid} is marked xfail ({report.wasxfail}): "
                               "under CI every fleet test must pass")
            del report.wasxfail  # reported as a failure, not as an expected one
    elif report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"CI=true, but the fleet test {item.nodeid} was skipped ({_reason(report.longrepr)}): "
                           "under CI the real suite must run (root, sshd, network namespaces)")


class SkippedFleetModules:
    """A fleet module skipped as a whole is a collect report, not a test item: counted here and
    turned into a failed session at its end (registered by ``pytest_configure`` under CI)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.modules: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped and _under_fleet_dir(self.config, self.config.rootpath / report.fspath):
            self.modules.append(f"{report.nodeid} ({_reason(report.longrepr)})")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for module in self.modules:
            terminalreporter.write_line(f"CI=true, but the fleet module {module} was skipped as a whole: "
                                        "under CI the real suite must run", red=True)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.modules and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
