"""A TCP proxy between a client under test and a real service, whose connections a test can cut.

The services on this machine are shared with other tests and sessions, so a test never stops
one; it puts this proxy in front instead. ``cut()`` resets every open connection and refuses
new ones, as a broker that went away does; ``freeze()`` keeps every connection open but passes
no more bytes either way, as a peer that hangs (or a half-open connection) does; ``restore()``
lets everything through again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; start with ``running_proxy``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        # Set while bytes flow; cleared by freeze(), so the pumps hold what they read.
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every open connection (RST, as a crashed peer) and refuse new ones until ``restore``."""
        with self._lock:
            self._cut = True
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            _reset(sock)

    def freeze(self) -> None:
        """Keep connections (and new ones) open but forward nothing until ``restore``."""
        self._flowing.clear()

    def restore(self) -> None:
        """Let connections and bytes through again."""
        with self._lock:
            self._cut = False
        self._flowing.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._flowing.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
            except (OSError, ValueError):
                return  # stop() closed the listener
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stopped.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    while not self._flowing.wait(0.1):
                        if self._stopped.is_set():
                            return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(client)
                self._open.discard(upstream)
            _reset(client)
            _reset(upstream)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST rather than FIN, so the peer sees a cut, not a clean goodbye.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def running_proxy(upstream_host: str, upstream_port: int) -> Iterator[TcpProxy]:
    """A proxy to ``upstream_host:upstream_port``, stopped afterwards."""
    proxy = TcpProxy(upstream_host, upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
