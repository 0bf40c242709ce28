"""The ``[server]`` table: the kind of server, its port and requirements, and for ``command``
the script, its args (with placeholders), readiness and environment. Pure: no I/O."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from bench.spawn import secrets, server_files
from bench.spawn.checks import BAD, MISSING, Problems, Table, describe, suggest
from bench.spawn.schema import (
    COMMAND_ONLY_KEYS,
    DEFAULT_PORT,
    DEFAULT_REQUIREMENTS,
    MAX_CLUSTER_PORT,
    PLACEHOLDERS,
    SERVER_KEYS,
    SERVER_KINDS,
    Hosts,
    Server,
)

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_READY = re.compile(r"tcp\Z|http:/\S*\Z")


def parse_server(top: Table) -> Server | None:
    """The ``[server]`` table of ``top`` (a redis cluster on port 7000 when there is none)."""
    table = top.table("server", SERVER_KEYS)
    if table is None:
        if top.has("server"):
            return None
        return Server("redis-cluster", DEFAULT_PORT, DEFAULT_REQUIREMENTS, 0, None, (), "tcp", {})
    kind = table.choice("kind", SERVER_KINDS, "redis-cluster")
    port = table.integer("port", DEFAULT_PORT, minimum=1, maximum=65535)
    if kind is BAD:
        return None
    if kind == "redis-cluster" and port is not BAD and port > MAX_CLUSTER_PORT:
        port = table.problem("port", f"{port} is too high for kind = 'redis-cluster': each node also listens on "
                                     f"port + 10000 (its cluster bus), so the port must be at most {MAX_CLUSTER_PORT}")
    command = kind == "command"
    requirements = table.str_list("requirements", () if command else DEFAULT_REQUIREMENTS)
    replicas: Any = 0
    if command:
        if table.has("replicas"):
            table.problem("replicas", "only for kind = 'redis-cluster' or 'redis'")
        script = table.text("script")
        if script is MISSING:
            script = table.missing("script", "missing; kind = 'command' needs the console script to start")
        args = table.str_list("args", ())
        if args is not BAD:
            args = _check_placeholders(table, args)
        ready = table.text("ready", "tcp", pattern=_READY, pattern_help='"tcp" or "http:/path"')
        env = _env(table)
    else:
        for key in COMMAND_ONLY_KEYS:
            if table.has(key):
                table.problem(key, "only for kind = 'command'")
        replicas = table.integer("replicas", 0, minimum=0)
        script, args, ready, env = None, (), "tcp", {}
    own, found = server_files.parse(table.data, table.path, kind, requirements if requirements is not BAD else ())
    for where, message in found:
        table.problems.add(where, message)
    values = (port, requirements, replicas, script, args, ready, env)
    if any(v is BAD for v in values) or found:
        return None
    return Server(kind, port, requirements, replicas, script, args, ready, env, own.build, own.files, own.config)


def check_server_hosts(hosts: Hosts, server: Server, problems: Problems) -> None:
    """Whether the server hosts are as many as the kind lays its nodes out over."""
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


def _check_placeholders(table: Table, args: tuple[str, ...]) -> Any:
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
                table.problems.add(where, f"unknown placeholder {{{field_name}}}{suggest(field_name, PLACEHOLDERS)}"
                                          f" (placeholders: {', '.join(PLACEHOLDERS)})")
                ok = False
    return args if ok else BAD


def _env(table: Table) -> Any:
    value = table.raw("env")
    if value is MISSING:
        return {}
    if not isinstance(value, Mapping):
        return table.problem("env", f"expected a table of strings, got {describe(value)}")
    env: dict[str, Any] = {}
    ok = True
    for key, item in value.items():
        shown = key if isinstance(key, str) else repr(key)
        where = f"{table.at('env')}.{shown}"
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            table.problems.add(where, "not a valid environment variable name")
            ok = False
        elif secrets.is_reference(item):  # a secret: the controller's variable, read when needed
            problem = secrets.reference_problem(item)
            if problem:
                table.problems.add(where, problem)
                ok = False
            else:
                env[key] = secrets.lift(item)
        elif not isinstance(item, str):
            table.problems.add(where, f"expected a string, got {describe(item)} (a secret is {{ env = \"NAME\" }})")
            ok = False
        else:
            env[key] = item
    return env if ok else BAD
