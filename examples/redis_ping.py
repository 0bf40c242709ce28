"""A python workload for fleetbench: one raw asyncio connection per worker, one PING per op.

fleetbench imports this module inside the agent pex (``params.modules`` ships it there) and
calls ``connect(ctx)`` once per connection; what it returns is called once per op. Raising
counts the op as an error. Only the standard library is available (plus anything else listed
in ``params.modules``).

It speaks RESP's inline form, so it works against the redis kinds (any cluster node answers
PING) and against any line-based server that answers ``+...`` to each line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def connect(ctx) -> Callable[[], Awaitable[None]]:
    if ctx.pipeline != 1:
        raise ValueError("redis_ping keeps one request in flight per connection: raise connections instead")
    host, port = ctx.targets[(ctx.agent_num + ctx.connection) % len(ctx.targets)]  # spread over the nodes
    reader, writer = await asyncio.open_connection(host, port)
    if ctx.password is not None:  # the redis kinds run with a password (never print it)
        writer.write(b"AUTH %s\r\n" % ctx.password.encode())
        if not (await reader.readline()).startswith(b"+OK"):
            raise RuntimeError("the server refused AUTH")
    line = (ctx.options.get("command", "PING") + "\r\n").encode()

    async def op() -> None:
        writer.write(line)
        reply = await reader.readline()
        if not reply.startswith(b"+"):
            raise RuntimeError(reply.decode("utf-8", "replace").strip() or "connection closed")

    return op
