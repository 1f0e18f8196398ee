"""The pure side of the PSA client: what a sync answer means, without any I/O.

`Verdict` and the result types (`PsaResult`, `AlertLookup`, `IntegrationStatus`),
`interpret_sync_response` (a sync answer to a verdict, liberally: statusCode as int or string,
`correlationID` or `correlationId`, missing data, bodies that are not JSON), the status and
message helpers, `parse_retry_after`, `truncate` (on a character boundary), `redact_payload`
(secrets masked for logs and audit) and the `TokenBucket` rate limit. `bridge.deliver.psa`
(`PsaClient`) builds on these and re-exports the public names.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import unicodedata
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Mapping

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


# -- pure helpers ---------------------------------------------------------------------------


def interpret_sync_response(action: str, http_status: int, content: bytes | str,
                            sent_correlation_id: str | None) -> PsaResult:
    """Turn a sync answer into a verdict, liberally (the seed's examples disagree)."""
    body = _json_object(content)
    inner = body.get("data")
    data = inner if isinstance(inner, dict) else {}
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
