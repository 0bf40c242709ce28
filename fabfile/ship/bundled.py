"""Giving the hosts that need it the bundled python: built (cached), checked, pushed, installed.

The preflight (fabfile.remote.fleet) decides per host; this says the decision for every host
before anything is pushed, then for each machine among the hosts that need it: the archive from
fabfile.ship.interpreter, refused here if it is not what it claims (sha256, machine), pushed
directly (those hosts may have no python3 to relay with; the file is skipped where it already
is), and installed by one shell command (fabfile.ship.interpreter_host).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from fabfile.remote.shell import RemoteError, run
from fabfile.ship import interpreter, interpreter_host
from fabfile.ship.push import ProgressPrinter, push

if TYPE_CHECKING:
    from fabfile.remote.fleet import Fleet

Echo = Callable[[str], None]


class NoExecutableDirectory(RemoteError):
    """No candidate directory of a host lets a file be executed."""


def noexec_error(host: str, tried: tuple[str, ...]) -> NoExecutableDirectory:
    listed = "\n".join(f"- {t}" for t in tried) or "- (no candidate could be created)"
    return NoExecutableDirectory(host, "install the bundled python",
                                 "no directory there can execute a file (mounted noexec?); tried:\n" + listed)


class BundledInstaller:
    """fabfile.remote.fleet.BundledPython, for real: ``pex3_tool`` builds the pex3 tool (to
    describe the bundle's platform on the controller)."""

    def __init__(self, forced: bool = False, echo: Echo = print, cache_dir: Path | None = None,
                 pex3_tool: Callable[[], Path] | None = None):
        self.forced = forced
        self.echo = echo
        self.cache_dir = cache_dir
        self.pex3_tool = pex3_tool
        self.bundles: dict[str, interpreter.Bundle] = {}  # by machine
        self.pushed = 0
        self.kept = 0

    def announce(self, choices: Mapping[str, str]) -> None:
        for host in sorted(choices):
            self.echo(f"  {host}: runs {choices[host]}")

    def bundle(self, machine: str) -> interpreter.Bundle:
        if machine not in self.bundles:
            tool = self.pex3_tool() if self.pex3_tool else None
            bundle = interpreter.build(machine, self.cache_dir, echo=self.echo, pex3_tool=tool)
            interpreter.check_archive(bundle, machine)  # refused before any push, naming the file
            self.bundles[machine] = bundle
        return self.bundles[machine]

    def install(self, fleet: Fleet, machines: Mapping[str, str]) -> dict[str, str]:
        bundles = {machine: self.bundle(machine) for machine in sorted(set(machines.values()))}
        started = time.monotonic()
        progress = ProgressPrinter("python", echo=self.echo)

        def one(host: str) -> tuple[bool, str]:
            bundle = bundles[machines[host]]
            c = fleet[host]
            sent = push(c, bundle.path, bundle.remote_path, bundle.sha256, progress)
            out = run(c, interpreter_host.install_command(bundle.remote_path, bundle.bundle_id, bundle.offset,
                                                          bundle.length, bundle.loader, bundle.python))
            return sent, place(host, out)

        done = fleet.each(one, list(machines), what="install the bundled python")
        self.pushed = sum(1 for sent, _ in done.values() if sent)
        self.kept = len(done) - self.pushed
        self.echo(f"bundled python on {len(done)} host(s): pushed to {self.pushed}, {self.kept} had it, "
                  f"in {time.monotonic() - started:.1f}s")
        return {host: python for host, (_, python) in done.items()}

    def platform_file(self, machine: str) -> Path | None:
        """The pex complete platform of the bundle for ``machine``, generated on the controller."""
        bundle = self.bundles.get(machine)
        return Path(bundle.platform_file) if bundle and bundle.platform_file else None


def place(host: str, output: str) -> str:
    """Where the install put the host's python, from its output; NoExecutableDirectory when nowhere."""
    try:
        placed = interpreter_host.parse(output)
    except ValueError as exc:
        raise RemoteError(host, "install the bundled python", str(exc)) from None
    if not placed.python:
        raise noexec_error(host, placed.tried)
    return placed.python
