"""A tiny ASGI application, the example of a local project served by a real ASGI server.

    GET /          {"node": "<index>", "peers": "<peers>"}: which node answered, and the others
    GET /bytes/N   N bytes
"""

import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # uvicorn asks; nothing to set up
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/bytes/") and path[len("/bytes/"):].isdigit():
        status, body, kind = 200, b"x" * min(int(path[len("/bytes/"):]), 1 << 20), b"application/octet-stream"
    elif path == "/":
        info = {"node": os.environ.get("NODE_INDEX", ""), "peers": os.environ.get("PEERS", "")}
        status, body, kind = 200, json.dumps(info).encode(), b"application/json"
    else:
        status, body, kind = 404, b"not found\n", b"text/plain"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
