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
exceptions, reprs or logs.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import unicodedata
import uuid
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Mapping
from urllib.parse import quote

import httpx
import stamina

from bridge.config import PsaSettings

SYNC_PATH = "/api/oem-alerts-api/alert/sync"
ALERTS_PATH = "/api/oem-alerts-api/alert"
INTEGRATIONS_PATH = "/api/oem-api/integration/list"
TITLE_MAX_CHARS = 255
ACTIONS = ("OPEN", "UPDATE", "RESOLVED")
Action = Literal["OPEN", "UPDATE", "RESOLVED"]
DATA_KEYS = ("title", "summary", "alertType", "accountId", "productGroup")
# Request keys whose values are never shown anywhere (logs, audit, `simulate`).
SECRET_KEYS = frozenset({"clientSecret", "organizationOemToken", "password", "token",
                         "accessToken", "access_token", "refresh_token", "client_secret"})
# Messages that say nothing about the cause; the real cause is then in `error`/`detail`.
_GENERIC_MESSAGES = frozenset({"", "failed", "error", "fail", "not found", "conflict"})


class Verdict(str, enum.Enum):
    """What a sync call came to; the outbox acts on it (docs/psa-api.md)."""

    CREATED = "created"
    UPDATED = "updated"
    CLOSED = "closed"
    SUPPRESSED = "suppressed"
    NOT_FOUND = "not_found"    # 404: permanent for this alert
    CONFLICT = "conflict"      # 409 (not "suppressed"): integration inactive / alerting off
    AUTH = "auth"              # 401/403: credentials refused
    REJECTED = "rejected"      # any other 4xx (e.g. 400): the request itself is wrong
    TRANSIENT = "transient"    # 429/5xx/timeout/connection error after the in-call retries


@dataclass(frozen=True)
class PsaResult:
    """The outcome of one `sync`. `detail` is short and never holds a secret.

    `correlation_id` is the PSA's (it may differ from the one sent when the partner's
    de-duplication folded the alert into an open ticket). `retry_after` is the delay in seconds
    the PSA asked for, if any. `ticket_gone` is set for a 404 on UPDATE/RESOLVED after asking
    GET …/alert/{correlationId}: True when the ticket no longer exists or is closed, False when
    it is still open, None when that could not be found out.
    """

    verdict: Verdict
    http_status: int | None
    message: str
    correlation_id: str | None
    psa_message_id: str | None = None
    retry_after: float | None = None
    detail: str = ""
    attempts: int = 1
    ticket_gone: bool | None = None


@dataclass(frozen=True)
class AlertLookup:
    """GET …/alert/{correlationId}: `found` (with the ticket), `gone` (404), or `unknown`."""

    state: Literal["found", "gone", "unknown"]
    ticket: Mapping[str, Any] | None = None
    http_status: int | None = None
    detail: str = ""

    @property
    def is_open(self) -> bool:
        status = str((self.ticket or {}).get("status", "open")).lower()
        return self.state == "found" and status not in ("closed", "resolved")


@dataclass(frozen=True)
class IntegrationStatus:
    """GET …/integration/list, seen for our integrationId."""

    reachable: bool
    authorized: bool
    alerting_enabled: bool
    message: str
    http_status: int | None = None


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


