"""The http and python workloads on a real local fleet, against a `command` server that needs
nothing from PyPI: the standard library's ``python -m http.server`` on two hosts.

http.server answers HTTP/1.0 and closes after every response, so the agents reconnect per
request; the python benchmark's module is shipped inside the agent pex from the project
directory (``params.modules``), and one of the agent hosts runs Python 3.9.
"""

from __future__ import annotations

import json

import pytest

from bench.wire import hist

pytestmark = pytest.mark.fleet

SPAWN = """
name = "web-stdlib"
[hosts]
servers = ["$h1", "$h2"]
agents = ["$h3", "$h4"]
[server]
kind = "command"
port = 7500
requirements = []
script = "http.server"
args = ["--bind", "{host}", "--directory", "{data_dir}", "{port}"]
ready = "http:/"
[[benchmark]]
name = "get"
workload = "http"
agents = 2
iterations = 400
connections = 2
params = { paths = ["/", "/missing"] }
[[benchmark]]
name = "get-at-200"
workload = "http"
agents = 2
duration = "1s"
rate = 200
connections = 4
[[benchmark]]
name = "py-get"
workload = "python"
agents = 2
iterations = 100
connections = 2
params = { target = "loads.webget:make", modules = ["loads"], options = { path = "/" } }
"""

MODULE = '''
import asyncio


async def make(ctx):
    host, port = ctx.targets[ctx.connection % len(ctx.targets)]
    request = ("GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n" % (ctx.options["path"], host)).encode()

    async def op():
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        status = await reader.readline()
        await reader.read()
        writer.close()
        if b" 200 " not in status:
            raise RuntimeError(status.decode().strip())

    return op
'''


def test_http_and_python_workloads_against_a_stdlib_command_server(project):
    (project.path / "loads").mkdir(exist_ok=True)
    (project.path / "loads" / "__init__.py").write_text("")
    (project.path / "loads" / "webget.py").write_text(MODULE)
    spawn = project.write_spawn("web-stdlib.toml", SPAWN)
    try:
        out = project.inv("deploy", "--spawn", str(spawn), "bench", "--spawn", str(spawn),
                          "collect", "--spawn", str(spawn)).stdout
        assert "started 2 http.server node(s)" in out
        run = json.loads((project.path / "runs" / "latest" / "run.json").read_text())
        by_name = {b["name"]: b for b in run["benchmarks"]}

        get = by_name["get"]  # half the requests are for a path http.server does not have
        assert (get["ops"], get["errors"], get["agents_ok"]) == (200, 200, 2)
        assert sum(s["ops"] for s in get["timeseries"]) == 200
        assert sum(s["errors"] for s in get["timeseries"]) == 200
        samples = get["error_samples"]
        assert samples and all(s.startswith("HTTP/1.0 404 File not found (GET /missing HTTP/1.1 on ") for s in samples)

        paced = by_name["get-at-200"]  # open loop: both histograms, and late ops counted
        assert paced["ops"] == 200 and paced["errors"] == 0 and paced["late_ops"] >= 0
        assert hist.decode(paced["service_histogram"]).get_total_count() == 200

        py = by_name["py-get"]  # the shipped module, on the 3.9 host and another
        assert (py["ops"], py["errors"], py["agents_ok"]) == (100, 0, 2)
        assert run["status"] == "ok"  # op errors (the 404s) are measurements, not failures

        # Editing the module rebuilds the agent pex; the server is left alone.
        (project.path / "loads" / "webget.py").write_text(MODULE + "\n# edited\n")
        again = project.inv("deploy", "--spawn", str(spawn)).stdout
        assert "building agent pex" in again and "building server pex" not in again
        assert "nothing to restart" in again
    finally:
        project.inv("down", "--spawn", str(spawn), check=False)

