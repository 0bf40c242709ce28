"""The ``python`` workload: a user's function, shipped inside the agent pex, is the op.

``params.target = "myload:run"`` names a function that is called once per connection with a
:class:`PyContext` (it may be ``async``) and returns that connection's *op*: a callable taking
no arguments, called once per op. If a call returns an awaitable, it is awaited. Returning
is success; raising counts the op as an error (the exception's type and message become an
error sample). Everything else -- closed and open loop, ``connections`` workers, ``pipeline``
concurrent calls per worker, warmup, histograms, the per-second series -- is the engine's,
exactly as for the built-in workloads: here a "connection" is an in-process caller.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.agent.client import Dial, SubBatch
from bench.agent.keys import derive_seed

MAX_MESSAGE = 300  # characters of an exception kept as an error sample


@dataclass(frozen=True)
class PyContext:
    """What the user's function is told, once per connection."""

    agent_num: int  # 0-based, of ``agents``
    agents: int
    connection: int  # 0-based, of ``connections``
    connections: int
    pipeline: int  # concurrent calls of the op on this connection, at most
    seed: int  # params.seed, derived per (agent, connection): different and reproducible
    targets: tuple[tuple[str, int], ...]  # (host, port) of every server node
    server_kind: str  # "redis-cluster" | "redis" | "command"
    options: Mapping[str, Any]  # params.options, as written in the spawn file (secrets resolved)
    rng: random.Random = field(repr=False, compare=False)  # seeded with ``seed``
    password: str | None = field(default=None, repr=False)  # the redis kinds' password: AUTH with it

    def log(self, message: str) -> None:
        """One line on the agent's stderr (the controller keeps it with the run)."""
        print(f"fleetbench-agent[python {self.agent_num}.{self.connection}] {message}", file=sys.stderr, flush=True)


def load_target(target: str) -> Callable[..., Any]:
    """The function ``module:attr.path`` names; ValueError says what is missing and why."""
    module_name, _, attr_path = target.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"params.target {target!r} is not module:function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0]:
            raise ValueError(f"cannot import {module_name!r}: it is not in this agent pex "
                             f"(list its file in params.modules)") from None
        raise ValueError(f"cannot import {module_name!r}: {exc} (the agent pex has the standard library, "
                         f"uvloop and params.modules only)") from None
    except Exception as exc:  # the user's module failed while importing: say where
        raise ValueError(f"importing {module_name!r} failed: {_where(exc)}") from None
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{target!r}: module {module_name!r} has no {attr_path!r}") from None
    if not callable(obj):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a function")
    return obj


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{at}"


def describe(exc: BaseException) -> bytes:
    """An op's exception as an error message (the engine's error samples are bytes)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_MESSAGE].encode("utf-8", "replace")


class CallConnection:
    """One worker's in-process "connection": each op is one call of the user's op (``client.Conn``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, complete: Callable[[SubBatch], None]) -> None:
        self.loop = loop
        self.complete = complete
        self.op: Callable[[], Any] | None = None  # set once the user's function returned it
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def send(self, sub: SubBatch) -> None:
        if self.closed:
            return
        if len(sub.ops) > 1:
            self._spawn(self._many(sub))
            return
        try:
            result = self.op()  # type: ignore[misc]
        except Exception as exc:
            sub.errors = [(0, describe(exc))]
            result = None
        if result is not None and inspect.isawaitable(result):
            self._spawn(self._one(sub, result))
        else:
            # Never complete inside send(): completing fires the next op, which would recurse.
            self.loop.call_soon(self._done, sub)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _done(self, sub: SubBatch) -> None:
        if not self.closed:
            sub.got = sub.want
            self.complete(sub)

    async def _one(self, sub: SubBatch, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as exc:
            sub.errors = [(0, describe(exc))]
        self._done(sub)

    async def _call(self) -> None:
        result = self.op()  # type: ignore[misc]
        if inspect.isawaitable(result):
            await result

    async def _many(self, sub: SubBatch) -> None:
        """``pipeline`` > 1: the batch's calls run concurrently; it completes when all have."""
        outcomes = await asyncio.gather(*[self._call() for _ in sub.ops], return_exceptions=True)
        errors = [(i, describe(o)) for i, o in enumerate(outcomes) if isinstance(o, Exception)]
        if errors:
            sub.errors = errors
        self._done(sub)

    def close(self) -> None:
        self.closed = True
        for task in list(self.tasks):
            task.cancel()


def dialer(target: str, function: Callable[..., Any], base: dict[str, Any]) -> Dial:
    """A ``client.Dial`` whose n-th connection calls ``function(ctx)`` for its op.

    ``base`` holds the PyContext fields shared by every connection (all but connection, seed
    and rng). A failing or wrong setup fails the connection, which the engine makes fatal.
    """
    counter = [0]

    def dial(loop: asyncio.AbstractEventLoop, address: tuple[str, int], label: str,
             complete: Callable[[SubBatch], None], lost: Callable[[str], None]) -> tuple[CallConnection, Any]:
        index = counter[0]
        counter[0] += 1
        seed = derive_seed(base["seed"], base["agent_num"], f"python/{index}")
        ctx = PyContext(connection=index, seed=seed, rng=random.Random(seed),
                        **{k: v for k, v in base.items() if k != "seed"})
        conn = CallConnection(loop, complete)

        async def setup() -> None:
            try:
                op = function(ctx)
                if inspect.isawaitable(op):
                    op = await op
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                raise RuntimeError(f"{target}(ctx) raised {_where(exc)}") from None
            if not callable(op):
                raise TypeError(f"{target}(ctx) returned {op!r}, not the op callable")
            conn.op = op

        return conn, loop.create_task(setup())

    return dial
