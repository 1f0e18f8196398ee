"""mailbridge's own HTTP endpoints: `/healthz`, `/metrics`, the read-only dashboard `/`, and the
vendor API (`/api/vendor/accounts`, `/api/vendor/product-groups`) the PSA pulls (seed 000 §2–3).

The dashboard is rendered on the server — one page, an inline SVG chart, no script, no CDN —
under a strict Content-Security-Policy; every value in it is HTML-escaped and has passed the
redactor. Store reads run on a thread of their own (never on the event loop). `serve` runs the
app with uvicorn inside the daemon's event loop, leaving signals to the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import html
import importlib.resources
import ipaddress
import logging
import socket
import string
import time
from typing import Any, AsyncIterator, Callable, Iterator, Sequence, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import metrics, views
from bridge.audit import Redactor
from bridge.config import Settings
from bridge.status import RuntimeStatus, health
from bridge.store.db import AsyncStore, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
       " script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none';"
       " frame-ancestors 'none'")
COLOURS = {"created": "#2e7d32", "appended": "#66bb6a", "resolved": "#1565c0",
           "nothing-to-resolve": "#90caf9", "coalesced": "#7e57c2", "suppressed": "#8d6e63",
           "skipped": "#9e9e9e", "unmatched": "#f9a825", "regular": "#b0bec5", "xml": "#26a69a",
           "rejected": "#ef6c00", "quarantined": "#5d4037", "failed": "#c62828",
           "pending": "#607d8b", "staged": "#78909c", "processing": "#78909c"}


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
            return await self._async.run(lambda: fn(self._async.store))  # type: ignore[union-attr]
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    # A dashboard bound to loopback answers only to loopback host names, so a web page the
    # admin visits cannot read it through DNS rebinding. The vendor API has its key instead.
    local_only = _is_loopback(settings.http.host)

    def host_ok(request: Request) -> bool:
        host = request.headers.get("host", "")
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        # No Host header at all (HTTP/1.0 probes) cannot be a browser's rebinding attempt.
        return not local_only or not host or _is_loopback(host)

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
        return HTMLResponse(render_dashboard(data, red, refresh))

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

    app = Starlette(routes=[
        Route("/", dashboard), Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/api/vendor/accounts", vendor(accounts)),
        Route("/api/vendor/product-groups", vendor(product_groups)),
    ], lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.state.settings = settings
    app.state.close = reader.close  # for callers that never run the lifespan (tests)
    return app


# -- the page ---------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(outcome: str | None) -> str:
    name = outcome or "?"
    return f'<span class="o o-{_e(name)}">{_e(name)}</span>'


def _table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, Callable[[Any], str], str]],
           empty: str) -> str:
    """cols: (heading, cell -> HTML, css class). Cell functions escape what they print."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h, _, _ in cols)
    body = "".join("<tr>" + "".join(f'<td class="{c}">{f(r)}</td>' for _, f, c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _t(ts: float | None) -> str:
    return _e(views.fmt_time(ts))


def _chart(data: dict[str, Any]) -> str:
    """Stacked bars, one per hour; each segment has a <title> as its tooltip (no script)."""
    hours, series = data["hours"], data["series"]
    width, height, left, bottom, top = 760, 200, 36, 22, 8
    totals = [sum(s[i] for s in series.values()) for i in range(len(hours))]
    peak = max(totals + [1])
    step = max(1, -(-peak // 4))  # four grid lines, whole numbers
    ymax = step * 4
    plot_h, slot = height - bottom - top, (width - left) / len(hours)
    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img"'
           f' aria-label="messages per hour by outcome">']
    for k in range(5):
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{step * k}</text>')
    for i, start in enumerate(hours):
        x, y = left + i * slot + slot * 0.15, top + plot_h
        for outcome, counts in series.items():
            if not counts[i]:
                continue
            h = plot_h * counts[i] / ymax
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
                       f' fill="{COLOURS.get(outcome, "#999")}"><title>'
                       f'{_e(time.strftime("%H:%M", time.localtime(start)))} {_e(outcome)}:'
                       f' {counts[i]}</title></rect>')
        if i % 3 == 0:
            out.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - 6}"'
                       f' text-anchor="middle">{time.strftime("%H:%M", time.localtime(start))}'
                       f'</text>')
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{COLOURS.get(o, "#999")}"></i>{_e(o)}'
                     f' ({sum(c)})</span>' for o, c in series.items())
    return "".join(out) + f'<div class="legend">{legend or "no messages in the last 24 h"}</div>'


@functools.cache
def _template() -> string.Template:
    return string.Template(importlib.resources.files("bridge").joinpath(
        "web_templates/dashboard.html").read_text(encoding="utf-8"))


