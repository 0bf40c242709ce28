"""CI=true: a skipped fleet test fails the run; golden files cannot be rewritten. Runs a real
pytest on a small suite with the plugin tests/conftest.py loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest

pytestmark = []

@pytest.mark.fleet
def test_fleet_skipped():
    pytest.skip("needs root")

def test_plain_skipped():
    pytest.skip("not here")

@pytest.mark.fleet
@pytest.mark.xfail(reason="known")
def test_fleet_xfail():
    assert False

def test_ok():
    pass
'''


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    fleet: real testbed\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "FLEETBENCH_UPDATE_GOLDEN")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ci_guard",
                           "-rA", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(TESTS), **env}, timeout=120)


def test_without_ci_a_skip_is_a_skip(tmp_path):
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in proc.stdout


def test_under_ci_a_skipped_fleet_test_fails_the_run(tmp_path):
    proc = _pytest(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in proc.stdout
    assert "FAILED test_suite.py::test_fleet_skipped" in proc.stdout
    assert "was skipped (needs root)" in proc.stdout


def test_under_ci_goldens_are_never_rewritten(tmp_path):
    proc = _pytest(tmp_path, CI="true", FLEETBENCH_UPDATE_GOLDEN="1")
    assert proc.returncode != 0
    assert "FLEETBENCH_UPDATE_GOLDEN is refused under CI=true" in proc.stderr + proc.stdout