class TokenBucket:
    """A small async token bucket: `rate` calls per second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        # Holding the lock while waiting keeps callers in arrival order.
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
                self._tokens = 1.0
                self._stamp = time.monotonic()
            self._tokens -= 1.0


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
    response: httpx.Response | None
    failure: _Transient | None
    attempts: int


class PsaClient:
    def __init__(self, settings: PsaSettings, http: httpx.AsyncClient | None = None, *,
                 retry: RetryPolicy = RetryPolicy()):
        self.settings = settings
        self.retry = retry
        self._base = settings.base_url.rstrip("/")
        self._own_http = http is None
        # One single-connection client per concurrent slot, handed out through a queue: the
        # slot limit and the connection are the same thing. (httpx's shared pool checks every
        # pooled connection with a poll() on each request — a third of the client's CPU.)
        if http is not None:
            self._all_clients = [http] * settings.concurrency
        else:
            tls = httpx.create_ssl_context()  # one context for all: each costs ~1 MB and a CA load
            self._all_clients = [
                httpx.AsyncClient(timeout=settings.timeout, verify=tls,
                                  limits=httpx.Limits(max_connections=1,
                                                      max_keepalive_connections=1))
                for _ in range(settings.concurrency)]
        self._clients: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._all_clients:
            self._clients.put_nowait(client)
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
            for client in self._all_clients:
                await client.aclose()

    # -- the sync call ----------------------------------------------------------------------

    def build_payload(self, action: Action, data: Mapping[str, Any],
                      correlation_id: str | None) -> dict[str, Any]:
        """The exact request body (with secrets: log it only through `redact_payload`)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        missing = [k for k in DATA_KEYS if data.get(k) is None]
        if missing:
            raise ValueError(f"sync data lacks {', '.join(missing)}")
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
            "title": truncate(_text(data["title"]), TITLE_MAX_CHARS),
            "summary": truncate(_text(data["summary"]), s.summary_max_chars),
            "alertType": _text(data["alertType"]),
            "accountId": _text(data["accountId"]),
            "productGroup": _text(data["productGroup"]),
            "incidentStatus": action,  # the action decides, whatever `data` said
        }
        if data.get("device"):
            fields["device"] = truncate(_text(data["device"]), TITLE_MAX_CHARS)
        body["data"] = fields
        return body

    async def sync(self, action: Action, data: Mapping[str, Any],
                   correlation_id: str | None = None) -> PsaResult:
        """Create, append or resolve. OPEN without a correlation id gets a fresh UUID, so a
        retry of this very call can never make a second ticket."""
        if action == "OPEN" and not correlation_id:
            correlation_id = str(uuid.uuid4())
        if action != "OPEN" and not correlation_id:
            raise ValueError(f"{action} needs the ticket's correlationId")
        payload = self.build_payload(action, data, correlation_id)
        exchange = await self._exchange("POST", SYNC_PATH, json_body=payload)
        if exchange.failure is not None:
            f = exchange.failure
            return PsaResult(Verdict.TRANSIENT, f.status, self._scrub(f.message),
                             correlation_id, retry_after=f.retry_after,
                             detail=self._scrub(f.detail), attempts=exchange.attempts)
        assert exchange.response is not None
        resp = exchange.response
        result = interpret_sync_response(action, resp.status_code, resp.content, correlation_id)
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
        if resp.status_code == 404:
            return AlertLookup("gone", http_status=404, detail="HTTP 404 ticket not found")
        body = _json_object(resp.content)
        if 200 <= resp.status_code < 300:
            ticket = body.get("data") if isinstance(body.get("data"), dict) else body
            return AlertLookup("found", ticket=ticket, http_status=resp.status_code)
        return AlertLookup("unknown", http_status=resp.status_code,
                           detail=self._scrub(_status_detail(resp.status_code, body, resp.content)))

    async def list_alerts(self) -> list[dict[str, Any]]:
        exchange = await self._exchange("GET", ALERTS_PATH, headers=self._auth_headers())
        if exchange.failure is not None:
            raise PsaError(f"cannot list tickets: {self._scrub(exchange.failure.detail)}")
        assert exchange.response is not None
        resp = exchange.response
        body = _json_any(resp.content)
        if not 200 <= resp.status_code < 300:
            detail = _status_detail(resp.status_code, body if isinstance(body, dict) else {},
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
        status = resp.status_code
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
        p = self.retry
        attempts = 0
        try:
            async for attempt in stamina.retry_context(
                    on=self._backoff, attempts=p.attempts, timeout=p.timeout,
                    wait_initial=p.wait_initial, wait_max=p.wait_max,
                    wait_jitter=p.wait_jitter):
                with attempt:
                    attempts += 1
                    resp = await self._attempt(method, path, json_body, headers)
                    return _Exchange(resp, None, attempts)
        except _Transient as exc:
            return _Exchange(None, exc, attempts)
        raise AssertionError("unreachable")

    async def _attempt(self, method: str, path: str, json_body: Any,
                       headers: Mapping[str, str] | None) -> httpx.Response:
        await self._bucket.take()
        client = await self._clients.get()
        try:
            try:
                resp = await client.request(method, self._base + path, json=json_body,
                                            headers=headers)
            except httpx.TransportError as exc:
                # `from None`: the httpx exception holds the request, and with it the secrets.
                permanent = isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))
                raise _Transient(f"{type(exc).__name__}: {str(exc)[:160]}".rstrip(": "),
                                 inline=not permanent) from None
            except httpx.InvalidURL:
                raise _Transient(f"invalid PSA base_url {self._base!r}", inline=False) from None
        finally:
            self._clients.put_nowait(client)
        if _is_transient_status(resp.status_code):
            body = _json_object(resp.content)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"),
                                            cap=self.retry.max_retry_after)
            raise _Transient(_status_detail(resp.status_code, body, resp.content),
                             status=resp.status_code, retry_after=retry_after,
                             message=_message_of(body, resp.content))
        return resp

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


