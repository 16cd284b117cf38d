"""A loopback TCP proxy a test controls, standing between the broker and its S3 peer.

Modes (``FaultProxy.mode``, switched at any moment):

- ``forward``: relay bytes both ways to the target (signed Host headers hold: the broker
  signs for the proxy's address, and the peer does not check the Host it is reached on
  against anything but the signature).
- ``blackhole``: accept connections and read whatever comes, but never answer: storage that
  hangs. A connection that has seen the black hole never forwards again (its request was
  swallowed half way), so clients only recover on fresh connections, as in real life.
- ``drop``: reset every connection (RST), open ones included: storage that refuses.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Literal

Mode = Literal["forward", "blackhole", "drop"]
LOOPBACK = "127.0.0.1"


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """Listens on a free loopback port; relays to ``target`` (host, port) as ``mode`` says."""

    def __init__(self, target: tuple[str, int]) -> None:
        assert target[0] == LOOPBACK
        self.target = target
        self.mode: Mode = "forward"
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        swallowed = False
        try:
            while not self._closed:
                mode = self.mode
                if mode == "drop":
                    _reset(client)
                    return
                if mode == "blackhole" or swallowed:
                    swallowed = True
                    if upstream is not None:
                        upstream.close()
                        upstream = None
                elif upstream is None:
                    upstream = socket.create_connection(self.target, timeout=5)
                # poll, not select: a long test session holds more than 1024 descriptors.
                socks = {client.fileno(): client}
                if upstream is not None:
                    socks[upstream.fileno()] = upstream
                poller = select.poll()
                for fd in socks:
                    poller.register(fd, select.POLLIN)
                for fd, _ in poller.poll(50):
                    sock = socks[fd]
                    data = sock.recv(65536)
                    if not data:
                        return  # one side closed: close both
                    if sock is client:
                        if upstream is not None:
                            upstream.sendall(data)
                    else:
                        client.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()
