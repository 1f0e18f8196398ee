"""The client of the MSPCentric OEM alerts API (seed 000): one sync call in, one verdict out.

`PsaClient.sync` builds the request strictly (credentials, integrationId, correlationId, the
incidentStatus that matches the action, title and summary cut on a character boundary), sends
it under a client-side rate limit, retries 429/5xx/timeouts/connection errors a few times in the
call with stamina (exponential backoff with jitter, Retry-After honoured up to a cap) and turns
whatever comes back — liberally: statusCode as int or string, `correlationID` or
`correlationId`, missing data, bodies that are not JSON — into a `PsaResult` whose `verdict`
tells the outbox what to do (docs/psa-api.md has the table). It never loops for long: when the
PSA is still failing after the in-call retries the verdict is `transient` and the durable outbox
reschedules. Secrets never leave this module except in the request itself: not in results,
exceptions, reprs or logs. The pure side (verdicts, result types, response interpretation,
Retry-After, truncation, redaction, the token bucket) is in `psa_wire`, re-exported here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping
from urllib.parse import quote

import stamina

from bridge.config import PsaSettings
from bridge.deliver.http import HttpClient, HttpFailure, HttpResponse
from bridge.deliver.psa_wire import (SECRET_KEYS, AlertLookup, IntegrationStatus, PsaResult,
                                     TokenBucket, Verdict, _first, _is_transient_status,
                                     _json_any, _json_object, _message_of, _status_detail,
                                     _truthy, interpret_sync_response, parse_retry_after,
                                     redact_payload, truncate)
from bridge.models import TicketCall

__all__ = ["ACTIONS", "SECRET_KEYS", "Action", "AlertLookup", "IntegrationStatus", "PsaClient",
           "PsaError", "PsaResult", "RetryPolicy", "TokenBucket", "Verdict",
           "interpret_sync_response", "parse_retry_after", "redact_payload", "truncate"]

SYNC_PATH = "/api/oem-alerts-api/alert/sync"
ALERTS_PATH = "/api/oem-alerts-api/alert"
INTEGRATIONS_PATH = "/api/oem-api/integration/list"
TITLE_MAX_CHARS = 255
ACTIONS = ("OPEN", "UPDATE", "RESOLVED")
Action = Literal["OPEN", "UPDATE", "RESOLVED"]


@dataclass(frozen=True)
class RetryPolicy:
    """In-call retries. Short on purpose: long outages are the outbox's job."""

    attempts: int = 3
    wait_initial: float = 0.5
    wait_max: float = 5.0
    wait_jitter: float = 0.5
    timeout: float = 30.0                 # all attempts of one call together
    max_inline_retry_after: float = 10.0  # a longer Retry-After goes back to the outbox at once
    max_retry_after: float = 3600.0       # the most a server may make us wait


class PsaError(Exception):
    """list_alerts() could not list; the message holds no secret."""


class _Transient(Exception):
    """A failed attempt that may succeed later. Its repr is safe to log (stamina logs it)."""

    def __init__(self, detail: str, status: int | None = None,
                 retry_after: float | None = None, message: str = "", inline: bool = True):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.message = message
        self.inline = inline  # worth retrying inside this call at all?

    def __repr__(self) -> str:
        return f"PsaTransient({self.detail!r})"


@dataclass
class _Exchange:
    response: HttpResponse | None
    failure: _Transient | None
    attempts: int


