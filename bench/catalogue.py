"""The workload catalogue: every workload's name, the servers it fits and its params.

One table serves both sides: the controller validates spawn files against it (every key,
type and choice), and the agent fills in defaults from it. Pure data, Python 3.9+.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

DISTRIBUTIONS = ("uniform", "zipf", "sequential", "hotspot", "latest")
REDIS_KINDS = ("redis-cluster", "redis")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "int" | "float" | "str" | "bool" | "list" | "dict"
    default: Any
    help: str
    choices: Optional[Tuple[Any, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None


@dataclass(frozen=True)
class Workload:
    name: str
    help: str
    servers: Tuple[str, ...]  # server kinds it can drive; "any" for url-driven workloads
    params: Tuple[Param, ...]

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Optional[Param]:
        return next((p for p in self.params if p.name == name), None)


SEED = Param("seed", "int", 1, "base seed; agent N uses a seed derived from (seed, N)")
KEYS = (
    Param("keyspace", "int", 100_000, "number of distinct keys", minimum=1),
    Param("distribution", "str", "uniform", "how keys are chosen", choices=DISTRIBUTIONS),
    Param("exponent", "float", 1.01, "zipf exponent (s > 0; larger is more skewed)", minimum=0.0),
    Param("hot_fraction", "float", 0.2, "hotspot: fraction of keys that are hot", minimum=0.0, maximum=1.0),
    Param("hot_ops", "float", 0.8, "hotspot: fraction of ops that go to hot keys", minimum=0.0, maximum=1.0),
    Param("shared_keys", "bool", False, "all agents draw from the same keys (default: agent N offsets its range)"),
    Param("key_prefix", "str", "fb:", "prefix of every key"),
    SEED,
)
VALUE = Param("value_size", "int", 64, "bytes per value", minimum=1, maximum=512 * 1024 * 1024)
BITMAP = (
    Param("rows", "int", 1000, "number of bitmap keys (pi: rows)", minimum=1),
    Param("columns", "int", 1_000_000, "bit offsets per row (pi: columns)", minimum=1, maximum=2**32),
    Param("distribution", "str", "uniform", "how rows are chosen", choices=DISTRIBUTIONS),
    Param("exponent", "float", 1.01, "zipf exponent", minimum=0.0),
    Param("key_prefix", "str", "fb:bits:", "prefix of every bitmap key"),
    SEED,
)


def _with(base: Tuple[Param, ...], *extra: Param) -> Tuple[Param, ...]:
    names = {p.name for p in extra}
    return tuple(p for p in base if p.name not in names) + extra


WORKLOADS: Tuple[Workload, ...] = (
    Workload("set", "SET key value", REDIS_KINDS, KEYS + (VALUE,)),
    Workload("get", "GET key (prefills the keyspace first unless prefill = false)", REDIS_KINDS,
             KEYS + (VALUE, Param("prefill", "bool", True, "SET every key once before measuring"))),
    Workload("mixed", "GET or SET by read_ratio", REDIS_KINDS,
             KEYS + (VALUE, Param("read_ratio", "float", 0.9, "fraction of ops that are GET", minimum=0.0, maximum=1.0))),
    Workload("setbit", "SETBIT row column 1 at random (pi: random-set-bits)", REDIS_KINDS, BITMAP),
    Workload("diagonal-setbit", "SETBIT along a diagonal; agents never overlap (pi: diagonal-set-bits)",
             REDIS_KINDS, BITMAP),
    Workload("zipf", "SETBIT or clear with zipf-chosen rows and columns (pi: zipf)", REDIS_KINDS,
             _with(BITMAP, Param("distribution", "str", "zipf", "how rows are chosen", choices=DISTRIBUTIONS),
                   Param("ratio", "float", 0.9, "fraction of ops that set (the rest clear)", minimum=0.0, maximum=1.0))),
    Workload("import", "bulk SETBIT, pipelined, with uniform or exponential gaps between columns (pi: import)",
             REDIS_KINDS, _with(BITMAP, Param("gaps", "str", "uniform", "column gaps", choices=("uniform", "exponential")))),
    Workload("bitop", "BITOP over N rows into a scratch key, then BITCOUNT (pi: basic-query)", REDIS_KINDS,
             _with(BITMAP, Param("op", "str", "AND", "bit operation", choices=("AND", "OR", "XOR", "DIFF")),
                   Param("rows_per_query", "int", 2, "rows combined per query", minimum=1))),
    Workload("random-query", "random seeded trees of bitmap operations, then BITCOUNT (pi: random-query)",
             REDIS_KINDS, _with(BITMAP, Param("depth", "int", 2, "tree depth", minimum=1, maximum=8),
                                Param("fanout", "int", 2, "children per node", minimum=1, maximum=8))),
    Workload("http", "HTTP requests against the server nodes or a list of URLs", ("command", "any"), (
        Param("method", "str", "GET", "HTTP method", choices=("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH")),
        Param("paths", "list", ["/"], "paths requested round-robin on every server node"),
        Param("urls", "list", [], "absolute URLs to request instead of the server nodes"),
        Param("headers", "dict", {}, "request headers"),
        Param("body", "str", "", "request body"),
        Param("timeout", "float", 10.0, "seconds per request", minimum=0.0),
        SEED,
    )),
    Workload("python", "a user's function, shipped inside the agent pex", ("redis-cluster", "redis", "command", "any"), (
        Param("target", "str", "", "module:function"),
        Param("options", "dict", {}, "passed to the function"),
        SEED,
    )),
)

CATALOGUE: Mapping[str, Workload] = {w.name: w for w in WORKLOADS}