def render_dashboard(data: dict[str, Any], red: Redactor, refresh: int = 30) -> str:
    st, now = data["status"], time.time()
    state = "ready" if st["healthy"] else "degraded"
    meta = [f"rules {st.get('ruleset_version') or '?'}",
            f"PSA auth {st.get('psa_auth', '?')}",
            f"up since {views.fmt_time(st['started_at'])}" if st.get("started_at") else ""]
    reasons = "".join(f"<li>{_e(red.redact(r))}</li>" for r in st["reasons"])
    outbox = st["outbox"]
    cards = [("backlog", st["backlog"], False), ("pending", st["messages_by_state"]["pending"],
                                                 False),
             ("outbox pending", outbox["pending"] + outbox["in_flight"], False),
             ("dead rows", outbox["dead"], outbox["dead"] > 0),
             ("failures, last hour", st["failures_last_hour"], st["failures_last_hour"] > 0),
             ("open tickets", st["open_tickets"], False),
             ("messages, 24 h", sum(st["outcomes_24h"].values()), False)]
    messages = _table(data["messages"], [
        ("#", lambda r: _e(r["id"]), "num"), ("arrived", lambda r: _t(r["arrived_at"]), "t"),
        ("from", lambda r: _e(r["sender"]), "wrap"),
        ("subject", lambda r: _e(r["subject"]), "wrap"),
        ("outcome", lambda r: _badge(r["outcome"] or r["state"]), ""),
        ("rule", lambda r: _e(r["rule"] or "-"), "mono"),
        ("alert key", lambda r: _e(r["alert_key"] or "-"), "mono wrap"),
        ("reason", lambda r: _e(r["reason"]), "wrap")], "no messages yet")
    tickets = _table(data["tickets"], [
        ("alert key", lambda r: _e(r["alert_key"]), "mono wrap"),
        ("account", lambda r: _e(r["account_id"]), ""), ("title", lambda r: _e(r["title"]), "wrap"),
        ("age", lambda r: _e(views.fmt_age(r["age"])), "num"),
        ("occurrences", lambda r: _e(r["occurrences"]), "num")], "no open tickets")
    sources = _table(st.get("sources", []), [
        ("source", lambda r: _e(r["name"]), "mono"),
        ("connected", lambda r: "yes" + (" (IDLE)" if r["idle"] else "") if r["connected"]
         else "<b>no</b>", ""),
        ("last poll", lambda r: _t(r["last_poll"]), "t"),
        ("last error", lambda r: _e(red.redact(r["last_error"] or "")), "wrap")],
        "no sources reported")
    outbox_html = _table([{"state": k, "n": v} for k, v in outbox.items()], [
        ("outbox state", lambda r: _e(r["state"]), ""), ("rows", lambda r: _e(r["n"]), "num")], "")
    fails = data["failures"]
    failures = _table(fails["messages"], [
        ("#", lambda r: _e(r["id"]), "num"), ("when", lambda r: _t(r["updated_at"]), "t"),
        ("outcome", lambda r: _badge(r["outcome"]), ""),
        ("subject", lambda r: _e(r["subject"]), "wrap"),
        ("reason", lambda r: _e(r["reason"]), "wrap")], "no failed, rejected or quarantined"
                                                         " messages")
    if fails["dead_outbox"]:
        failures += '<h2 class="sub">Dead outbox rows</h2>' + _table(fails["dead_outbox"], [
            ("row", lambda r: _e(r["id"]), "num"), ("kind", lambda r: _e(r["kind"]), ""),
            ("action", lambda r: _e(r["action"]), ""),
            ("key", lambda r: _e(r["ordering_key"]), "mono wrap"),
            ("attempts", lambda r: _e(r["attempts"]), "num"),
            ("error", lambda r: _e(r["last_error"]), "wrap")], "")
    return _template().substitute(
        refresh=int(refresh), state=state, meta=_e(" · ".join(m for m in meta if m)),
        reasons=f'<ul class="reasons">{reasons}</ul>' if reasons else "",
        cards="".join(f'<div class="card{" alarm" if alarm else ""}"><div class="n">{_e(n)}</div>'
                      f'<div class="l">{_e(label)}</div></div>' for label, n, alarm in cards),
        chart=_chart(data["chart"]), messages=messages, tickets=tickets, sources=sources,
        outbox=outbox_html, failures=failures, generated=_e(views.fmt_time(now)),
        outcome_css="\n".join(f"  .o-{k} {{ background:{v}; }}" for k, v in COLOURS.items()))


# -- serving ----------------------------------------------------------------------------------

class WebServerError(RuntimeError):
    """The HTTP server could not start or stopped on its own."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGHUP/SIGINT; uvicorn must not take them over.
        yield


async def serve(app: ASGIApp, host: str, port: int, stop: asyncio.Event,
                on_listening: Callable[[int], None] | None = None) -> None:
    """Serve `app` until `stop` is set. The socket is bound here first, so a port in use raises
    OSError at once (uvicorn would call sys.exit inside the loop). `on_listening` gets the
    bound port (useful with port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            proxy_headers=False, server_header=False,
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
