"""Faults the fleet tests inflict: the controller's own link gone, a frozen host.

The controller's link: its address on the bridge taken away (and given back), so it reaches no
host and no host reaches it, while the hosts still reach each other across the bridge (a
laptop's Wi-Fi gone). A frozen host: every process in its network namespace SIGSTOPped (a
paused VM: its kernel still answers TCP, nothing of it runs), then SIGCONTinued.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from .system import TestbedError, run_tool

if TYPE_CHECKING:
    from .bringup import Testbed


def _controller_address(tb: Testbed) -> list[str]:
    return [f"{tb.bridge_address}/{tb.network.prefixlen}", "dev", tb.bridge]


def cut_controller(tb: Testbed) -> None:
    if tb.bastion:
        raise TestbedError("cut_controller: a bastion testbed's controller link is its outer link; not supported")
    run_tool(["ip", "addr", "del", *_controller_address(tb)], check=False)


def restore_controller(tb: Testbed) -> None:
    run_tool(["ip", "addr", "replace", *_controller_address(tb)])


def signal_host(tb: Testbed, name: str, signum: int) -> list[int]:
    """Send ``signum`` to every process of host ``name``; the pids signalled."""
    netns = {h.name: h.netns for h in tb.hosts()}
    if name not in netns:
        raise TestbedError(f"no testbed host {name!r} (hosts: {', '.join(netns) or 'none'})")
    pids = [int(p) for p in run_tool(["ip", "netns", "pids", netns[name]]).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return pids


def freeze(tb: Testbed, name: str) -> list[int]:
    return signal_host(tb, name, signal.SIGSTOP)


def thaw(tb: Testbed, name: str) -> list[int]:
    return signal_host(tb, name, signal.SIGCONT)
