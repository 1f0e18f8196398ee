"""The simulator's HTTP face: the four OEM API endpoints and the control endpoint.

API calls authenticate like the real platform: `sync` carries clientId, clientSecret and
organizationOemToken in its JSON body (seed 000); the GET endpoints carry the same three values
as request headers of those names, so no secret ends up in a URL or an access log. Every API
call first takes its injected faults (faults.py), is logged for `GET /_control/calls` (never
with its secrets), and is then answered by the engine. The control endpoints under `/_control`
are unauthenticated: the simulator is a test and demo tool meant for loopback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.psa_sim.engine import Reply, Simulator
from bridge.psa_sim.faults import DropConnection
from bridge.psa_sim.partner import PartnerConfig

SYNC_PATH = "/api/oem-alerts-api/alert/sync"
ALERTS_PATH = "/api/oem-alerts-api/alert"
INTEGRATIONS_PATH = "/api/oem-api/integration/list"
_PLAIN_FAILURES = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def create_app(partner: PartnerConfig, state_path: Path | None = None) -> Starlette:
    sim = Simulator(partner, state_path)

    async def sync(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        inner = body.get("data")
        data = inner if isinstance(inner, dict) else {}
        entry = {k: data.get(k) for k in ("incidentStatus", "accountId", "productGroup",
                                          "alertType", "title")}
        entry["correlationId"] = body.get("correlationId") or body.get("correlationID")

        def work() -> Reply:
            if not body:
                return Reply(400, {"statusCode": 400, "message": "Bad Request: body is not a "
                                   "JSON object", "error": "BadRequestException"},
                             outcome="bad-request")
            if not sim.authenticate(body.get("clientId"), body.get("clientSecret"),
                                    body.get("organizationOemToken")):
                return sim.unauthorized()
            return sim.sync(body)

        return await _api_call(sim, request, entry, work, faulty=True)

    async def list_alerts(request: Request) -> Response:
        status = request.query_params.get("status")
        return await _api_call(sim, request, {}, _authed(sim, request,
                               lambda: sim.list_tickets(status)))

    async def get_alert(request: Request) -> Response:
        cid = request.path_params["correlation_id"]
        return await _api_call(sim, request, {"correlationId": cid},
                               _authed(sim, request, lambda: sim.get_ticket(cid)))

    async def integrations(request: Request) -> Response:
        return await _api_call(sim, request, {}, _authed(sim, request, sim.list_integrations))

    async def control(request: Request) -> Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the control body is a JSON object")
            return JSONResponse(sim.control(changes))
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def control_state(request: Request) -> Response:
        return JSONResponse(sim.snapshot())

    async def control_calls(request: Request) -> Response:
        return JSONResponse(list(sim.calls))

    async def control_tickets(request: Request) -> Response:
        return JSONResponse([t.public() for t in sim.book.tickets.values()])

    app = _SimulatorApp(sync, routes=[
        Route(SYNC_PATH, sync, methods=["POST"]),
        Route(ALERTS_PATH, list_alerts, methods=["GET"]),
        Route(ALERTS_PATH + "/{correlation_id}", get_alert, methods=["GET"]),
        Route(INTEGRATIONS_PATH, integrations, methods=["GET"]),
        Route("/_control", control, methods=["POST"]),
        Route("/_control", control_state, methods=["GET"]),
        Route("/_control/calls", control_calls, methods=["GET"]),
        Route("/_control/tickets", control_tickets, methods=["GET"]),
    ])
    app.state.simulator = sim
    app.state.server_handle = None  # set by faults.attach_server when run under uvicorn
    return app


class _SimulatorApp(Starlette):
    """Starlette, except that POST …/alert/sync — the call a benchmark makes thousands of
    times — goes straight to its endpoint: Starlette's error and exception middleware, router
    and request wrapper took a third of the simulator's CPU per call, which a benchmark's
    mailbridge then lacks on the shared cores. uvicorn still answers 500 should it raise."""

    def __init__(self, sync: Callable[[Request], Awaitable[Response]], routes: list[Route]):
        super().__init__(routes=routes)
        self._sync = sync

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == SYNC_PATH and scope["method"] == "POST":
            scope["app"] = self
            response = await self._sync(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _authed(sim: Simulator, request: Request, answer: Callable[[], Reply]) -> Callable[[], Reply]:
    def work() -> Reply:
        h = request.headers
        if not sim.authenticate(h.get("clientId"), h.get("clientSecret"),
                                h.get("organizationOemToken")):
            return sim.unauthorized()
        return answer()
    return work


async def _api_call(sim: Simulator, request: Request, entry: dict[str, Any],
                    work: Callable[[], Reply], faulty: bool = False) -> Response:
    """Take injected faults, answer, and log the call."""
    faults = sim.faults
    record = sim.log_call({"at": time.time(), "method": request.method,
                           "path": request.scope["path"], **entry,
                           "status": None, "outcome": None, "fault": None})
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    faulty = faulty or faults.applies_to == "all"
    handle = getattr(request.app.state, "server_handle", None)

    if faulty and faults.take("drop_next"):
        record |= {"status": "dropped", "fault": "drop"}
        return DropConnection(handle)
    if faulty and faults.take("throttle_next"):
        record |= {"status": 429, "outcome": "throttled", "fault": "throttle"}
        return JSONResponse({"statusCode": 429, "message": "Too Many Requests"},
                            status_code=429, headers={"Retry-After": faults.retry_after})
    if faulty and faults.take("fail_next"):
        status = faults.fail_status
        record |= {"status": status, "outcome": "error", "fault": "fail"}
        if status in _PLAIN_FAILURES:
            # What a proxy in front of the platform says: not JSON at all.
            return PlainTextResponse(_PLAIN_FAILURES[status], status_code=status)
        if status == 500:
            return _json(sim.internal_error())
        return JSONResponse({"statusCode": status, "message": "injected failure"},
                            status_code=status)

    reply = work()
    record |= {"status": reply.status, "outcome": reply.outcome}
    if faulty and faults.take("fail_after_apply_next"):
        record["fault"] = "fail-after-apply"
        if faults.fail_after_apply == "drop":
            record["status"] = "dropped"
            return DropConnection(handle)
        record["status"] = 500
        return _json(sim.internal_error())
    return _json(reply)


def _json(reply: Reply) -> Response:
    if isinstance(reply.body, str):
        return PlainTextResponse(reply.body, status_code=reply.status, headers=reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
