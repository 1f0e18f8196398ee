"""mailbridge's own HTTP endpoints: `/healthz`, `/metrics`, the read-only dashboard `/` (and its
`/rules/diff` page for a candidate rule directory), and the vendor API
(`/api/vendor/accounts`, `/api/vendor/product-groups`) the PSA pulls (seed 000 §2–3).

The dashboard is rendered on the server — one page, an inline SVG chart, no script, no CDN —
under a strict Content-Security-Policy; every value in it is HTML-escaped and has passed the
redactor. Store reads run on a thread of their own (never on the event loop). `serve` runs the
app with uvicorn inside the daemon's event loop, leaving signals to the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import ipaddress
import logging
import socket
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.config import HttpSettings, Settings
from bridge.operator import metrics, views
from bridge.operator.audit import Redactor
from bridge.operator.dashboard import render_dashboard
from bridge.operator.httpserve import (HttpLimits, raise_nofile_limit, server_config,
                                       throttle_server_logs)
from bridge.operator.rulesdiff_page import CandidateDiff, render_rules_diff
from bridge.operator.status import RuntimeStatus, health
from bridge.store.db import AsyncStore, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
       " script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none';"
       " frame-ancestors 'none'")


class _Reader:
    """Runs functions of a Store on the one thread that owns it: the daemon's AsyncStore, or a
    connection of the web's own opened lazily from a factory (so a slow dashboard query never
    queues behind the pipeline's writes; WAL lets readers and the writer run side by side)."""

    def __init__(self, source: AsyncStore | Callable[[], Store]):
        self._async: AsyncStore | None = None
        self._factory: Callable[[], Store] | None = None
        if isinstance(source, AsyncStore):
            self._async = source
        else:
            self._factory = source
        self._store: Store | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _own(self) -> Store:
        if self._store is None:
            assert self._factory is not None
            self._store = self._factory()
        return self._store

    async def __call__(self, fn: Callable[[Store], T]) -> T:
        if self._async is not None:
            store = self._async.store
            return await self._async.run(lambda: fn(store))
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-store")
        return await asyncio.get_running_loop().run_in_executor(self._pool,
                                                                lambda: fn(self._own()))

    def close(self) -> None:
        if self._pool is not None:
            if self._store is not None:
                self._pool.submit(self._store.close).result()
            self._pool.shutdown(wait=True)
            self._pool, self._store = None, None


class _SecurityHeaders:
    """Adds CSP and friends to every response (pure ASGI: no buffering of bodies)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (b"x-frame-options", b"DENY")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(header: str, http: HttpSettings) -> bool:
    """Whether a request's Host header names this server (see `create_app`)."""
    if not header:  # HTTP/1.0 probes: no Host at all cannot be a browser's rebinding attempt
        return True
    host = header.rsplit(":", 1)[0] if not header.endswith("]") else header
    host = host.strip("[]").rstrip(".").lower()
    if is_loopback(host):
        return True
    bound = http.host.strip("[]").lower()
    if host == bound and bound not in ("0.0.0.0", "::", ""):
        return True
    return host in {h.strip("[]").rstrip(".").lower() for h in http.allowed_hosts}


