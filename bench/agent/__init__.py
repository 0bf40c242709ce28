"""The agent: the program fleetbench runs on each agent host, inside its own pex.

``python -m bench.agent run --job JSON [--out PATH]`` applies one AgentJob's load to the
servers and prints one result (bench.wire.result.AgentResult). Modules, from the wire up:

- ``resp``: RESP2 encoding, and a reply scanner that counts without building values
- ``client``: one asyncio Protocol per TCP connection, batches in, completions out; the
  ``Conn``/``Dial`` interface every protocol gives the engine
- ``httpclient``: keep-alive HTTP/1.1 connections for the http workload
- ``pyload``: the python workload's in-process "connections" calling a user's function
- ``cluster``: Redis Cluster slot routing (CRC16 + hash tags), CLUSTER SLOTS discovery
- ``keys``: seeded key/row/column distributions (uniform, zipf, sequential, hotspot, latest)
- ``workloads``: the registry of workloads, each a stream of pre-encoded ops
- ``engine``: the load loop (workers, pipelining, closed/open loop, warmup, redirects)
- ``stats``: per-batch recording into per-second counts and histograms (``bench.wire.hdr``)
- ``hostrun``, ``barrier``, ``hostmetrics`` (its /proc parsers: ``procfs``), ``hostfacts``: the run on a
  host, its phases kept together across hosts, the host's metrics and facts
- ``hop``: one relay hop (fabfile.ship.relay), run as a script by the host's own python3
  before any pex is there: stdlib only
- ``result``, ``runner``, ``__main__``: result output, the run, the CLI (a job checks itself:
  ``bench.wire.job.AgentJob.from_json``)

Only the standard library and (where the host has a wheel of it) uvloop are imported here, plus
``bench.wire``: the agent pex must stay small (it ships ``bench/wire`` and ``bench/agent`` only).
"""
