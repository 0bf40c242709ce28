"""The server's own files and settings in a spawn file: ``build``, ``files`` and ``config``.

A server need not come from a Python wheel::

    [server]
    kind = "command"
    port = 8090
    build = { command = "go build -o {out}/hello .", dir = "hello-go" }   # run here, per host platform
    files = ["conf/hello.toml"]        # local files or directories pushed beside the build's output
    script = "hello"                   # without requirements: an executable among the pushed files
    args = ["-addr", "{host}:{port}", "-config", "{bin}/hello.toml"]

The redis kinds take the same keys to run a ``redis-server`` of the user's (the pushed
executable of that name is the one started) and ``config``, settings that become config
lines of every node::

    config = { appendonly = "yes", io-threads = 4, save = "" }

What is checked where:

* :func:`parse` (pure, part of ``spec.parse``): the types, ``build``'s keys and placeholders,
  two ``files`` that would land on the same name, ``config`` names and values, settings
  fleetbench owns, ``{bin}`` used without anything pushed.
* :func:`check_paths` (``spec.load``, before any SSH): ``build.dir`` and every ``files`` entry
  exist; without a build, the executable to start is among the files. A run's saved spawn must
  still parse where the files no longer exist, so this is not part of :func:`parse`.

Problems are returned as ``(key path, message)`` pairs for the caller to collect; nothing
here raises for bad input.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bench.spawn.checks import describe, suggest

BUILD_KEYS = ("command", "dir")
BUILD_PLACEHOLDERS = ("out",)
#: What a redis kind starts from the pushed files.
REDIS_EXECUTABLE = "redis-server"
#: Settings fleetbench sets itself on every node, or that would lock its agents and probes out:
#: where the node listens, where it keeps its files, how it runs, its role, and authentication.
OWNED_REDIS_SETTINGS = (
    "port", "tls-port", "bind", "unixsocket", "dir", "logfile", "pidfile", "daemonize", "supervised",
    "cluster-enabled", "cluster-config-file", "cluster-port", "replicaof", "slaveof",
    "protected-mode", "requirepass", "masterauth", "masteruser", "user", "aclfile", "include",
    "rename-command",
)
_SETTING = re.compile(r"[a-z][a-z0-9-]*\Z")

Problem = tuple[str, str]


@dataclass(frozen=True)
class Build:
    """A local shell command that writes the server's files into ``{out}``."""

    command: str
    dir: str = "."  # as written: relative to the spawn file unless absolute


@dataclass(frozen=True)
class ServerFiles:
    build: Build | None
    files: tuple[str, ...]  # as written: local paths, relative to the spawn file unless absolute
    config: dict[str, str]  # redis setting -> its value as a config line writes it

    @property
    def pushed(self) -> bool:
        return self.build is not None or bool(self.files)


def parse(server: Mapping[str, Any], path: str, kind: str,
          requirements: Sequence[str]) -> tuple[ServerFiles, list[Problem]]:
    """``build``, ``files`` and ``config`` of the ``server`` table at key path ``path``.

    ``requirements``: the server pex's (with some, a command's ``script`` comes from the pex;
    without, and with files pushed, it is one of them). The redis kinds need none with files
    pushed: their redis-server is among the files, and our agent probes the nodes.
    """
    problems: list[Problem] = []

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    build = _build(server.get("build"), at("build"), problems) if "build" in server else None
    files = _files(server.get("files"), at("files"), problems) if "files" in server else ()
    config: dict[str, str] = {}
    if "config" in server:
        if kind == "command":
            problems.append((at("config"), "only for the redis kinds; give a command's settings in its args or env"))
        else:
            config = _config(server["config"], at("config"), problems)
    pushed = build is not None or bool(files)
    if kind == "command" and pushed and not requirements:
        script = server.get("script")
        if isinstance(script, str) and script.strip():
            problems.extend(_relative_problems(script, at("script"), "an executable among the pushed files"))
    args = server.get("args")
    if kind == "command" and not pushed and isinstance(args, (list, tuple)):
        for i, arg in enumerate(args):
            if isinstance(arg, str) and "bin" in _fields_or_none(arg):
                problems.append((f"{at('args')}[{i}]", "{bin} is the directory of the pushed files; "
                                                       "give build or files to push some"))
    return ServerFiles(build, files, config), problems


def check_paths(files: ServerFiles, kind: str, script: str | None, requirements_given: bool, base_dir: Path,
                path: str = "server") -> list[Problem]:
    """The local paths exist, and without a build the executable to start is among the files."""
    problems: list[Problem] = []
    if files.build is not None:
        where = local_path(files.build.dir, base_dir)
        if not where.is_dir():
            problems.append((f"{path}.build.dir",
                             f"{files.build.dir!r} is not a directory (looked for {str(where)!r})"))
    entries: list[tuple[str, Path]] = []
    for i, entry in enumerate(files.files):
        where = local_path(entry, base_dir)
        if where.is_file() or where.is_dir():
            entries.append((pushed_name(entry), where))
        else:
            problems.append((f"{path}.files[{i}]", f"{entry!r} does not exist (looked for {str(where)!r})"))
    if files.build is not None or problems or not files.files:
        return problems  # a build's output is only known once it ran
    wanted = REDIS_EXECUTABLE if kind != "command" else (None if requirements_given else script)
    if wanted and not any(_holds_executable(name, where, wanted) for name, where in entries):
        key = "files" if kind != "command" else "script"
        problems.append((f"{path}.{key}", f"no executable {wanted!r} among the files "
                                          f"({', '.join(files.files)}); it is what the server nodes start"))
    return problems


