"""One measured phase through a real Engine on a fresh event loop, for workloads whose
connections are injected (a scripted HTTP server, in-process calls): no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.agent import cluster
from bench.agent.client import Dial
from bench.agent.engine import Engine, Phase
from bench.agent.stats import Recorder
from bench.agent.workloads import NextOps


def run_phase(router: cluster.Router, dial: Dial | None, next_ops: NextOps, *, connections: int = 2,
              pipeline: int = 1, **phase: Any) -> tuple[Engine, Recorder]:
    """Connect every worker, run ``Phase(next_ops, pipeline, **phase)``, close; the engine
    (for ``fatal``) and what was recorded. A failed connect raises ConnectionError."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        eng = Engine(loop, router, connections, log=lambda m: None, dial=dial)
        rec = Recorder(open_loop=phase.get("rate") is not None)

        async def main() -> None:
            await eng.connect()
            await eng.run(Phase(next_ops, pipeline, recorder=rec, **phase))

        try:
            loop.run_until_complete(main())
        finally:
            eng.close()
            loop.run_until_complete(asyncio.sleep(0))
        rec.finish()
        return eng, rec
    finally:
        loop.close()
        asyncio.set_event_loop(None)
