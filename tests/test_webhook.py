"""WebhookTarget against a real local HTTP server with an OAuth2 token endpoint."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any, Iterator
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.config import OAuth2Settings, WebhookAuth, WebhookSettings
from bridge.deliver.http import HttpClient
from bridge.deliver.webhook import WebhookConfigError, WebhookTarget
from tests.fixtures.psa import AppServer

TEMPLATE = ('{"subject": "{title}", "body": "{summary}", "customer": "{account_id}", '
            '"group": "{product_group}", "type": "{alert_type}", "state": "{status}", '
            '"key": "{alert_key}", "ref": "{correlation_id}", "device": "{device}", '
            '"source": "mailbridge"}')
FIELDS = {"title": 'Disk "C:" 95% full\\ on web01\n', "summary": "Ünïcode ✓\t<b>&</b>",
          "account_id": "ACME-001", "product_group": "servers", "alert_type": "Disk Space",
          "status": "open", "alert_key": "ates:Kaseya:8932", "correlation_id": "c-1",
          "device": None}


class Receiver:
    """The far side: a hook endpoint and an OAuth2 token endpoint, both scriptable."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, str]] = []
        self.valid_tokens: set[str] = set()
        self.expires_in = 3600
        self.answers: list[Response] = []  # the hook's next answers, then 200
        self._serial = itertools.count(1)

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append(form)
        if form.get("client_secret") != "hook-secret":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = f"tok-{next(self._serial)}"
        self.valid_tokens.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer",
                             "expires_in": self.expires_in})

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.received.append({"path": request.url.path, "method": request.method,
                              "headers": dict(request.headers), "body": body})
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[7:] not in self.valid_tokens:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if self.answers:
            return self.answers.pop(0)
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/oauth/token", self.token, methods=["POST"]),
            Route("/hook/{rest:path}", self.hook, methods=["POST", "PUT", "PATCH"]),
        ])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, AppServer]]:
    rec = Receiver()
    with AppServer(rec.app()) as server:
        yield rec, server


def settings(server: AppServer, auth: WebhookAuth = WebhookAuth(), **kw: Any) -> WebhookSettings:
    values: dict[str, Any] = {"name": "ticketing", "url": f"{server.url}/hook/alerts",
                              "payload": TEMPLATE, "auth": auth, "timeout": 2.0}
    return WebhookSettings(**(values | kw))


def oauth(server: AppServer, secret: str = "hook-secret") -> WebhookAuth:
    return WebhookAuth(type="oauth2", oauth2=OAuth2Settings(
        token_url=f"{server.url}/oauth/token", client_id="mb", client_secret=secret,
        scope="tickets"))


