"""bench.spawn.inventory: reading an inventory file and running an inventory command (the I/O
that the pure [hosts] section is handed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.spawn import inventory
from bench.spawn.hosts import InventoryError


def test_run_inventory_command_failures(tmp_path: Path) -> None:
    assert inventory.run_inventory_command("printf '{}'", tmp_path) == "{}"
    lines = "; ".join(f"echo line{i} >&2" for i in range(10))
    with pytest.raises(RuntimeError) as caught:
        inventory.run_inventory_command(f"{lines}; exit 4", tmp_path)
    assert str(caught.value).startswith("'echo line0 >&2;")
    assert str(caught.value).endswith("exited with status 4: line5 | line6 | line7 | line8 | line9")
    with pytest.raises(RuntimeError, match=r"^'sleep 5' did not finish within 0.2s$"):
        inventory.run_inventory_command("sleep 5", tmp_path, timeout=0.2)


def test_read_inventory(tmp_path: Path) -> None:
    good = tmp_path / "hosts.json"
    good.write_text('{"servers": ["a"], "agents": ["b"]}')
    assert inventory.read_inventory(good) == '{"servers": ["a"], "agents": ["b"]}'
    with pytest.raises(InventoryError, match=r"^'.*/nope.json' is not a file$"):
        inventory.read_inventory(tmp_path / "nope.json")
    with pytest.raises(InventoryError, match=r"^'.*' is not a file$"):
        inventory.read_inventory(tmp_path)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"servers": ["caf\xe9"]}')
    with pytest.raises(InventoryError, match=r"latin.json' is not UTF-8 text$"):
        inventory.read_inventory(latin)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (inventory.MAX_INVENTORY_BYTES + 1))
    with pytest.raises(InventoryError, match=rf"huge.json' is larger than {inventory.MAX_INVENTORY_BYTES} bytes$"):
        inventory.read_inventory(huge)
    with pytest.raises(InventoryError, match=r"nul\\x00byte' is not a file$"):  # not a ValueError escaping
        inventory.read_inventory(tmp_path / "nul\0byte")


def test_fetcher_reads_files_from_base_and_runs_commands_in_it(tmp_path: Path) -> None:
    (tmp_path / "fleet.json").write_text("{}")
    calls: list[tuple[str, Path]] = []

    def run(command: str, cwd: Path) -> str:
        calls.append((command, cwd))
        return "out"

    fetch = inventory.fetcher(tmp_path, run)
    assert fetch("inventory", "fleet.json") == "{}"
    assert fetch("inventory_command", "terraform output") == "out"
    assert calls == [("terraform output", tmp_path)]


@pytest.mark.parametrize("error, message", [
    (RuntimeError("'x' exited with status 4"), "'x' exited with status 4"),
    (OSError("no such shell"), "no such shell"),
    (subprocess.SubprocessError(), "SubprocessError"),
])
def test_fetcher_turns_a_failing_command_into_the_problem(tmp_path: Path, error: Exception, message: str) -> None:
    def run(command: str, cwd: Path) -> str:
        raise error

    with pytest.raises(InventoryError) as caught:
        inventory.fetcher(tmp_path, run)("inventory_command", "x")
    assert str(caught.value) == message


def test_fetcher_without_a_runner_runs_nothing(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"^not run by parse\(\) without run_command; use spec.load\(\)$"):
        inventory.fetcher(tmp_path, None)("inventory_command", "touch ran")
    assert not (tmp_path / "ran").exists()
