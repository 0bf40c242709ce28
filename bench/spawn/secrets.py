"""Secrets in a spawn file: a value written as ``{ env = "NAME" }`` is read from the controller's
environment when it is handed to a host, and is never kept anywhere else.

Where a secret may stand: a value of ``server.env``, of an ``http`` workload's
``params.headers``, and anywhere inside a ``python`` workload's ``params.options``. Parsing
turns each ``{ env = "NAME" }`` into an :class:`EnvSecret` (the name only); :func:`public`
turns it back into ``{"env": "NAME"}`` for everything that is written down (spawn.json, the
deployment state, runs/), so a run store holds the variable's name, never its value.
:func:`resolve` puts the values in, only for what travels to a host (over stdin or into a
0600 file); :func:`missing` names every reference whose variable is not set, before any SSH.
Pure: the environment is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bench.errors import FleetbenchError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: What a secret stands as while params are checked (a header value must be a one-line string).
STAND_IN = "secret"


class SecretError(FleetbenchError):
    """A secret whose environment variable is not set; the message names the key and the variable."""


@dataclass(frozen=True)
class EnvSecret:
    """A value that is the controller's environment variable ``name`` (never the value itself)."""

    name: str

    def __str__(self) -> str:
        return f"{{ env = {self.name!r} }}"


def is_reference(value: Any) -> bool:
    """Whether ``value`` is written ``{ env = "..." }``: a table with the one key ``env``."""
    return isinstance(value, Mapping) and list(value) == ["env"]


def reference_problem(value: Any) -> str | None:
    """What is wrong with a ``{ env = ... }`` table, or None."""
    name = value.get("env")
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        return f"{{ env = {name!r} }} does not name an environment variable"
    return None


def reference_problems(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(key path, problem) of every ``{ env = ... }`` in ``value`` that names no variable."""
    if is_reference(value):
        problem = reference_problem(value)
        if problem:
            yield where, problem
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from reference_problems(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from reference_problems(v, f"{where}[{i}]")


def lift(value: Any) -> Any:
    """``value`` (decoded, checked) with every ``{ env = "NAME" }`` in it an :class:`EnvSecret`."""
    if is_reference(value) and reference_problem(value) is None:
        return EnvSecret(value["env"])
    if isinstance(value, Mapping):
        return {k: lift(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lift(v) for v in value]
    return value


def public(value: Any) -> Any:
    """``value`` with every :class:`EnvSecret` written ``{"env": NAME}``: what may be written down."""
    return _map(value, lambda s: {"env": s.name})


def stand_in(value: Any) -> Any:
    """``value`` with every secret a plain string, for the checks of params' types and form."""
    return _map(value, lambda s: STAND_IN)


def resolve(value: Any, environ: Mapping[str, str], where: str = "") -> Any:
    """``value`` with every secret's value put in; SecretError naming it if one is not set."""
    def value_of(secret: EnvSecret) -> str:
        if secret.name not in environ:
            raise SecretError(f"{where or 'a value'}: environment variable {secret.name} is not set "
                              f"(it is given as {secret})")
        return environ[secret.name]

    return _map(value, value_of)


def references(value: Any, where: str) -> Iterator[tuple[str, EnvSecret]]:
    """Every secret in ``value``, with its key path."""
    if isinstance(value, EnvSecret):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from references(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from references(v, f"{where}[{i}]")


def spawn_references(spawn: Any) -> list[tuple[str, EnvSecret]]:
    """Every secret of a parsed spawn (``bench.spawn.schema.Spawn``), with its key path."""
    found = list(references(spawn.server.env, "server.env"))
    for i, benchmark in enumerate(spawn.benchmarks):
        found += references(benchmark.params, f"benchmark[{i}].params")
    return found


def missing(spawn: Any, environ: Mapping[str, str]) -> list[str]:
    """One message per secret of ``spawn`` whose variable ``environ`` lacks (key path first)."""
    return [f"{where}: environment variable {secret.name} is not set (it is given as {secret})"
            for where, secret in spawn_references(spawn) if secret.name not in environ]


def values(spawn: Any, environ: Mapping[str, str]) -> dict[str, str]:
    """name -> value of every secret of ``spawn`` that ``environ`` has: what must never be shown."""
    return {s.name: environ[s.name] for _, s in spawn_references(spawn) if s.name in environ}


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, EnvSecret):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    return value
