"""OAuth2 access tokens from a token endpoint (client credentials or a refresh token).

Used for IMAP/SMTP XOAUTH2 (Microsoft 365, Gmail) and for webhook targets. The token is cached
until shortly before it expires; `invalidate()` forces a new one after the server refused it.
"""

from __future__ import annotations

import asyncio
import json
import time

from bridge.config import OAuth2Settings
from bridge.deliver.http import HttpClient, HttpFailure


class OAuth2Error(Exception):
    """The token endpoint refused or could not be reached; the message holds no secret."""


class TokenProvider:
    def __init__(self, settings: OAuth2Settings, client: HttpClient | None = None,
                 skew: float = 60.0):
        self.settings = settings
        self._client = client
        self._skew = skew
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at - self._skew:
                return self._token
            self._token, lifetime = await self._fetch()
            self._expires_at = time.monotonic() + lifetime
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        s = self.settings
        form = {"client_id": s.client_id}
        if s.refresh_token is not None:
            form |= {"grant_type": "refresh_token",
                     "refresh_token": s.refresh_token.get_secret_value()}
        else:
            form["grant_type"] = "client_credentials"
        if s.client_secret is not None:
            form["client_secret"] = s.client_secret.get_secret_value()
        if s.scope:
            form["scope"] = s.scope
        client = self._client or HttpClient(timeout=15.0, connections=1)
        try:
            resp = await client.request("POST", s.token_url, data=form)
        except HttpFailure as exc:
            kind = exc.detail.split(":", 1)[0]
            raise OAuth2Error(f"token endpoint {s.token_url} unreachable: {kind}") from None
        finally:
            if self._client is None:
                await client.aclose()
        if resp.status != 200:
            raise OAuth2Error(f"token endpoint {s.token_url} answered HTTP {resp.status}")
        try:
            body = json.loads(resp.content)
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise OAuth2Error(f"token endpoint {s.token_url} sent no access_token") from None
        return token, float(body.get("expires_in", 3600))


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"
