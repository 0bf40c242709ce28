"""One hop of a relay fan-out. Runs on a host as ``python3 -c <this file's text>``.

Host side only: Python 3.9+, standard library only (hosts have nothing but python3). The
controller (``fabfile/ship/relay.py``) starts one hop per host over that host's SSH connection
and speaks to it in JSON lines on stdin/stdout:

    controller -> {"source": "stdin"|"peer"|"file", "path", "tmp", "leftovers", "size",
                   "sha256", "token", "bind", "timeout", "link_timeout"}
    hop        -> {"ready": true, "port": PORT|null}
    controller -> {"next": [ADDRESS, PORT, TOKEN] | null}
    hop        -> {"linked": true} | {"linked": false, "error": ...}
    (source "stdin": exactly ``size`` bytes of the file follow on stdin)
    hop        -> {"ok": true, "bytes": N, "forward_error": ...} | {"ok": false, "error": ...}

Sources: ``stdin`` is the head of a chain fed by the controller; ``peer`` listens on a TCP
port for its upstream hop; ``file`` sends a copy this host already has (a redo that spares
the controller's uplink).

Security of the host-to-host leg (plain TCP, no SSH credentials on hosts):

* A listener exists only for one transfer: it binds a random port on the host's fleet
  address only (no other interface), reads every connection side by side (a silent one
  holds up nobody) and accepts exactly one upstream that presents this transfer's
  32-byte token (a token is sent to each hop on its SSH stdin, never on a command line,
  which other users could read in ``ps``), then closes; it gives up after ``link_timeout``.
* Integrity never depends on the network: every hop hashes what it received and installs
  it (0700, atomic rename) only if the sha256 the controller sent over SSH matches, so a
  corrupted or forged stream is refused and redone. The bytes themselves travel in clear
  between hosts: pexes are code, not secrets (the controller can be told to push directly).

A hop keeps forwarding when its own copy fails (a full disk), and keeps its own copy when
its downstream fails: one bad host costs only its own copy and those behind it, and the
controller redoes exactly those.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import io
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import cast

CHUNK = 256 * 1024
TOKEN_BYTES = 32
ACK = b"\x06"
TOKEN_WAIT = 5.0  # seconds a connection may take to present its token
MAX_PENDING = 16  # connections waiting to present a token at once


class HopError(Exception):
    pass


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_json_line(stream):
    line = stream.readline()
    if not line:
        raise HopError("the controller went away")
    return json.loads(line)


def listen(bind):
    """A listening socket on ``bind``, the host's fleet address, and nowhere else: a hop that
    cannot bind it fails, and the controller pushes directly."""
    if not bind:
        raise HopError("no fleet address to listen on")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind((bind, 0))
    except OSError as exc:
        server.close()
        raise HopError(f"cannot listen on {bind} (not an address of this host?): {exc.strerror or exc}") from None
    server.listen(16)
    return server


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def accept_upstream(server, token, timeout, watch_fd):
    """The first connection that presents ``token``; strangers are dropped, not served.

    Connections are read side by side, so a stranger that sends nothing (or a byte at a time)
    holds up nobody: each gets ``TOKEN_WAIT`` seconds, at most ``MAX_PENDING`` wait at once.
    Gives up after ``timeout`` or as soon as ``watch_fd`` (our stdin) ends: the controller
    closing our channel means this transfer is off.
    """
    deadline = time.monotonic() + timeout
    pending: dict = {}  # socket -> [token bytes so far, peer address, when it connected]
    server.setblocking(False)
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise HopError(f"the upstream hop never connected ({timeout:.0f}s)")
            for conn in [s for s, (_, _, since) in pending.items() if now - since > TOKEN_WAIT]:
                refuse(conn, pending.pop(conn)[1], "no token in time")
            readable, _, _ = select.select([server, watch_fd, *pending], [], [], min(deadline - now, 0.5))
            if watch_fd in readable:
                raise HopError("the controller called the transfer off")
            if server in readable:
                take_connection(server, pending)
            for conn in [s for s in readable if s in pending]:
                try:
                    chunk = conn.recv(TOKEN_BYTES - len(pending[conn][0]))
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                pending[conn][0] += chunk
                if chunk and len(pending[conn][0]) < TOKEN_BYTES:
                    continue
                presented, peer, _ = pending.pop(conn)
                if chunk and hmac.compare_digest(presented, token):
                    conn.setblocking(True)
                    conn.settimeout(min(5.0, max(deadline - time.monotonic(), 0.1)))
                    conn.sendall(ACK)
                    return conn
                refuse(conn, peer, "wrong token")
    finally:
        server.close()  # nothing listens longer than it takes the one upstream to arrive
        for conn in pending:
            conn.close()


def take_connection(server, pending):
    try:
        conn, peer = server.accept()
    except (BlockingIOError, InterruptedError):
        return
    conn.setblocking(False)
    if len(pending) >= MAX_PENDING:  # the oldest waiter makes room
        oldest = min(pending, key=lambda s: pending[s][2])
        refuse(oldest, pending.pop(oldest)[1], "too many connections waiting")
    pending[conn] = [b"", peer[0], time.monotonic()]


def refuse(conn, peer, why):
    sys.stderr.write(f"relay hop: refused a connection from {peer} ({why})\n")
    conn.close()


class Acceptor(threading.Thread):
    """Accepts the upstream while the main thread connects downstream: links do not wait on
    each other, so a broken link is reported by the hop in front of it at once."""

    def __init__(self, server, token, timeout, watch_fd):
        threading.Thread.__init__(self, daemon=True)
        self.args = (server, token, timeout, watch_fd)
        self.conn = None
        self.error = None

    def run(self):
        try:
            self.conn = accept_upstream(*self.args)
        except (HopError, OSError) as exc:
            self.error = str(exc)

    def result(self):
        self.join()
        if self.error:
            raise HopError(self.error)
        return self.conn


def connect_next(address, port, token, timeout):
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise HopError(f"cannot reach {address}:{port}: {exc.strerror or exc}") from None
    try:
        sock.sendall(token)
        if recv_exact(sock, 1) != ACK:
            raise HopError(f"{address}:{port} did not accept this transfer")
    except OSError as exc:
        sock.close()
        raise HopError(f"{address}:{port} did not answer: {exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Sink:
    """This host's own copy: a temp file (0600) that becomes the final file only if it verifies."""

    def __init__(self, tmp, final):
        self.tmp, self.final, self.error = tmp, final, None
        self.fh = None
        try:
            os.makedirs(os.path.dirname(tmp) or ".", mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self.fh = os.fdopen(fd, "wb")
        except OSError as exc:
            self.error = f"cannot write {tmp}: {exc.strerror or exc}"

    def write(self, data):
        if self.fh is None:
            return
        try:
            self.fh.write(data)
        except OSError as exc:  # keep forwarding: only this host's copy is lost
            self.error = f"cannot write {self.tmp}: {exc.strerror or exc}"
            self.discard()

    def install(self, leftovers):
        if self.fh is None:  # never opened, or a write failed: self.error says which
            raise OSError(self.error or f"{self.tmp} is not open")
        self.fh.close()
        self.fh = None
        os.chmod(self.tmp, 0o700)
        os.replace(self.tmp, self.final)
        if leftovers:
            remove_stale_temps(leftovers)

    def discard(self):
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def own_temp(setup):
    """This hop's temp name: ``<leftovers><pid>-<tag>``, so another push can tell whether its
    writer is still alive (and leave it alone) or gone (and remove it)."""
    prefix = setup.get("leftovers")
    tmp = setup["tmp"]
    if not prefix or not tmp.startswith(prefix):
        return tmp
    return f"{prefix}{os.getpid()}-{tmp[len(prefix):] or 'hop'}"


def remove_stale_temps(prefix):
    """Remove the temp files ``prefix*`` whose writer is gone: cut-off pushes (power loss).
    One named ``<pid>-...`` whose pid is alive is another push still at work."""
    for path in glob.glob(glob.escape(prefix) + "*"):
        writer = path[len(prefix):].split("-", 1)[0]
        if writer.isdigit() and os.path.isdir("/proc/" + writer):
            continue
        try:
            os.unlink(path)
        except OSError:
            pass


def pump(source, size, sink, downstream):
    """Copy ``size`` bytes from ``source`` to this host's copy and the next hop, hashing them."""
    digest = hashlib.sha256()
    got = 0
    forward_error = None
    while got < size:
        data = source(min(CHUNK, size - got))
        if not data:
            break
        got += len(data)
        digest.update(data)
        if sink is not None:
            sink.write(data)
        if downstream is not None:
            try:
                downstream.sendall(data)
            except OSError as exc:  # keep our own copy: the controller redoes those behind us
                forward_error = "next hop lost: %s" % (exc.strerror or exc)
                downstream.close()
                downstream = None
    if downstream is not None:
        downstream.close()  # the next hop counts bytes: an early close shows as a short transfer
    return got, digest.hexdigest(), forward_error


# One function (~75 lines) on purpose: it is the protocol of the docstring, step by step, so
# the order of its messages can be checked against it top to bottom.
def main():
    os.chdir(os.path.expanduser("~"))
    os.umask(0o077)
    stdin = cast(io.BufferedReader, sys.stdin.buffer)
    setup = read_json_line(stdin)
    server = listen(setup.get("bind")) if setup["source"] == "peer" else None
    say({"ready": True, "port": server.getsockname()[1] if server else None})
    try:
        upstream, downstream = link(setup, stdin, server)
    except HopError as exc:
        say({"linked": False, "error": str(exc)})
        return 4
    say({"linked": True})
    sink: Sink | None = None
    source: Callable[[int], bytes]
    if setup["source"] == "file":  # a copy this host already has: sent on, nothing installed
        try:
            source = open(setup["path"], "rb").read
        except OSError as exc:
            say({"ok": False, "error": "cannot read {}: {}".format(setup["path"], exc.strerror or exc)})
            return 3
    else:
        source, sink = receiving(setup, stdin, upstream)
    got, error, forward_error = transfer(setup, source, sink, downstream)
    if upstream is not None:
        upstream.close()
    if sink is not None:
        error = install(setup, sink, error)
    say({"ok": error is None, "error": error, "bytes": got, "forward_error": forward_error})
    return 0 if error is None else 3


def link(setup: dict, stdin: io.BufferedReader,
         server: socket.socket | None) -> tuple[socket.socket | None, socket.socket | None]:
    """Learn the next hop, then connect to it while our own upstream connects to ``server``:
    (upstream, downstream), either None if there is none."""
    timeout = float(setup.get("timeout") or 60)
    nxt = read_json_line(stdin).get("next")
    acceptor = None
    if server is not None:
        acceptor = Acceptor(server, bytes.fromhex(setup["token"]), float(setup["link_timeout"]), stdin.fileno())
        acceptor.start()
    downstream = None
    if nxt:
        downstream = connect_next(nxt[0], int(nxt[1]), bytes.fromhex(nxt[2]), float(setup["link_timeout"]))
        downstream.settimeout(timeout)
    return (acceptor.result() if acceptor is not None else None), downstream


def receiving(setup: dict, stdin: io.BufferedReader,
              upstream: socket.socket | None) -> tuple[Callable[[int], bytes], Sink]:
    """Where the bytes come from (the controller on stdin, or the upstream hop), and the sink
    that installs them."""
    sink = Sink(own_temp(setup), setup["path"])
    if setup["source"] == "stdin":
        return stdin.read1, sink  # whatever has arrived, so the chain streams
    if upstream is None:  # the acceptor returned no connection and no error
        raise HopError("the upstream hop never connected")
    upstream.settimeout(float(setup.get("timeout") or 60))
    return upstream.recv, sink


def transfer(setup: dict, source: Callable[[int], bytes], sink: Sink | None,
             downstream: socket.socket | None) -> tuple[int, str | None, str | None]:
    """Pump every byte to the sink and downstream: (bytes, our error, the forward's error)."""
    size = int(setup["size"])
    try:
        got, sha, forward_error = pump(source, size, sink, downstream)
    except OSError as exc:  # the upstream stalled or broke: ours is incomplete
        return -1, f"receiving failed: {exc.strerror or exc}", None
    if got != size:
        return got, f"short transfer: {got} of {size} bytes arrived", forward_error
    if sha != setup["sha256"]:
        return got, "sha256 mismatch: expected {}, got {}".format(setup["sha256"], sha), forward_error
    return got, None, forward_error


def install(setup: dict, sink: Sink, error: str | None) -> str | None:
    """Install the verified copy (atomic rename), or discard it; the error, if any."""
    error = error or sink.error
    if error:
        sink.discard()
        return error
    try:
        sink.install(setup.get("leftovers"))
    except OSError as exc:
        sink.discard()
        return "cannot install {}: {}".format(setup["path"], exc.strerror or exc)
    return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HopError as exc:
        say({"ok": False, "linked": False, "error": str(exc)})
        sys.exit(5)
