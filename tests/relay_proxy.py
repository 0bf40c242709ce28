"""A TCP proxy that corrupts one byte: a relay link gone bad, for the relay tests (unit and fleet)."""

from __future__ import annotations

import socket
import threading


class Proxy:
    """A TCP proxy between two hops (on ``bind``); ``corrupt_at`` flips one byte of the stream
    from upstream to downstream (after the token), for the first connection only."""

    def __init__(self, target: tuple[str, int], corrupt_at: int | None = None, bind: str = "127.0.0.1"):
        self.target = target
        self.corrupt_at = corrupt_at
        self.address = bind
        self.server = socket.create_server((bind, 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            corrupt = self.corrupt_at if self.connections == 1 else None
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, corrupt), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, corrupt_at: int | None) -> None:
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if corrupt_at is not None and seen <= corrupt_at < seen + len(data):
                    i = corrupt_at - seen
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                seen += len(data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