# -- pure helpers ---------------------------------------------------------------------------


def interpret_sync_response(action: str, http_status: int, content: bytes | str,
                            sent_correlation_id: str | None) -> PsaResult:
    """Turn a sync answer into a verdict, liberally (the seed's examples disagree)."""
    body = _json_object(content)
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    correlation_id = _first_str(data, body, keys=("correlationID", "correlationId",
                                                  "correlationid", "correlation_id"))
    message_id = _first_str(data, body, keys=("messageId", "messageID", "message_id"))
    message = _message_of(body, content)
    status = http_status
    code = _as_int(body.get("statusCode"))
    if 200 <= http_status < 300 and code is not None and code >= 400:
        status = code  # an error wrapped in a 2xx: believe the body
    word = message.lower()
    if 200 <= status < 300:
        if "suppress" in word:
            verdict = Verdict.SUPPRESSED
        elif any(w in word for w in ("closed", "resolved", "healed")):
            verdict = Verdict.CLOSED
        elif any(w in word for w in ("updated", "appended")):
            verdict = Verdict.UPDATED
        elif "created" in word:
            verdict = Verdict.CREATED
        else:  # a bare 2xx: it did what was asked
            verdict = {"OPEN": Verdict.CREATED, "UPDATE": Verdict.UPDATED}.get(action, Verdict.CLOSED)
    elif status == 409:
        verdict = Verdict.SUPPRESSED if "suppress" in word else Verdict.CONFLICT
    elif status in (401, 403):
        verdict = Verdict.AUTH
    elif status == 404:
        verdict = Verdict.NOT_FOUND
    elif _is_transient_status(status):
        verdict = Verdict.TRANSIENT
    else:
        verdict = Verdict.REJECTED
    return PsaResult(verdict, http_status, message,
                     correlation_id or sent_correlation_id, message_id,
                     detail=_status_detail(status, body, content))


def parse_retry_after(value: str | None, cap: float = 3600.0,
                      now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date; capped; None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


def truncate(text: str, limit: int) -> str:
    """Cut to at most `limit` characters, ending in "…" when cut, never inside a character
    (nor between a character and its combining marks)."""
    if len(text) <= limit:
        return text
    cut = limit - 1
    while cut > 0 and unicodedata.combining(text[cut]):
        cut -= 1
    return text[:cut] + "…"


def redact_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a request body fit for logs and audit: secrets masked, long text shortened."""
    def clean(value: Any, key: str = "") -> Any:
        if key in SECRET_KEYS:
            return "***" if value else value
        if isinstance(value, Mapping):
            return {k: clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and key == "summary" and len(value) > 200:
            return f"{value[:200]}… ({len(value)} chars)"
        return value
    return clean(payload)


def _text(value: Any) -> str:
    # Lone surrogates (from undecodable mail) cannot be sent as UTF-8 JSON.
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _is_transient_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


def _json_any(content: bytes | str) -> Any:
    try:
        return json.loads(content)
    except (ValueError, TypeError):
        return None


def _json_object(content: bytes | str) -> dict[str, Any]:
    body = _json_any(content)
    return body if isinstance(body, dict) else {}


def _message_of(body: Mapping[str, Any], content: bytes | str) -> str:
    message = body.get("message")
    message = message.strip() if isinstance(message, str) else ""
    if message.lower() in _GENERIC_MESSAGES:
        for key in ("error", "detail", "errors", "error_description"):
            extra = body.get(key)
            if isinstance(extra, str) and extra.strip():
                message = extra.strip()
                break
    if not message and not body:
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        message = " ".join(text.split())[:120]
    return message[:300]


def _status_detail(status: int, body: Mapping[str, Any], content: bytes | str) -> str:
    message = _message_of(body, content)
    return f"HTTP {status} {message}".strip()[:240]


def _first_str(*sources: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                return str(value)
    return None


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    return next((row[k] for k in keys if k in row), None)


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on", "active", "enabled")
    return bool(value)


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
