"""``python -m hello_asgi --host H --port P --index I --peers A,B``: serve the app with uvicorn.

The spawn file's ``{index}`` and ``{peers}`` placeholders arrive here as arguments (``env``
values are passed as written), and reach the app through its environment.
"""

import argparse
import os

import uvicorn

parser = argparse.ArgumentParser(prog="hello_asgi")
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--index", default="")
parser.add_argument("--peers", default="")
parser.add_argument("--workers", type=int, default=1)
args = parser.parse_args()
os.environ["NODE_INDEX"] = args.index
os.environ["PEERS"] = args.peers
uvicorn.run("hello_asgi:app", host=args.host, port=args.port, workers=args.workers, log_level="warning")
