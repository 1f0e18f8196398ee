"""Serve an ASGI app with uvicorn on a background thread (the demo and the tests run the PSA
simulator that way; the daemon's own endpoints run in its loop through `bridge.web.serve`). Starlette + uvicorn is the one HTTP stack
of the project: the simulator, /metrics, the dashboard and the vendor API all use it."""

from __future__ import annotations

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


class ThreadedServer:
    """An ASGI app on a background thread; `start()` returns once it accepts calls.

    The socket is bound before uvicorn starts, so there is no race for the port."""

    def __init__(self, app: Any, host: str = "127.0.0.1"):
        self.app = app
        self.host = host
        self.port = 0
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_server(self) -> uvicorn.Server:
        return make_server(self.app, self.host, self.port)

    def start(self, timeout: float = 10.0) -> "ThreadedServer":
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self.server = self._make_server()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                        name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server thread died while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"HTTP server on {self.url} did not start")
            time.sleep(0.005)  # polling the server's started flag, not a blind delay
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.server is not None and self._thread is not None:
            self.server.should_exit = True
            self._thread.join(timeout)
            self.server = None

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
