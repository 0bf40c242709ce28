"""From decoded data or a file on disk to a checked :class:`bench.spawn.schema.Spawn`.

:func:`parse` puts the pure sections together and gives them the inventory I/O they need;
:func:`load` reads and decodes the file first and checks the python workloads' module files
after; :func:`agent_modules` is that check, also used by the build.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.spawn import cli_hosts, server_files
from bench.spawn.benchmarks import parse_benchmarks
from bench.spawn.checks import BAD, Problems, SpecError, Table, describe
from bench.spawn.hosts import parse_hosts
from bench.spawn.inventory import InventoryRunner, fetcher, run_inventory_command
from bench.spawn.schema import TOP_KEYS, Spawn
from bench.spawn.server import check_server_hosts, parse_server
from bench.wire.catalogue import module_name

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_NAME_HELP = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100"


def parse(
    data: Mapping[str, Any],
    *,
    name: str = "spawn",
    base_dir: Path | None = None,
    run_command: InventoryRunner | None = None,
    source_text: str = "",
    source_name: str = "<data>",
) -> Spawn:
    """Validate decoded spawn data and return a complete :class:`Spawn`, or raise SpecError.

    ``name`` is the label used when the data has no ``name``. ``base_dir`` resolves a relative
    ``hosts.inventory`` (default: the working directory). ``run_command(command, cwd)`` runs a
    ``hosts.inventory_command`` and returns its stdout; without it such a command is an error
    (:func:`load` passes :func:`bench.spawn.inventory.run_inventory_command`).
    """
    problems = Problems()
    if not isinstance(data, Mapping):
        problems.add("(top level)", f"expected a table, got {describe(data)}")
        raise SpecError(problems.items, source=source_name)
    top = Table(data, "", TOP_KEYS, problems)
    base = base_dir if base_dir is not None else Path.cwd()

    spawn_name = _spawn_name(top, name)
    hosts = parse_hosts(top, problems, fetcher(base, run_command))
    server = parse_server(top)
    benchmarks = parse_benchmarks(top, problems, server.kind if server else None)

    if hosts is not None and server is not None:
        check_server_hosts(hosts, server, problems)
    if problems.items:
        raise SpecError(problems.items, source=source_name)
    assert spawn_name is not None and hosts is not None and server is not None
    return Spawn(spawn_name, hosts, server, tuple(benchmarks), source_text, source_name)


def load(path: str | Path, *, servers: Sequence[str] | None = None, agents: Sequence[str] | None = None) -> Spawn:
    """Read a spawn file (JSON if it ends in ``.json``, else TOML) and :func:`parse` it.

    ``servers``/``agents`` (``--servers``/``--agents``) replace its hosts (bench.spawn.cli_hosts)."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError([f"{shown}: cannot read: {e.strerror or e}"], source=shown) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{shown}: not UTF-8 text: {e.reason} at byte {e.start}"], source=shown) from None
    data, unsolved = cli_hosts.replace(decode(text, shown, json_format=path.suffix.lower() == ".json"),
                                       servers, agents)
    if unsolved:
        raise SpecError(unsolved, source=shown)
    try:
        spawn = parse(data, name=path.stem, base_dir=path.parent, run_command=run_inventory_command,
                      source_text=text, source_name=shown)
    except SpecError as e:
        raise SpecError(cli_hosts.rename(e.problems, servers, agents), source=shown) from None
    agent_modules(spawn, path.parent)  # a missing module file is a spawn error, before any SSH
    server = spawn.server
    missing = server_files.check_paths(server.own_files, server.kind, server.script, bool(server.requirements),
                                       path.parent)
    if missing:  # the server's own files, before any SSH (and before any build)
        raise SpecError([f"{where}: {message}" for where, message in missing], source=shown)
    return spawn


def decode(text: str, shown: str, *, json_format: bool) -> Any:
    """The data in a spawn file's text; a SpecError at ``shown:line:column`` if it is not TOML/JSON."""
    if json_format:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError([f"{shown}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}"], source=shown) from None
        except (ValueError, RecursionError) as e:
            raise SpecError([f"{shown}: invalid JSON: {e}"], source=shown) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise SpecError([f"{shown}: invalid TOML: nested too deeply"], source=shown) from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)\Z", message)
        if where:
            message = message[: where.start()]
            raise SpecError([f"{shown}:{where.group(1)}:{where.group(2)}: invalid TOML: {message}"],
                            source=shown) from None
        raise SpecError([f"{shown}: invalid TOML: {message}"], source=shown) from None


def agent_modules(spawn: Spawn, base_dir: Path) -> dict[str, Path]:
    """The local modules the ``python`` benchmarks ship inside the agent pex, by import name.

    Each ``params.modules`` entry is a ``.py`` file or a package directory, relative to
    ``base_dir`` (the spawn file's directory) unless absolute. Only :func:`load` and the build
    look at the files: a run's saved spawn must still parse where they no longer exist.
    """
    problems = Problems()
    found: dict[str, Path] = {}
    for i, benchmark in enumerate(spawn.benchmarks):
        if benchmark.workload != "python":
            continue
        for j, entry in enumerate(benchmark.params.get("modules", [])):
            where = f"benchmark[{i}].params.modules[{j}]"
            path = (base_dir / entry).resolve()
            name = module_name(entry)
            if path.is_file() and path.suffix == ".py":
                pass
            elif path.is_dir() and (path / "__init__.py").is_file():
                pass
            elif path.exists():
                problems.add(where, f"{entry!r} is neither a .py file nor a package directory (with __init__.py)")
                continue
            else:
                problems.add(where, f"{entry!r} does not exist (looked for {str(path)!r})")
                continue
            if name in found and found[name] != path:
                problems.add(where, f"{entry!r} ships as {name!r}, like {str(found[name])!r}")
                continue
            found[name] = path
    if problems.items:
        raise SpecError(problems.items, source=spawn.source_name)
    return found


def _spawn_name(top: Table, default: str) -> str | None:
    if top.has("name"):
        value = top.text("name", pattern=_NAME, pattern_help=_NAME_HELP)
        return None if value is BAD else value
    if not _NAME.match(default):
        top.problem("name", f"missing, and the default {default!r} (the file's stem) is not a valid name "
                            f"({_NAME_HELP}); set name = \"...\"")
        return None
    return default
