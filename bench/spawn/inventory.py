"""Where an inventory's hosts come from: a JSON file, or the output of a command. The I/O that
:mod:`bench.spawn.hosts` leaves to its caller, behind a :data:`bench.spawn.hosts.Fetch`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.spawn.hosts import Fetch, InventoryError

INVENTORY_TIMEOUT_S = 60.0
MAX_INVENTORY_BYTES = 1 << 20

#: ``run(command, cwd)``: the stdout of ``hosts.inventory_command``, run in ``cwd``.
InventoryRunner = Callable[[str, Path], str]


def fetcher(base: Path, run_command: InventoryRunner | None) -> Fetch:
    """A Fetch reading ``inventory`` files relative to ``base`` and running ``inventory_command``
    with ``run_command`` in ``base`` (without one, such a command is a problem)."""

    def fetch(key: str, origin: str) -> str:
        if key == "inventory":
            return read_inventory(base / origin)
        if run_command is None:
            raise InventoryError("not run by parse() without run_command; use spec.load()")
        try:
            return run_command(origin, base)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            raise InventoryError(str(e) or type(e).__name__) from None

    return fetch


def read_inventory(path: Path) -> str:
    """The text of an inventory file, at most MAX_INVENTORY_BYTES of UTF-8; InventoryError if not."""
    try:
        if not path.is_file():
            raise InventoryError(f"{str(path)!r} is not a file")
        with path.open("rb") as f:
            raw = f.read(MAX_INVENTORY_BYTES + 1)
    except (OSError, ValueError) as e:
        raise InventoryError(f"cannot read {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    if len(raw) > MAX_INVENTORY_BYTES:
        raise InventoryError(f"{str(path)!r} is larger than {MAX_INVENTORY_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InventoryError(f"{str(path)!r} is not UTF-8 text") from None


def run_inventory_command(command: str, cwd: Path, timeout: float = INVENTORY_TIMEOUT_S) -> str:
    """Run ``command`` through the shell in ``cwd`` and return its stdout.

    Raises RuntimeError naming the command, with the tail of its stderr, when it cannot be
    started, exits non-zero, or runs longer than ``timeout`` seconds.
    """
    try:
        done = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True,
                              errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{command!r} did not finish within {timeout:g}s") from None
    except OSError as e:
        raise RuntimeError(f"{command!r} could not be started: {e.strerror or e}") from None
    if done.returncode != 0:
        tail = _tail(done.stderr)
        raise RuntimeError(f"{command!r} exited with status {done.returncode}" + (f": {tail}" if tail else ""))
    return done.stdout


def _tail(text: str, lines: int = 5, chars: int = 500) -> str:
    kept = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
    return kept[-chars:]
