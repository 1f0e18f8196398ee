"""Serve an ASGI app with uvicorn: inside the daemon's event loop, or on a background thread
(the demo and tests run the PSA simulator that way). Starlette + uvicorn is the one HTTP stack
of the project: the simulator, /metrics, the dashboard and the vendor API all use it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the daemon owns the signals
        pass


def make_server(app: Any, host: str, port: int, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="off")
    return _QuietServer(config)


async def serve(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Run until `stop` is set (in the caller's loop)."""
    server = make_server(app, host, port)
    task = asyncio.ensure_future(server.serve())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task


class ThreadedServer:
    """An ASGI app on a background thread; `start()` returns once the port accepts."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.server = make_server(app, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server on {self.url} did not start")
            time.sleep(0.01)  # polling a condition (the server's started flag), not a delay
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
