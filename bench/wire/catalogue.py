"""The workload catalogue: every workload's name, the servers it fits and its params.

One table serves both sides: the controller validates spawn files against it (every key,
type and choice), and the agent fills in defaults from it. :func:`check_params` holds the
checks that one param's type cannot express (URL syntax, header names, ``module:function``),
also for both sides. Pure data and pure functions, Python 3.9+.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DISTRIBUTIONS = ("uniform", "zipf", "sequential", "hotspot", "latest")
#: The server kinds a spawn file may name and an agent can drive: the one list of them.
SERVER_KINDS = ("redis-cluster", "redis", "command")
REDIS_KINDS = ("redis-cluster", "redis")
#: In a workload's ``servers``: it reaches its own nodes (urls, in-process calls), any kind fits.
ANY_SERVER = "any"
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
#: Modules a python workload may not ship: they would hide the agent's own code.
RESERVED_MODULES = ("bench", "uvloop", "__main__")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "int" | "float" | "str" | "bool" | "list" | "dict"
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    help: str
    servers: tuple[str, ...]  # server kinds it can drive; ANY_SERVER for url-driven workloads
    params: tuple[Param, ...]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param | None:
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


def _with(base: tuple[Param, ...], *extra: Param) -> tuple[Param, ...]:
    names = {p.name for p in extra}
    return tuple(p for p in base if p.name not in names) + extra


WORKLOADS: tuple[Workload, ...] = (
    Workload("set", "SET key value", REDIS_KINDS, KEYS + (VALUE,)),
    Workload("get", "GET key (prefills the keyspace first unless prefill = false)", REDIS_KINDS,
             KEYS + (VALUE, Param("prefill", "bool", True, "SET every key once before measuring"))),
    Workload("mixed", "GET or SET by read_ratio", REDIS_KINDS,
             KEYS + (VALUE, Param("read_ratio", "float", 0.9, "fraction of ops that are GET",
                                  minimum=0.0, maximum=1.0))),
    Workload("setbit", "SETBIT row column 1 at random (pi: random-set-bits)", REDIS_KINDS, BITMAP),
    Workload("diagonal-setbit", "SETBIT along a diagonal; agents never overlap (pi: diagonal-set-bits)",
             REDIS_KINDS, BITMAP),
    Workload("zipf", "SETBIT or clear with zipf-chosen rows and columns (pi: zipf)", REDIS_KINDS,
             _with(BITMAP, Param("distribution", "str", "zipf", "how rows are chosen", choices=DISTRIBUTIONS),
                   Param("ratio", "float", 0.9, "fraction of ops that set (the rest clear)",
                         minimum=0.0, maximum=1.0))),
    Workload("import", "bulk SETBIT, pipelined, with uniform or exponential gaps between columns (pi: import)",
             REDIS_KINDS,
             _with(BITMAP, Param("gaps", "str", "uniform", "column gaps", choices=("uniform", "exponential")))),
    Workload("bitop", "BITOP over N rows into a scratch key, then BITCOUNT (pi: basic-query)", REDIS_KINDS,
             _with(BITMAP, Param("op", "str", "AND", "bit operation", choices=("AND", "OR", "XOR", "DIFF")),
                   Param("rows_per_query", "int", 2, "rows combined per query", minimum=1))),
    Workload("random-query", "random seeded trees of bitmap operations, then BITCOUNT (pi: random-query)",
             REDIS_KINDS, _with(BITMAP, Param("depth", "int", 2, "tree depth", minimum=1, maximum=8),
                                Param("fanout", "int", 2, "children per node", minimum=1, maximum=8))),
    Workload("http", "HTTP/1.1 requests, round-robin over paths on every server node, or over urls",
             ("command", ANY_SERVER), (
        Param("method", "str", "GET", "HTTP method", choices=HTTP_METHODS),
        Param("paths", "list", ["/"], "paths requested round-robin on every server node"),
        Param("urls", "list", [], "absolute http:// URLs requested round-robin instead of the server nodes"),
        Param("headers", "dict", {}, "request headers (Host, User-Agent and Content-Length are set for you)"),
        Param("body", "str", "", "request body (sent with Content-Length)"),
        Param("timeout", "float", 10.0, "seconds a request may take before it counts as an error (0: none)",
              minimum=0.0, maximum=3600.0),
        SEED,
    )),
    Workload("python", "a user's function, shipped inside the agent pex", (*SERVER_KINDS, ANY_SERVER), (
        Param("target", "str", "", "module:function, called once per connection; it returns the op callable"),
        Param("modules", "list", [], "local .py files or package directories (relative to the spawn file) "
                                     "shipped inside the agent pex"),
        Param("options", "dict", {}, "passed to the function as ctx.options"),
        SEED,
    )),
)

CATALOGUE: Mapping[str, Workload] = {w.name: w for w in WORKLOADS}


# ---------------------------------------------------------------- checks beyond a param's type

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP header name (RFC 9110 token)
_PATH = re.compile(r"/[\x21-\x7e]*\Z")  # origin-form request target: no spaces, no controls
_PYTHON_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_FRAMING_HEADERS = ("content-length", "transfer-encoding")
Problem = tuple[str, str]  # (key under params, e.g. "urls[1]"; message)


def split_url(url: str) -> tuple[str, int, str]:
    """``http://host[:port]/path?query`` as ``(host, port, request target)``; ValueError says why not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme == "https":
        raise ValueError(f"{url!r}: https is not supported (the agent speaks plain HTTP/1.1); use http://")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http:// URL")
    if port == 0:
        raise ValueError(f"{url!r}: port 0 is not a port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials in URLs are not supported; set an Authorization header")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _PATH.match(target):
        raise ValueError(f"{url!r}: the path has spaces or control characters (percent-encode them)")
    return parts.hostname, port if port is not None else 80, target


