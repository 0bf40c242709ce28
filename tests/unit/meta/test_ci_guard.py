"""CI=true: a skipped or xfailed fleet test fails the run, so does a fleet module skipped as a
whole; golden files cannot be rewritten. Runs a real pytest on a small suite with the plugin
tests/conftest.py loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]

FLEET_ITEMS = '''
import pytest

def test_fleet_skipped():
    pytest.skip("needs root")

@pytest.mark.xfail(reason="known")
def test_fleet_xfail():
    assert False

@pytest.mark.xfail(reason="flaky")
def test_fleet_xpass():
    pass

def test_fleet_ok():
    pass
'''

ELSEWHERE = '''
import pytest

def test_plain_skipped():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known")
def test_plain_xfail():
    assert False

@pytest.mark.fleet
def test_marked_fleet_skipped():
    pytest.skip("no sshd")

def test_ok():
    pass
'''

MODULE_SKIP = '''
import pytest

pytest.skip("no testbed here", allow_module_level=True)

def test_never_collected():
    pass
'''

IMPORTORSKIP = '''
import pytest

pytest.importorskip("no_such_module_fleetbench")

def test_never_collected():
    pass
'''


def _suite(tmp_path: Path, fleet: dict[str, str]) -> None:
    (tmp_path / "fleet").mkdir()
    for name, text in fleet.items():
        (tmp_path / "fleet" / name).write_text(text)
    (tmp_path / "test_elsewhere.py").write_text(ELSEWHERE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    fleet: real testbed\nfleet_dirs = fleet\n")


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "FLEETBENCH_UPDATE_GOLDEN")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ci_guard",
                           "-rA", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(TESTS), **env}, timeout=120)


def test_without_ci_a_skip_is_a_skip(tmp_path):
    _suite(tmp_path, {"test_items.py": FLEET_ITEMS, "test_module_skip.py": MODULE_SKIP})
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "2 passed, 4 skipped, 2 xfailed, 1 xpassed" in proc.stdout


def test_under_ci_a_skipped_or_xfailed_fleet_test_fails_the_run(tmp_path):
    _suite(tmp_path, {"test_items.py": FLEET_ITEMS})
    proc = _pytest(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout
    assert "4 failed, 2 passed, 1 skipped, 1 xfailed" in proc.stdout
    for name in ("fleet/test_items.py::test_fleet_skipped", "fleet/test_items.py::test_fleet_xfail",
                 "fleet/test_items.py::test_fleet_xpass", "test_elsewhere.py::test_marked_fleet_skipped"):
        assert f"FAILED {name}" in proc.stdout, proc.stdout
    assert "was skipped (needs root)" in proc.stdout
    assert "is marked xfail (known)" in proc.stdout


def test_under_ci_a_fleet_module_skipped_at_import_fails_the_run(tmp_path):
    _suite(tmp_path, {"test_module_skip.py": MODULE_SKIP, "test_optional.py": IMPORTORSKIP})
    (tmp_path / "test_elsewhere.py").write_text("def test_ok():\n    pass\n")  # nothing else fails
    proc = _pytest(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout
    assert "the fleet module fleet/test_module_skip.py (no testbed here) was skipped as a whole" in proc.stdout
    assert "the fleet module fleet/test_optional.py (could not import 'no_such_module_fleetbench'" in proc.stdout


def test_under_ci_a_skipped_module_elsewhere_is_allowed(tmp_path):
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfleet_dirs = fleet\n")
    proc = _pytest(tmp_path, CI="true")
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout


def test_under_ci_goldens_are_never_rewritten(tmp_path):
    _suite(tmp_path, {"test_items.py": FLEET_ITEMS})
    proc = _pytest(tmp_path, CI="true", FLEETBENCH_UPDATE_GOLDEN="1")
    assert proc.returncode != 0
    assert "FLEETBENCH_UPDATE_GOLDEN is refused under CI=true" in proc.stderr + proc.stdout