class PsaClient:
    def __init__(self, settings: PsaSettings, http: HttpClient | None = None, *,
                 retry: RetryPolicy = RetryPolicy()):
        self.settings = settings
        self.retry = retry
        self._base = settings.base_url.rstrip("/")
        self._own_http = http is None
        # One session whose connector keeps a connection per concurrent slot alive.
        self._http = http or HttpClient(settings.timeout, connections=settings.concurrency)
        self._bucket = TokenBucket(settings.rate_limit)
        self._secrets = [v for v in (settings.client_secret.get_secret_value(),
                                     settings.organization_oem_token.get_secret_value()) if v]

    def __repr__(self) -> str:
        return (f"PsaClient(base_url={self._base!r}, client_id={self.settings.client_id!r}, "
                f"integration_id={self.settings.integration_id!r})")

    async def __aenter__(self) -> PsaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- the sync call ----------------------------------------------------------------------

    def build_payload(self, action: Action, call: TicketCall,
                      correlation_id: str | None) -> dict[str, Any]:
        """The exact request body (with secrets: log it only through `redact_payload`). The
        core's neutral ticket call gets the MSPCentric wire names here, and only here."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        s = self.settings
        body: dict[str, Any] = {
            "clientId": s.client_id,
            "clientSecret": s.client_secret.get_secret_value(),
            "grantType": s.grant_type,
            "scope": s.scope,
            "organizationOemToken": s.organization_oem_token.get_secret_value(),
            "integrationId": s.integration_id,
        }
        if correlation_id:
            body["correlationId"] = correlation_id
        fields = {
            "title": truncate(_text(call.title), TITLE_MAX_CHARS),
            "summary": truncate(_text(call.summary), s.summary_max_chars),
            "alertType": _text(call.alert_type),
            "accountId": _text(call.account_id),
            "productGroup": _text(call.product_group),
            "incidentStatus": action,
        }
        if call.device:
            fields["device"] = truncate(_text(call.device), TITLE_MAX_CHARS)
        body["data"] = fields
        return body

    async def sync(self, action: Action, call: TicketCall,
                   correlation_id: str | None = None) -> PsaResult:
        """Create, append or resolve. OPEN without a correlation id gets a fresh UUID, so a
        retry of this very call can never make a second ticket."""
        if action == "OPEN" and not correlation_id:
            correlation_id = str(uuid.uuid4())
        if action != "OPEN" and not correlation_id:
            raise ValueError(f"{action} needs the ticket's correlationId")
        payload = self.build_payload(action, call, correlation_id)
        exchange = await self._exchange("POST", SYNC_PATH, json_body=payload)
        if exchange.failure is not None:
            f = exchange.failure
            return PsaResult(Verdict.TRANSIENT, f.status, self._scrub(f.message),
                             correlation_id, retry_after=f.retry_after,
                             detail=self._scrub(f.detail), attempts=exchange.attempts)
        assert exchange.response is not None
        resp = exchange.response
        result = interpret_sync_response(action, resp.status, resp.content, correlation_id)
        result = replace(result, attempts=exchange.attempts, message=self._scrub(result.message),
                         detail=self._scrub(result.detail))
        if result.verdict is Verdict.NOT_FOUND and action != "OPEN" and correlation_id:
            # The 404 does not say which cause; the ticket's own state does (SPEC §3.6).
            lookup = await self.get_alert(correlation_id)
            gone = None if lookup.state == "unknown" else not lookup.is_open
            result = replace(result, ticket_gone=gone)
        return result

    # -- the GET endpoints ------------------------------------------------------------------

    async def get_alert(self, correlation_id: str) -> AlertLookup:
        path = f"{ALERTS_PATH}/{quote(correlation_id, safe='')}"
        exchange = await self._exchange("GET", path, headers=self._auth_headers())
        if exchange.failure is not None:
            return AlertLookup("unknown", http_status=exchange.failure.status,
                               detail=self._scrub(exchange.failure.detail))
        assert exchange.response is not None
        resp = exchange.response
        if resp.status == 404:
            return AlertLookup("gone", http_status=404, detail="HTTP 404 ticket not found")
        body = _json_object(resp.content)
        if 200 <= resp.status < 300:
            ticket = body.get("data") if isinstance(body.get("data"), dict) else body
            return AlertLookup("found", ticket=ticket, http_status=resp.status)
        return AlertLookup("unknown", http_status=resp.status,
                           detail=self._scrub(_status_detail(resp.status, body, resp.content)))

    async def list_alerts(self) -> list[dict[str, Any]]:
        exchange = await self._exchange("GET", ALERTS_PATH, headers=self._auth_headers())
        if exchange.failure is not None:
            raise PsaError(f"cannot list tickets: {self._scrub(exchange.failure.detail)}")
        assert exchange.response is not None
        resp = exchange.response
        body = _json_any(resp.content)
        if not 200 <= resp.status < 300:
            detail = _status_detail(resp.status, body if isinstance(body, dict) else {},
                                    resp.content)
            raise PsaError(f"cannot list tickets: {self._scrub(detail)}")
        rows = body.get("data") if isinstance(body, dict) else body
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    async def integration_status(self) -> IntegrationStatus:
        exchange = await self._exchange("GET", INTEGRATIONS_PATH, headers=self._auth_headers())
        if exchange.failure is not None:
            return IntegrationStatus(False, False, False,
                                     f"PSA API unreachable: {self._scrub(exchange.failure.detail)}",
                                     exchange.failure.status)
        assert exchange.response is not None
        resp = exchange.response
        status = resp.status
        body = _json_any(resp.content)
        if status in (401, 403):
            return IntegrationStatus(True, False, False,
                                     f"credentials refused (HTTP {status})", status)
        if not 200 <= status < 300:
            detail = _status_detail(status, body if isinstance(body, dict) else {}, resp.content)
            return IntegrationStatus(True, True, False, self._scrub(detail), status)
        rows = body.get("data") if isinstance(body, dict) else body
        wanted = self.settings.integration_id
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            if str(_first(row, "id", "integrationId", "_id") or "") != wanted:
                continue
            active = _truthy(_first(row, "active", "isActive", "status"), default=True)
            alerting = _truthy(_first(row, "alertingEnabled", "alerting", "alertsEnabled"),
                               default=True)
            if not active:
                return IntegrationStatus(True, True, False,
                                         f"integration {wanted!r} is not active", status)
            if not alerting:
                return IntegrationStatus(True, True, False,
                                         f"alerting is disabled for integration {wanted!r}", status)
            return IntegrationStatus(True, True, True,
                                     f"integration {wanted!r} is active, alerting enabled", status)
        return IntegrationStatus(True, True, False, f"integration {wanted!r} not found", status)

    # -- transport --------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        return {"clientId": s.client_id, "clientSecret": s.client_secret.get_secret_value(),
                "organizationOemToken": s.organization_oem_token.get_secret_value()}

    def _backoff(self, exc: Exception) -> bool | float:
        """stamina's hook: retry this failure inside the call, and after how long?"""
        if not isinstance(exc, _Transient) or not exc.inline:
            return False
        if exc.retry_after is None:
            return True  # stamina's exponential backoff with jitter
        if exc.retry_after > self.retry.max_inline_retry_after:
            return False  # too long to hold a worker: the outbox reschedules instead
        return max(exc.retry_after, 0.0)

    async def _exchange(self, method: str, path: str, *, json_body: Any = None,
                        headers: Mapping[str, str] | None = None) -> _Exchange:
        # The first attempt goes outside stamina: setting up its retry context (tenacity's
        # state, the hooks) for every call was ~5 % of a backlog drain's CPU, and nearly every
        # call succeeds at once. Only a failure worth retrying enters stamina, which replays
        # that failure as its own first attempt: backoff, hooks, attempts and the overall
        # timeout are exactly what they were with every attempt inside it.
        p = self.retry
        started = time.monotonic()
        try:
            return _Exchange(await self._attempt(method, path, json_body, headers), None, 1)
        except _Transient as exc:
            first: _Transient | None = exc
        assert first is not None
        if not self._backoff(first):  # as stamina would: no retry
            return _Exchange(None, first, 1)
        remaining = max(p.timeout - (time.monotonic() - started), 0.0)
        attempts = 1
        try:
            async for attempt in stamina.retry_context(
                    on=self._backoff, attempts=p.attempts, timeout=remaining,
                    wait_initial=p.wait_initial, wait_max=p.wait_max,
                    wait_jitter=p.wait_jitter):
                with attempt:
                    if first is not None:  # stamina's attempt 1: the one already made
                        failure, first = first, None
                        raise failure
                    attempts += 1
                    resp = await self._attempt(method, path, json_body, headers)
                    return _Exchange(resp, None, attempts)
        except _Transient as exc:
            return _Exchange(None, exc, attempts)
        raise AssertionError("unreachable")

    async def _attempt(self, method: str, path: str, json_body: Any,
                       headers: Mapping[str, str] | None) -> HttpResponse:
        await self._bucket.take()
        try:
            resp = await self._http.request(method, self._base + path, json=json_body,
                                            headers=headers)
        except HttpFailure as exc:  # its detail names no part of the request (the secrets)
            if exc.permanent:
                raise _Transient(f"invalid PSA base_url {self._base!r}", inline=False) from None
            raise _Transient(exc.detail) from None
        if _is_transient_status(resp.status):
            body = _json_object(resp.content)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"),
                                            cap=self.retry.max_retry_after)
            raise _Transient(_status_detail(resp.status, body, resp.content),
                             status=resp.status, retry_after=retry_after,
                             message=_message_of(body, resp.content))
        return resp

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _text(value: str) -> str:
    # Lone surrogates (from undecodable mail) cannot be sent as UTF-8 JSON.
    return value.encode("utf-8", "replace").decode("utf-8")
