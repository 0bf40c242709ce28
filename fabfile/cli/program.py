"""``fleetbench``: an Invoke Program over the tasks (as Fabric's ``fab`` is over its own).

    fleetbench check
    fleetbench --spawn my.toml --servers a,b,c --agents d deploy bench collect
    fleetbench --runs-dir /data/runs report

It works in any directory: the spawn file, ./runs, ./.fleetbench (the build cache and the
deployment record) and ./.testbed are the working directory's. The options a chain shares come
before the task names (core flags) or from the layered config: ``fleetbench.yaml`` here (or
~/.fleetbench.yaml, /etc/fleetbench.yaml), ``INVOKE_FLEETBENCH_*`` in the environment, ``-f FILE``.
``inv`` in the checkout reads the same config from its ``invoke.yaml``, and runs the same executor
(set there as ``tasks.executor_class``), which refuses a chain whose tasks disagree before any runs.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from invoke import Argument, Config, Executor, Program
from invoke.exceptions import Exit, ParseError

from fabfile.cli import options

#: Tasks of the source checkout's ``inv`` (devtools/ is not installed with fleetbench).
DEVELOPER_TASKS = ("testbed", "testbed.up", "testbed.down", "testbed.status", "demo", "perf")
CORE_FLAGS = {
    "spawn": "the spawn file of every task (default: fleetbench.spawn in the config, else spawn.toml)",
    "servers": "server hosts of every task, comma-separated: replace the spawn file's [hosts] (with --agents)",
    "agents": "agent hosts of every task, comma-separated: replace the spawn file's [hosts] (with --servers)",
    "ssh-config": "an ssh_config file to read first (./.testbed/ssh_config is read when a testbed is up)",
    "accept-new-host-keys": "accept and remember unknown host keys (a changed key is always refused)",
    "runs-dir": "where runs are kept (default ./runs)",
}


class ChainExecutor(Executor):
    """Invoke's executor, which first resolves every task's shared options exactly as the task
    will (its flags over the config, with the collection's and the environment's levels loaded)
    and refuses the chain, before anything runs, when two tasks would differ (or one was given
    an unknown --format)."""

    def execute(self, *tasks: Any) -> dict:
        chain = []
        for call in self.normalize(tasks):
            if isinstance(call.kwargs.get("format"), str):
                options.check_format(call.called_as or call.task.name, call.kwargs["format"])
            if options.takes_shared(call.task):
                self.config.load_collection(self.collection.configuration(call.called_as))
                self.config.load_shell_env()
                name = call.called_as or call.task.name
                resolved = options.resolve(self.config, call.kwargs, call.task.name in options.RECORDED_RUN_TASKS)
                chain.append((name, resolved))
        options.refuse_mismatch(chain)
        return super().execute(*tasks)


class FleetbenchConfig(Config):
    """Config files named fleetbench.yaml (json, py); the environment's names as under ``inv``
    (INVOKE_FLEETBENCH_SPAWN), so one setting serves both commands."""

    prefix = "fleetbench"
    env_prefix = "INVOKE"  # type: ignore[assignment]  # Invoke declares it None (then: the prefix)


class Fleetbench(Program):
    def core_args(self) -> list[Argument]:
        return [*super().core_args(),
                *(Argument(names=(name,), kind=bool if name == "accept-new-host-keys" else str, help=text)
                  for name, text in CORE_FLAGS.items())]

    def parse_collection(self) -> None:
        super().parse_collection()
        # A bundled namespace has no directory of its own: the project is the working directory.
        self.config.set_project_location(os.getcwd())
        self.config.load_project()

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError:
            asked = [word for word in self.core.unparsed if word in DEVELOPER_TASKS]
            if asked:
                raise Exit(f"{asked[0]} is a developer tool of fleetbench's source checkout (devtools/ is not "
                           f"installed with the fleetbench command): in a clone, `make .venv/.installed`, then "
                           f"`.venv/bin/inv {asked[0]}`", code=1) from None
            raise

    def update_config(self, merge: bool = True) -> None:
        """The core flags given become the ``fleetbench`` config's overrides: above every file and
        the environment, below a task's own flag."""
        super().update_config(merge=False)
        given = {name.replace("-", "_"): self.args[name].value for name in CORE_FLAGS}
        given = {key: value for key, value in given.items() if value not in (None, False)}
        if given:
            self.config._overrides.setdefault("fleetbench", {}).update(given)
        if merge:
            self.config.merge()


def _version() -> str:
    try:
        return version("fleetbench")
    except PackageNotFoundError:
        return "unknown"


def make_program() -> Fleetbench:
    from fabfile.cli.tasks import namespace

    return Fleetbench(name="fleetbench", version=_version(), namespace=namespace(), executor_class=ChainExecutor,
                      config_class=FleetbenchConfig, binary="fleetbench", binary_names=["fleetbench"])


def main() -> None:
    make_program().run()
