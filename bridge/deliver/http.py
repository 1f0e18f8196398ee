"""The HTTP client of the PSA, webhook and OAuth2 calls: aiohttp, behind one small interface.

aiohttp costs the client about a sixth of httpx's CPU per small JSON POST on a kept connection
(bench/http_clients.py: ~100 µs against ~620 µs per request, 64 kept connections; before the
switch the HTTP layers were a fifth of a backlog drain's CPU, docs/performance.md).

`HttpClient` holds one aiohttp session, whose connector keeps up to `connections` connections
alive (and makes further requests wait for one). The session is made on first use, inside the
running event loop: parts are assembled off the loop (a reload runs `assemble` in a thread).
`request` returns an `HttpResponse` — status, headers, the whole body — so no caller holds a
live response. A peer that cannot be reached raises `HttpFailure`, whose `detail` names the kind
of failure (ConnectError, Timeout, …) and never the request (its headers and body carry
credentials); `permanent` marks what retrying cannot fix (an invalid URL). TLS verifies against
the system's trust store, as the SMTP client does.
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
from dataclasses import dataclass
from typing import Any, Mapping

import aiohttp


@dataclass(frozen=True)
class HttpResponse:
    status: int
    content: bytes
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class HttpFailure(Exception):
    """The request got no answer; `detail` is safe to log and to store."""

    def __init__(self, detail: str, permanent: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"HttpFailure({self.detail!r})"


_JSON_HEADERS = {"Content-Type": "application/json"}


def _encode_json(value: Any) -> bytes:
    # As httpx sent it: compact, UTF-8 (not \u escapes), no NaN.
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")


class HttpClient:
    def __init__(self, timeout: float, connections: int = 100):
        self.timeout = timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def request(self, method: str, url: str, *, json: Any = None,
                      data: Mapping[str, str] | None = None, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None,
                      basic_auth: tuple[str, str] | None = None) -> HttpResponse:
        """One request, its whole answer read. `json`: a body encoded as JSON; `data`: a form."""
        body: bytes | aiohttp.FormData | None = content
        if json is not None and headers is None and basic_auth is None:
            # The PSA's sync call: nothing to merge (aiohttp copies the headers it is given).
            return await self._send(method, url, _encode_json(json), _JSON_HEADERS)
        hdrs = dict(headers or {})
        if json is not None:
            body = _encode_json(json)
            if not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
        elif data is not None:
            body = aiohttp.FormData(dict(data))
        if basic_auth is not None:  # UTF-8, as httpx encoded it
            pair = base64.b64encode(":".join(basic_auth).encode("utf-8")).decode("ascii")
            hdrs["Authorization"] = f"Basic {pair}"
        return await self._send(method, url, body, hdrs)

    async def _send(self, method: str, url: str, body: bytes | aiohttp.FormData | None,
                    headers: Mapping[str, str]) -> HttpResponse:
        try:
            async with self._open().request(method, url, data=body, headers=headers,
                                            allow_redirects=True) as resp:
                return HttpResponse(resp.status, await resp.read(), resp.headers)
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise HttpFailure(f"InvalidURL: {type(exc).__name__}", permanent=True) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise HttpFailure(f"Timeout: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise HttpFailure(f"ConnectError: {str(exc)[:160]}") from None
        except aiohttp.ClientError as exc:
            raise HttpFailure(f"{type(exc).__name__}: {str(exc)[:160]}".rstrip(": ")) from None

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
