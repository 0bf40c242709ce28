"""The options a chain of tasks shares: which spawn file, which hosts, how they are reached.

Invoke gives every task its own flags, so ``inv bench collect --spawn my.toml`` used to bench
``spawn.toml`` and collect ``my.toml``. Here the shared options have one layered source, Invoke's
config under ``fleetbench`` (defaults < ``invoke.yaml``/``fleetbench.yaml`` < ``INVOKE_FLEETBENCH_*``
< ``-f`` file < ``fleetbench --spawn ...`` before the task names), a task's own flag overrides it
for that task only, and a chain whose tasks would end up on different files or hosts is refused
before any of them runs (:func:`refuse_mismatch`, called by the command's executor).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from bench.report.tables import FORMATS
from bench.spawn import cli_hosts

SPAWN = "spawn.toml"
RUNS = "runs"
#: The config tree every task reads its defaults from (``ns.configure({"fleetbench": ...})``).
DEFAULTS: dict[str, Any] = {"spawn": SPAWN, "servers": None, "agents": None, "ssh_config": None,
                            "accept_new_host_keys": False, "runs_dir": RUNS}
#: The task parameters that make a task take part in a chain's check: every task that reads the
#: spawn file takes these, and --servers/--agents.
SHARED = ("spawn", "ssh_config", "accept_new_host_keys")
HOST_LISTS = ("servers", "agents")
#: Tasks acting on a recorded run: they use the run's own hosts, so their --servers/--agents only
#: take part in a chain's check when given (``deploy --servers a bench --servers a collect`` agrees).
RECORDED_RUN_TASKS = frozenset({"collect", "status", "attach"})
#: The options compared across a chain, by config key (fleetbench.<key>), and their flags.
FLAGS = {"spawn": "--spawn", "servers": "--servers", "agents": "--agents", "ssh_config": "--ssh-config"}


@dataclass(frozen=True)
class ChainOptions:
    """One task's resolved shared options."""

    spawn: str
    servers: tuple[str, ...] | None
    agents: tuple[str, ...] | None
    ssh_config: str | None
    accept_new_host_keys: bool
    taken: frozenset[str] = frozenset(FLAGS)  # the compared options this task takes

    def host_lists(self) -> tuple[list[str] | None, list[str] | None]:
        """--servers and --agents as the spawn loader takes them (None: the file's own)."""
        return (list(self.servers) if self.servers is not None else None,
                list(self.agents) if self.agents is not None else None)

    def compared(self) -> dict[str, object]:
        """What must agree across a chain: the spawn file and ssh_config as the paths they resolve
        to, the host lists as given. (A host key accepted by one task is then known to all: that
        flag may differ.)"""
        values = {"spawn": str(Path(self.spawn).expanduser().resolve()), "servers": self.servers,
                  "agents": self.agents,
                  "ssh_config": str(Path(self.ssh_config).expanduser().resolve()) if self.ssh_config else None}
        return {key: value for key, value in values.items() if key in self.taken}


def settings(config: Any) -> Mapping[str, Any]:
    """The ``fleetbench`` config tree, with the defaults under it (a task called with a bare
    ``Context()`` has none)."""
    try:
        tree = config.get("fleetbench") or {}
    except AttributeError:
        tree = {}
    return {**DEFAULTS, **{k: v for k, v in dict(tree).items() if v is not None}}


def _hosts(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(cli_hosts.split(value) or ())
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise Exit(f"{where}: a comma-separated string or a list of host names, not {value!r}", code=1)


def resolve(config: Any, given: Mapping[str, Any], recorded_run: bool = False) -> ChainOptions:
    """A task's options: its own flags (``given``, None when not given) over the config's. Compared
    in a chain: the options the task takes (the keys of ``given``), but for a task acting on a
    recorded run (``recorded_run``), its host lists only when its own flags give them."""
    tree = settings(config)

    def pick(key: str) -> Any:
        return given[key] if given.get(key) is not None else tree[key]

    def hosts(key: str) -> tuple[str, ...] | None:
        where = f"--{key}" if given.get(key) is not None else f"fleetbench.{key}"
        return _hosts(pick(key), where)

    accept = bool(given.get("accept_new_host_keys")) or _flag(tree["accept_new_host_keys"])
    return ChainOptions(spawn=str(pick("spawn")), servers=hosts("servers"), agents=hosts("agents"),
                        ssh_config=str(pick("ssh_config")) if pick("ssh_config") else None,
                        accept_new_host_keys=accept, taken=frozenset(key for key in FLAGS if key in given and not (
                            recorded_run and key in HOST_LISTS and given[key] is None)))


def _flag(value: Any) -> bool:
    """A yes/no from a config file or the environment (``INVOKE_FLEETBENCH_ACCEPT_NEW_HOST_KEYS=1``)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no")
    return bool(value)


def runs_dir(config: Any) -> str:
    """Where runs are kept: ``fleetbench.runs_dir`` (``fleetbench --runs-dir``), default ./runs."""
    return str(settings(config)["runs_dir"])


def takes_shared(task: Callable[..., Any]) -> bool:
    """Whether a task takes the shared options (it reads the spawn file)."""
    body = getattr(task, "body", task)
    return set(SHARED) <= set(inspect.signature(body).parameters)


def _shown(key: str, value: object) -> str:
    if value is None:
        return "the spawn file's [hosts]" if key in HOST_LISTS else "none"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def mismatch(chain: Sequence[tuple[str, ChainOptions]]) -> str | None:
    """Why the tasks of ``chain`` (name, options) cannot run together, or None when they agree:
    each option is compared with the first task's that takes it."""
    first: dict[str, tuple[str, ChainOptions, object]] = {}
    for name, opts in chain:
        for key, value in opts.compared().items():
            if key not in first:
                first[key] = (name, opts, value)
                continue
            first_name, first_opts, reference = first[key]
            if value != reference:
                flag = FLAGS[key]
                return (f"{first_name} would take {flag} {_shown(key, getattr(first_opts, key))} and {name} "
                        f"{_shown(key, getattr(opts, key))}: a chain runs on one spawn file and one fleet. "
                        f"Give {flag} once for every task: before the task names "
                        f"(fleetbench {flag} ... {first_name} {name}), as fleetbench.{key} in fleetbench.yaml "
                        f"or invoke.yaml, or in INVOKE_FLEETBENCH_{key.upper()}")
    return None


def refuse_mismatch(chain: Sequence[tuple[str, ChainOptions]]) -> None:
    """Exit 1 before anything runs when the chain's tasks disagree (:func:`mismatch`)."""
    why = mismatch(chain)
    if why is not None:
        raise Exit(f"{' '.join(name for name, _ in chain)} refused: {why}", code=1)


def check_format(task_name: str, fmt: str) -> None:
    """Exit 1 on an unknown --format, before the task does anything (``collect`` would otherwise
    fetch and merge the run, then fail to print it)."""
    if fmt not in FORMATS:
        raise Exit(f"{task_name} failed: --format {fmt!r}: one of {', '.join(FORMATS)}", code=1)