def module_name(entry: str) -> str:
    """The import name a ``modules`` entry ships as: ``./lib/myload.py`` -> ``myload``."""
    base = entry.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return base[:-3] if base.endswith(".py") else base


def check_params(workload: str, params: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with ``params`` (already of the right types) beyond each param's type."""
    if workload == "http":
        return _http_problems(params)
    if workload == "python":
        return _python_problems(params)
    return []


def _http_problems(params: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for i, path in enumerate(params.get("paths", [])):
        if not isinstance(path, str) or not _PATH.match(path):
            problems.append((f"paths[{i}]", f"{path!r} is not a path: it starts with '/' and has no spaces "
                                            "or control characters"))
    if not params.get("paths") and not params.get("urls"):
        problems.append(("paths", "must list at least one path (or give urls)"))
    for i, url in enumerate(params.get("urls", [])):
        if not isinstance(url, str):
            problems.append((f"urls[{i}]", f"expected a string, got {url!r}"))
            continue
        try:
            split_url(url)
        except ValueError as exc:
            problems.append((f"urls[{i}]", str(exc)))
    for name, value in params.get("headers", {}).items():
        if not _TOKEN.match(name):
            problems.append((f"headers.{name}", "not a valid header name"))
        elif name.lower() in _FRAMING_HEADERS:
            problems.append((f"headers.{name}", "set by the agent from the body; remove it"))
        elif not isinstance(value, str):
            problems.append((f"headers.{name}", f"expected a string, got {value!r}"))
        elif any(c in value for c in "\r\n\0"):
            problems.append((f"headers.{name}", "has a line break or NUL character"))
    return problems


def _python_problems(params: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    target = params.get("target", "")
    if not isinstance(target, str) or not _PYTHON_TARGET.match(target):
        problems.append(("target", f"{target!r} is not module:function (e.g. \"myload:run\")"))
    for i, entry in enumerate(params.get("modules", [])):
        if not isinstance(entry, str) or not entry.strip():
            problems.append((f"modules[{i}]", f"expected a path, got {entry!r}"))
            continue
        name = module_name(entry)
        if not name.isidentifier():
            problems.append((f"modules[{i}]", f"{entry!r} would ship as {name!r}, which is not an importable name"))
        elif name in RESERVED_MODULES:
            problems.append((f"modules[{i}]", f"{entry!r} would ship as {name!r} and hide the agent's own "
                                              f"{name!r}; rename it"))
    return problems