def to_dict(files: ServerFiles) -> dict[str, Any]:
    """The keys as a spawn file writes them; none when nothing is set (older digests stay)."""
    out: dict[str, Any] = {}
    if files.build is not None:
        out["build"] = {"command": files.build.command, "dir": files.build.dir}
    if files.files:
        out["files"] = list(files.files)
    if files.config:
        out["config"] = dict(files.config)
    return out


def local_path(entry: str, base_dir: Path) -> Path:
    """Absolute, but with symlinks kept: a file is pushed under the name it is given by
    (Debian's /usr/bin/redis-server is a link to redis-check-rdb, which acts by its name)."""
    return Path(os.path.abspath(base_dir / Path(entry).expanduser()))


def pushed_name(entry: str) -> str:
    """Where a ``files`` entry lands in ``{bin}``: under its own name."""
    return Path(entry.rstrip("/")).name or entry


# -- the keys ---------------------------------------------------------------------------------


def _build(value: Any, where: str, problems: list[Problem]) -> Build | None:
    if isinstance(value, str):
        value = {"command": value}
    if not isinstance(value, Mapping):
        problems.append((where, f'expected a table {{ command = "...", dir = "..." }}, got {describe(value)}'))
        return None
    ok = True
    misspelt: set[str] = set()
    for key in value:
        if key not in BUILD_KEYS:
            misspelt.update(difflib.get_close_matches(str(key), BUILD_KEYS, n=1, cutoff=0.6))
            hint = suggest(str(key), BUILD_KEYS) or f" (expected one of: {', '.join(BUILD_KEYS)})"
            problems.append((f"{where}.{key}", "unknown key" + hint))
            ok = False
    command = value.get("command")
    if command is None:
        if "command" not in misspelt:  # already reported as the key it probably is
            problems.append((f"{where}.command",
                             "missing; the shell command that writes the server's files into {out}"))
        ok = False
    elif not isinstance(command, str) or not command.strip():
        problems.append((f"{where}.command", f"expected a non-empty string, got {describe(command)}"))
        ok = False
    else:
        try:
            names = _fields(command)
        except ValueError as e:
            problems.append((f"{where}.command", f"{command!r}: {e} (write {{{{ and }}}} for literal braces)"))
            ok = False
        else:
            for name in names - set(BUILD_PLACEHOLDERS):
                problems.append((f"{where}.command", f"unknown placeholder {{{name}}} (placeholders: "
                                                     f"{', '.join(BUILD_PLACEHOLDERS)})"))
                ok = False
    directory = value.get("dir", ".")
    if not isinstance(directory, str) or not directory.strip():
        problems.append((f"{where}.dir", f"expected a non-empty string, got {describe(directory)}"))
        ok = False
    return Build(command, directory) if ok and isinstance(command, str) else None


def _files(value: Any, where: str, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        problems.append((where, f"expected an array of local paths, got {describe(value)}"))
        return ()
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.append((f"{where}[{i}]", f"expected a non-empty string, got {describe(item)}"))
            continue
        name = pushed_name(item)
        if name in (".", ".."):
            problems.append((f"{where}[{i}]", f"{item!r} has no name of its own to be pushed under"))
            continue
        if name in seen:
            problems.append((f"{where}[{i}]", f"{item!r} would be pushed as {name!r}, like files[{seen[name]}]"))
            continue
        seen[name] = i
        out.append(item)
    return tuple(out)


def _config(value: Any, where: str, problems: list[Problem]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        problems.append((where, f"expected a table of redis settings, got {describe(value)}"))
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        name = key.lower() if isinstance(key, str) else key
        shown = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key) else repr(key)
        at = f"{where}.{shown}"
        if not isinstance(name, str) or not _SETTING.match(name):
            problems.append((at, "not a redis setting name (letters, digits and '-')"))
        elif name in OWNED_REDIS_SETTINGS:
            problems.append((at, f"{name!r} is set by fleetbench itself (it owns {', '.join(OWNED_REDIS_SETTINGS)})"))
        elif name in out:
            problems.append((at, f"{name!r} is given twice (settings are case-insensitive)"))
        else:
            text = _setting_value(item)
            if text is None:
                problems.append((at, f"expected a string, number or true/false, got {describe(item)}"))
            else:
                out[name] = text
    return out


def _setting_value(value: Any) -> str | None:
    """A config line's value: true/false as yes/no, numbers as written, strings as they are."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else None
    if isinstance(value, str) and "\n" not in value and "\r" not in value and "\x00" not in value:
        return value
    return None


def _relative_problems(text: str, where: str, what: str) -> list[Problem]:
    pure = PurePosixPath(text)
    if pure.is_absolute() or ".." in pure.parts or "\\" in text:
        return [(where, f"{text!r} must be a path inside the pushed files ({what}), without '..'")]
    return []


def _holds_executable(name: str, entry: Path, relative: str) -> bool:
    """Whether ``relative`` (a path in the pushed files) is an executable file of ``entry``,
    pushed as ``name``."""
    if entry.is_file():
        target = entry if relative == name else None
    else:
        first, _, rest = relative.partition("/")
        target = entry / rest if first == name and rest else None
    return target is not None and target.is_file() and os.access(target, os.X_OK)


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _fields_or_none(text: str) -> set[str]:
    try:
        return _fields(text)
    except ValueError:  # reported by the args check itself
        return set()