async def test_payload_placeholders_are_json_escaped(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    target = WebhookTarget(settings(server, headers={"X-Source": "mailbridge"}))
    result = await target.send(FIELDS)
    await target.aclose()
    assert result.verdict == "ok" and result.status == 200
    (got,) = rec.received
    sent = json.loads(got["body"])
    assert sent == {"subject": FIELDS["title"], "body": FIELDS["summary"],
                    "customer": "ACME-001", "group": "servers", "type": "Disk Space",
                    "state": "open", "key": "ates:Kaseya:8932", "ref": "c-1", "device": "",
                    "source": "mailbridge"}
    assert got["headers"]["x-source"] == "mailbridge"
    assert got["headers"]["content-type"] == "application/json"
    assert "authorization" not in got["headers"]


async def test_method_and_url_placeholders(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    target = WebhookTarget(settings(server, method="PUT",
                                    url=f"{server.url}/hook/tickets/{{alert_key}}",
                                    headers={"Content-Type": "text/plain"}, payload="{title}"))
    assert (await target.send(FIELDS)).verdict == "ok"
    await target.aclose()
    (got,) = rec.received
    assert got["method"] == "PUT" and got["path"] == "/hook/tickets/ates:Kaseya:8932"
    assert got["headers"]["content-type"] == "text/plain"


def test_unknown_placeholder_is_a_config_error(receiver: tuple[Receiver, AppServer]) -> None:
    _, server = receiver
    with pytest.raises(WebhookConfigError, match=r"\{ticket_no\}"):
        WebhookTarget(settings(server, payload='{"x": "{ticket_no}"}'))
    with pytest.raises(WebhookConfigError, match="oauth2"):
        WebhookTarget(settings(server, auth=WebhookAuth(type="oauth2")))


async def test_basic_auth(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    auth = WebhookAuth(type="basic", username="mb", password="pa:ss")
    target = WebhookTarget(settings(server, auth=auth))
    assert (await target.send(FIELDS)).verdict == "ok"
    await target.aclose()
    header = rec.received[0]["headers"]["authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == b"mb:pa:ss"
    assert "pa:ss" not in repr(target) and "pa:ss" not in repr(target.settings)


async def test_oauth2_token_is_cached(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    target = WebhookTarget(settings(server, auth=oauth(server)))
    for _ in range(3):
        assert (await target.send(FIELDS)).verdict == "ok"
    await target.aclose()
    assert len(rec.token_requests) == 1
    assert rec.token_requests[0] == {"client_id": "mb", "grant_type": "client_credentials",
                                     "client_secret": "hook-secret", "scope": "tickets"}
    assert {r["headers"]["authorization"] for r in rec.received} == {"Bearer tok-1"}


async def test_oauth2_token_is_renewed_when_it_expires(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    # TokenProvider renews 60 s before expiry, so a 60-second token is stale at once.
    rec.expires_in = 60
    target = WebhookTarget(settings(server, auth=oauth(server)))
    for _ in range(2):
        assert (await target.send(FIELDS)).verdict == "ok"
    await target.aclose()
    assert len(rec.token_requests) == 2
    assert [r["headers"]["authorization"] for r in rec.received] == ["Bearer tok-1",
                                                                    "Bearer tok-2"]


async def test_oauth2_401_refreshes_once(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    target = WebhookTarget(settings(server, auth=oauth(server)))
    assert (await target.send(FIELDS)).verdict == "ok"
    rec.valid_tokens.clear()  # the server revoked every token
    result = await target.send(FIELDS)
    assert result.verdict == "ok"
    assert [r["headers"]["authorization"] for r in rec.received] == [
        "Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]

    # A server that refuses even the fresh token: one retry only, then permanent.
    rec.answers = [JSONResponse({}, status_code=401), JSONResponse({}, status_code=401)]
    before = len(rec.received)
    result = await target.send(FIELDS)
    await target.aclose()
    assert result.verdict == "permanent" and result.status == 401
    assert len(rec.received) - before == 2


async def test_token_endpoint_refusal_is_transient(receiver: tuple[Receiver, AppServer]) -> None:
    rec, server = receiver
    target = WebhookTarget(settings(server, auth=oauth(server, secret="wrong")))
    result = await target.send(FIELDS)
    await target.aclose()
    assert result.verdict == "transient" and "HTTP 401" in result.detail
    assert "wrong" not in result.detail and rec.received == []


@pytest.mark.parametrize("answer, verdict, retry_after", [
    (PlainTextResponse("oops", status_code=500), "transient", None),
    (PlainTextResponse("busy", status_code=503), "transient", None),
    (PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "30"}),
     "transient", 30.0),
    (PlainTextResponse("bad", status_code=400), "permanent", None),
    (PlainTextResponse("gone", status_code=410), "permanent", None),
    (PlainTextResponse("", status_code=204), "ok", None),
])
async def test_status_classes(receiver: tuple[Receiver, AppServer], answer: Response,
                              verdict: str, retry_after: float | None) -> None:
    rec, server = receiver
    rec.answers = [answer]
    target = WebhookTarget(settings(server))
    result = await target.send(FIELDS)
    await target.aclose()
    assert (result.verdict, result.status, result.retry_after) == (
        verdict, answer.status_code, retry_after)


async def test_unreachable_and_timeout_are_transient(receiver: tuple[Receiver, AppServer]) -> None:
    _, server = receiver
    target = WebhookTarget(settings(server, url="http://127.0.0.1:9/hook"))
    result = await target.send(FIELDS)
    assert result.verdict == "transient" and "ConnectError" in result.detail
    await target.aclose()

    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.3)  # the server being slow, not the test waiting
        return PlainTextResponse("late")

    with AppServer(Starlette(routes=[Route("/", slow, methods=["POST"])])) as sleepy:
        http = HttpClient(timeout=0.05)
        target = WebhookTarget(settings(sleepy, url=sleepy.url + "/"), http=http)
        result = await target.send(FIELDS)
        await http.aclose()
    assert result.verdict == "transient" and "Timeout" in result.detail
