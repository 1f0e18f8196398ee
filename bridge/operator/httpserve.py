"""Serve an ASGI app with uvicorn on a background thread (the demo and the tests run the PSA
simulator that way; the daemon's own endpoints run in its loop through
`bridge.operator.web.serve`). Starlette + uvicorn is the one HTTP stack of the project: the
simulator, /metrics, the dashboard and the vendor API all use it."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge.config import HttpSettings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_protocol() -> str:
    """uvicorn's `http` option for the servers that run their own loop (the simulator, the
    threaded test servers): httptools, a dependency, else h11. The simulator shares a
    benchmark's two cores with mailbridge, and httptools takes ~30 % off its CPU per call.
    (The daemon's own server keeps its guarded h11 protocol: `guarded_protocol` below.)"""
    return "httptools" if find_spec("httptools") is not None else "auto"


def event_loop() -> str:
    """uvicorn's `loop` option for those servers: uvloop, a dependency, else asyncio's (another
    ~10-20 % off the simulator's CPU in the backlog benchmark). mailbridge's own commands stay
    on asyncio's loop: under uvloop their CPU did not move beyond the benchmark's noise."""
    return "uvloop" if find_spec("uvloop") is not None else "auto"


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the daemon owns the signals
        pass


def make_server(app: Any, host: str, port: int, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="off", proxy_headers=False, http=http_protocol(),
                            loop=event_loop())
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


# -- limits for the daemon's own HTTP server (issue 13: slow clients) -------------------------

@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP client may hold. uvicorn has a keep-alive timeout and `limit_concurrency`
    (503 once too many requests run) but no deadline for reading a request and no cap on open
    connections, so slow clients could hold every descriptor of the process."""

    max_connections: int = 100       # open connections; more evict the oldest idle one
    header_timeout: float = 10.0     # from connect (or the previous response) to a full request
    keepalive_timeout: float = 5.0   # idle time between two requests on one connection

    @classmethod
    def from_settings(cls, http: HttpSettings) -> "HttpLimits":
        return cls(http.max_connections, http.header_timeout, http.keepalive_timeout)

    def connection_cap(self) -> int:
        """max_connections, but never more than a quarter of the descriptors the process may
        open: the store, the sources and the deliverers need the rest."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(8, min(self.max_connections, soft // 4))


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the daemon calls this at start; systemd's
    default soft limit is 1,024 while the hard one is far higher). Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # some kernels cap RLIM_INFINITY lower: keep what we have
            pass
    return int(soft)


class _Throttle(logging.Filter):
    """Lets one record per message template through each `interval` seconds and counts the
    rest, so an accept() storm (EMFILE) or a flood of malformed requests cannot fill the log."""

    def __init__(self, interval: float = 1.0):
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # asyncio's message goes on with the socket's repr, which differs each time: the first
        # line is the template.
        key = str(record.msg).split("\n", 1)[0][:200]
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last second not logged)"
        return True


_THROTTLE = _Throttle()


def throttle_server_logs() -> None:
    """Rate-limit the loggers a connection flood writes to: asyncio's ("socket.accept() out of
    system resource", with a traceback) and uvicorn's ("Invalid HTTP request received.")."""
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _THROTTLE not in logger.filters:
            logger.addFilter(_THROTTLE)


def guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """An h11 protocol class for one server with a request-read deadline and a connection cap.

    Connections that have not yet sent a whole request are kept in arrival order; when a new
    connection goes over the cap, the oldest of them is closed (or the new one, if every open
    connection is busy with a request). So slow clients push each other out while a client that
    sends its request at once — /healthz, a scrape — still gets through during a flood."""
    cap = limits.connection_cap()

    class GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        # Same signature as uvicorn's H11Protocol, which narrows asyncio's BaseTransport too.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > cap:
                victim = next(iter(waiting))  # self is in it, so it is never empty
                victim._expire()

        def _arm(self) -> None:
            self._disarm()
            waiting[self] = None
            self._deadline = self.loop.call_later(limits.header_timeout, self._expire)

        def _disarm(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.abort()  # no lingering: the descriptor is what we are short of

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()  # a whole request arrived: the app's time is not the client's

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()  # the next request must come within the deadline too
            super().on_response_complete()  # may run a pipelined request: that disarms again

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    waiting: dict[GuardedH11, None] = {}  # insertion-ordered: oldest first
    return GuardedH11


def server_config(app: Any, limits: HttpLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn Config that applies `limits` (h11 only: the one protocol we guard). uvicorn's
    `limit_concurrency` counts open connections too, which our cap already bounds, so it is set
    above the cap: it is the second line (503) for requests, not the first."""
    # `backlog` is also how many connections asyncio accepts in one go before any protocol
    # sees one (uvicorn's default, 2,048, lets a flood take every descriptor in a single
    # loop iteration, before the cap can close a connection): keep it at the cap.
    return uvicorn.Config(app, http=guarded_protocol(limits),
                          backlog=min(128, limits.connection_cap()),
                          limit_concurrency=2 * limits.connection_cap(),
                          timeout_keep_alive=max(1, round(limits.keepalive_timeout)), **options)