def create_app(store: AsyncStore | Callable[[], Store], runtime: RuntimeStatus | None,
               settings: Settings, *,
               accounts_provider: Callable[[], list[dict[str, Any]]] | None = None,
               redactor: Redactor | None = None, refresh: int = 30) -> Starlette:
    """The ASGI app. `store` is the daemon's AsyncStore or a factory of a Store of the web's
    own (preferred: `lambda: Store(settings.store.path)`); `accounts_provider` returns the
    accounts directory as dicts with at least `id` and `name`. After a reload the daemon sets
    `app.state.settings` to the new settings (vendor API key, catalogue)."""
    reader = _Reader(store)
    red = redactor or Redactor(settings.secrets())
    # The dashboard, /healthz and /metrics answer only to loopback host names, the address
    # the server is bound to and `[http] allowed_hosts`, whatever the bind address, so a web
    # page the admin visits cannot read them through DNS rebinding. The vendor API has its key.

    def host_ok(request: Request) -> bool:
        return host_allowed(request.headers.get("host", ""), request.app.state.settings.http)

    async def healthz(request: Request) -> Response:
        if not host_ok(request):
            return Response("misdirected request", 421)
        try:
            ok, reasons = await reader(lambda s: health(runtime, s))
        except Exception as exc:
            ok, reasons = False, [f"store unreadable: {exc}"]
        if ok:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "degraded", "reasons": [red.redact(r) for r in reasons]},
                            status_code=503)

    async def metrics_endpoint(request: Request) -> Response:
        if not host_ok(request):
            return Response("misdirected request", 421)
        try:
            body = await reader(lambda s: metrics.exposition(s, runtime))
        except Exception:  # the store could not even be opened: say so in the series
            log.exception("/metrics: cannot open the store")
            body = metrics.exposition(None, runtime)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def dashboard(request: Request) -> Response:
        if not host_ok(request):
            return Response("misdirected request", 421)

        def snapshot(s: Store) -> dict[str, Any]:
            return {"status": views.status_view(s, runtime),
                    "messages": views.messages_view(s, 50, red),
                    "tickets": views.tickets_view(s, limit=50),
                    "failures": views.failures_view(s, 20, red),
                    "chart": views.alerts_per_hour(s, 24)}

        data = await reader(snapshot)
        candidate = request.app.state.settings.rules.candidate_directory is not None
        return HTMLResponse(render_dashboard(data, red, refresh, candidate))

    candidate_diff = CandidateDiff()

    async def rules_diff(request: Request) -> Response:
        """What `[rules] candidate_directory` would change: served from a cache that a
        background process fills (bridge.operator.rulesdiff_page)."""
        if not host_ok(request):
            return Response("misdirected request", 421)
        view = await run_in_threadpool(candidate_diff.view, request.app.state.settings)
        return HTMLResponse(render_rules_diff(view, red, refresh))

    def vendor(produce: Callable[[Settings], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            key = request.app.state.settings.http.vendor_api_key
            secret = key.get_secret_value() if key is not None else ""
            if not secret:
                return JSONResponse({"error": "the vendor API is not enabled"}, 404)
            given = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                return JSONResponse({"error": "missing or wrong X-API-Key"}, 401,
                                    headers={"WWW-Authenticate": "X-API-Key"})
            try:
                return JSONResponse(await run_in_threadpool(produce, request.app.state.settings))
            except Exception:
                log.exception("vendor API: %s failed", request.url.path)
                return JSONResponse({"error": "internal error"}, 500)
        return endpoint

    def accounts(_: Settings) -> dict[str, Any]:
        rows = accounts_provider() if accounts_provider else []
        # Only id and name leave mailbridge: the directory also holds sender addresses.
        return {"accounts": [{"id": str(a["id"]), "name": str(a.get("name") or a["id"])}
                             for a in rows]}

    def product_groups(current: Settings) -> dict[str, Any]:
        return {"productGroups": [{"name": g.name, "alertTypes": list(g.alert_types)}
                                  for g in current.catalogue]}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(reader.close)
        candidate_diff.close()

    app = Starlette(routes=[
        Route("/", dashboard), Route("/healthz", healthz), Route("/rules/diff", rules_diff),
        Route("/metrics", metrics_endpoint),
        Route("/api/vendor/accounts", vendor(accounts)),
        Route("/api/vendor/product-groups", vendor(product_groups)),
    ], lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.state.settings = settings
    app.state.candidate_diff = candidate_diff
    app.state.close = reader.close  # for callers that never run the lifespan (tests)
    return app


# -- the page ---------------------------------------------------------------------------------

class WebServerError(RuntimeError):
    """The HTTP server could not start or stopped on its own."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGHUP/SIGINT; uvicorn must not take them over.
        yield


async def serve(app: ASGIApp, host: str, port: int, stop: asyncio.Event,
                on_listening: Callable[[int], None] | None = None, *,
                limits: HttpLimits | None = None) -> None:
    """Serve `app` until `stop` is set. The socket is bound here first, so a port in use raises
    OSError at once (uvicorn would call sys.exit inside the loop). `on_listening` gets the
    bound port (useful with port 0). `limits` bound what slow clients can hold
    (`HttpLimits.from_settings(settings.http)`; docs/hardening.md)."""
    raise_nofile_limit()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say TCP; without it
    # each response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(min(128, (limits or HttpLimits()).connection_cap()))
    bound = sock.getsockname()[1]
    throttle_server_logs()
    config = server_config(app, limits or HttpLimits(), log_config=None, access_log=False,
                           lifespan="on", proxy_headers=False, server_header=False,
                           timeout_graceful_shutdown=5)
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # must not escape the task: it would end the daemon's loop
            raise WebServerError(f"HTTP server failed (exit {exc.code})") from None

    log.info("HTTP on http://%s:%d/ (dashboard, /healthz, /metrics)", host, bound)
    task = asyncio.create_task(run(), name="http")
    if on_listening is not None:
        on_listening(bound)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()
    if not stop.is_set():
        raise WebServerError("HTTP server stopped on its own")
