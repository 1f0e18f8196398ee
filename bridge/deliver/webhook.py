"""A generic webhook target, for PSAs other than MSPCentric (seed 004's integration events).

The admin configures method, URL, headers and a payload template with `{placeholders}` over the
alert's fields (`PLACEHOLDERS`); substituted values are JSON-string-escaped (a quote or newline
in a subject cannot break a JSON template) and percent-encoded in the URL. Authentication is
NONE, BASIC, or OAuth2 client credentials through `bridge.auth.oauth2.TokenProvider` (token cached;
a 401 invalidates it and the call is tried once more with a fresh one). One `send` is one
attempt — retries belong to the outbox: 2xx → ok; 408/429/5xx, timeouts, connection errors and
an unreachable token endpoint → transient; any other 4xx → permanent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping
from urllib.parse import quote

from bridge.auth.oauth2 import OAuth2Error, TokenProvider
from bridge.config import WebhookSettings
from bridge.deliver.http import HttpClient, HttpFailure
from bridge.deliver.psa import parse_retry_after

PLACEHOLDERS = frozenset({"title", "summary", "account_id", "product_group", "alert_type",
                          "status", "alert_key", "correlation_id", "device"})
# Only `{name}` with a plain identifier is a placeholder: the braces of a JSON object never
# match, because they always enclose quotes, colons or whitespace.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class WebhookConfigError(ValueError):
    """A webhook definition that cannot work (unknown placeholder, missing OAuth2 settings)."""


@dataclass(frozen=True)
class WebhookResult:
    verdict: Literal["ok", "transient", "permanent"]
    status: int | None
    detail: str
    retry_after: float | None = None


class WebhookTarget:
    def __init__(self, settings: WebhookSettings, http: HttpClient | None = None):
        self.settings = settings
        for where, text in (("payload", settings.payload), ("url", settings.url)):
            unknown = sorted(set(_PLACEHOLDER.findall(text)) - PLACEHOLDERS)
            if unknown:
                raise WebhookConfigError(
                    f"webhook {settings.name!r}: unknown placeholder {{{unknown[0]}}} in {where}; "
                    f"known: {', '.join(sorted(PLACEHOLDERS))}")
        auth = settings.auth
        if auth.type == "oauth2" and auth.oauth2 is None:
            raise WebhookConfigError(f"webhook {settings.name!r}: auth type oauth2 needs [oauth2]")
        if auth.type == "basic" and not auth.username:
            raise WebhookConfigError(f"webhook {settings.name!r}: auth type basic needs username")
        self._own_http = http is None
        self._http = http or HttpClient(settings.timeout)
        self._tokens = (TokenProvider(auth.oauth2, client=self._http)
                        if auth.type == "oauth2" and auth.oauth2 else None)

    def __repr__(self) -> str:
        return f"WebhookTarget(name={self.settings.name!r}, url={self.settings.url!r})"

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def render(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        """The URL and body this alert would be sent with."""
        def value(name: str) -> str:
            v = fields.get(name)
            return "" if v is None else str(v)

        body = _PLACEHOLDER.sub(lambda m: json.dumps(value(m.group(1)), ensure_ascii=False)[1:-1],
                                self.settings.payload)
        url = _PLACEHOLDER.sub(lambda m: quote(value(m.group(1)), safe=""), self.settings.url)
        return url, body

    async def send(self, fields: Mapping[str, Any]) -> WebhookResult:
        url, body = self.render(fields)
        headers = dict(self.settings.headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        result = await self._send_once(url, body, headers)
        if result.status == 401 and self._tokens is not None:
            # The token may have been revoked or expired early: one more try with a new one.
            self._tokens.invalidate()
            result = await self._send_once(url, body, headers)
        return result

    async def _send_once(self, url: str, body: str, headers: dict[str, str]) -> WebhookResult:
        auth: tuple[str, str] | None = None
        settings = self.settings.auth
        if settings.type == "basic":
            password = settings.password.get_secret_value() if settings.password else ""
            auth = (settings.username or "", password)
        elif self._tokens is not None:
            try:
                token = await self._tokens.token()
            except OAuth2Error as exc:
                # Fixable by the admin or the token server coming back: hold, do not drop.
                return WebhookResult("transient", None, str(exc)[:240])
            headers = headers | {"Authorization": f"Bearer {token}"}
        try:
            resp = await self._http.request(self.settings.method, url,
                                            content=body.encode("utf-8"), headers=headers,
                                            basic_auth=auth)
        except HttpFailure as exc:
            if exc.permanent:
                return WebhookResult("permanent", None,
                                     f"invalid webhook URL for {self.settings.name!r}")
            return WebhookResult("transient", None, exc.detail)
        status = resp.status
        detail = f"HTTP {status} {' '.join(resp.text.split())[:160]}".strip()
        if 200 <= status < 300:
            return WebhookResult("ok", status, detail)
        if status in (408, 425, 429) or status >= 500:
            return WebhookResult("transient", status, detail,
                                 parse_retry_after(resp.headers.get("Retry-After")))
        return WebhookResult("permanent", status, detail)
