"""The command line on broken spawn files: every file of the bad corpus, run as a user runs it.

``inv check --spawn F`` must exit non-zero with every problem its ``# expect:`` lines name and
never a traceback. ``deploy``, ``bench`` and ``spawn`` validate the same way before any SSH:
an ssh_config whose ProxyCommand leaves a marker file proves that no connection was even tried
(and a valid file with the same trap proves the trap works).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "data" / "spawn" / "bad"
GOOD = REPO / "tests" / "data" / "spawn" / "good"
EXAMPLES = REPO / "examples"
INV = Path(sys.executable).parent / "inv"
BAD_FILES = sorted(BAD.glob("*.toml")) + sorted(BAD.glob("*.json"))


def expectations(path: Path) -> list[str]:
    prefix = "# expect: "
    return [line[len(prefix):] for line in path.read_text().splitlines() if line.startswith(prefix)]


def inv(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # A clean HOME: no ~/.ssh/config or known_hosts of the developer's gets involved.
    env = {**os.environ, "HOME": str(cwd), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(INV), "--search-root", str(REPO), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """``inv check`` on every bad file, a few at a time (each is a fresh interpreter)."""
    cwd = tmp_path_factory.mktemp("check")
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda p: inv(cwd, "check", "--spawn", str(p)), BAD_FILES)
        return {p.name: proc for p, proc in zip(BAD_FILES, done, strict=False)}


def test_the_corpus_is_there() -> None:
    assert len(BAD_FILES) >= 30
    for path in BAD_FILES:
        assert expectations(path), f"{path.name} has no '# expect:' lines"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_check_names_every_problem_without_a_traceback(checked, path: Path) -> None:
    proc = checked[path.name]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert proc.stderr.startswith("check failed: "), output
    for fragment in expectations(path):
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr}"
    assert "ok (" not in proc.stdout


@pytest.mark.parametrize("path", [*sorted(GOOD.glob("*.toml")), *sorted(GOOD.glob("*.json")),
                                  *sorted(EXAMPLES.glob("*.toml"))], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_check_accepts_good_files_and_every_example(tmp_path: Path, path: Path) -> None:
    proc = inv(tmp_path, "check", "--spawn", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{path}: ok (")


def test_examples_exist_for_every_server_kind() -> None:
    from bench.spawn import spec

    kinds = {spec.load(p).server.kind for p in EXAMPLES.glob("*.toml")}
    assert kinds == set(spec.SERVER_KINDS)


def test_check_on_a_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = inv(tmp_path, "check", "--spawn", "nope.toml")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("check failed: nope.toml: cannot read")


def _trap(tmp_path: Path) -> tuple[Path, Path]:
    """An ssh_config that makes any SSH attempt leave a marker (and then fail)."""
    marker = tmp_path / "ssh-was-tried"
    config = tmp_path / "trap_ssh_config"
    config.write_text(f"Host *\n    ProxyCommand sh -c 'touch {marker}; exit 1'\n")
    return config, marker


@pytest.mark.parametrize("task,name", [("deploy", "many-problems.toml"), ("deploy", "command-problems.toml"),
                                       ("deploy", "inventory-content.toml"), ("bench", "unknown-key.toml"),
                                       ("spawn", "cluster-replicas.toml"), ("build", "bad-hosts.toml")])
def test_tasks_that_use_hosts_validate_before_any_ssh(tmp_path: Path, task: str, name: str) -> None:
    config, marker = _trap(tmp_path)
    path = BAD / name
    proc = inv(tmp_path, task, "--spawn", str(path), "--ssh-config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"{task} failed: ")
    for fragment in expectations(path):
        assert fragment in proc.stderr
    assert not marker.exists(), "an SSH connection was attempted for a spawn file that is not valid"
    assert "connected to" not in proc.stdout


def test_the_trap_catches_a_real_attempt(tmp_path: Path) -> None:
    config, marker = _trap(tmp_path)
    proc = inv(tmp_path, "deploy", "--spawn", str(GOOD / "minimal.toml"), "--ssh-config", str(config))
    assert proc.returncode == 1
    assert "deploy failed: " in proc.stderr
    assert marker.exists()
