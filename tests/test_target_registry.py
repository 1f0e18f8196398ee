"""Delivery targets as a registry by kind and instance (issue 12, "Typed seams").

PSA, SMTP, webhooks and IMAP moves are entries of `Delivery.targets`; each renders the exact
request it would send without sending it (checked against the real PSA simulator and aiosmtpd:
nothing arrives); a row whose target is not in the registry is held with the reason, not
dropped, and goes out once a reload brings its target back (a real HTTP receiver).
"""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.config import WebhookSettings, settings_from_dict
from bridge.deliver.imap_target import ImapMoveTarget
from bridge.deliver.mail_target import MailTarget
from bridge.deliver.outbox import HOLD_DELAY, Delivery
from bridge.deliver.peers import Peers
from bridge.deliver.psa import PsaClient
from bridge.deliver.psa_target import PsaTarget
from bridge.deliver.smtp import SmtpSender
from bridge.deliver.webhook import WebhookTarget
from bridge.deliver.webhook_target import HookTarget
from bridge.models import OutboxItem, RawMessage
from bridge.operator.httpserve import ThreadedServer
from bridge.store import AsyncStore, Store
from bridge.store.db import OutboxRow

NOW = 1_000_000.0
PSA_DATA = {"title": "web01 down", "summary": "ping failed", "alert_type": "Host Down",
            "account_id": "ACME-001", "product_group": "servers"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Mailbox:
    """Stands in for an IMAP source: only its name matters until a move is sent."""

    async def refile(self, message_id: str, folder: str) -> int:
        raise AssertionError("render must not move anything")


def hook_settings(name: str, url: str) -> WebhookSettings:
    return WebhookSettings(name=name, url=url + "/hook/{alert_key}",
                           payload='{"title": "{title}", "status": "{status}"}')


@pytest.fixture
def store(tmp_path):
    clock = Clock()
    s = Store(tmp_path / "mb.db", clock=clock)
    a = AsyncStore(s)
    yield s, a, clock
    a.close()


async def test_psa_webhook_smtp_and_imap_move_are_registry_entries_that_render(
        store, psa_sim, smtp_sink):
    sync, astore, clock = store
    settings = settings_from_dict({"smtp": {"host": "127.0.0.1", "port": smtp_sink.port,
                                            "security": "none",
                                            "from_address": "alerts@msp.example"}})
    psa = PsaClient(psa_sim.settings())
    hook = WebhookTarget(hook_settings("ops", "http://127.0.0.1:9"))
    delivery = Delivery(astore, settings, psa=psa, smtp=SmtpSender(settings.smtp),
                        webhooks={"ops": hook}, mailboxes={"imap:main": Mailbox()},
                        clock=clock)
    try:
        kinds = {key: type(t) for key, t in delivery.targets.items()}
        assert kinds == {"psa:default": PsaTarget, "smtp:default": MailTarget,
                         "webhook:ops": HookTarget, "imap:default": ImapMoveTarget}
        assert all(key == f"{t.kind}:{t.name}" for key, t in delivery.targets.items())

        psa_row = OutboxRow(1, "psa", "acme:web01", None, "OPEN", "cid-1", PSA_DATA, 1)
        shown = await delivery.render(psa_row)
        body = shown["request"]
        assert body["correlationId"] == "cid-1" and body["data"]["incidentStatus"] == "OPEN"
        assert body["data"]["title"] == "web01 down"
        creds = psa_sim.partner.credentials
        text = json.dumps(shown)
        assert creds.client_secret not in text and creds.organization_oem_token not in text
        assert body["clientSecret"] != creds.client_secret

        hook_row = OutboxRow(2, "webhook", "webhook:ops:k", None, "OPEN", "cid-1",
                             {"target": "ops", "fields": {"title": 'C: "full"',
                                                          "status": "OPEN",
                                                          "alert_key": "a/b"}}, 1)
        assert await delivery.render(hook_row) == {
            "kind": "webhook", "target": "ops", "method": "POST",
            "url": "http://127.0.0.1:9/hook/a%2Fb",
            "body": '{"title": "C: \\"full\\"", "status": "OPEN"}'}

        mail_row = OutboxRow(3, "smtp", "admin", None, "admin-alert", None,
                             {"type": "admin-alert", "to": "admin@msp.example",
                              "subject": "disk full", "text": "the store's disk is full"}, 1)
        mail = await delivery.render(mail_row)
        assert mail["envelope"] == {"from": "alerts@msp.example", "to": ["admin@msp.example"]}
        assert ["Subject", "[mailbridge] disk full"] in mail["headers"]

        ref = sync.stage(RawMessage(b"Message-ID: <m1@acme.example>\r\n\r\nx", "imap:main",
                                    "1", NOW)).id
        move_row = OutboxRow(4, "imap", "imap", ref, None, None,
                             {"source": "imap:main", "folder": "Regular"}, 1)
        assert await delivery.render(move_row) == {
            "kind": "imap", "source": "imap:main", "folder": "Regular",
            "message_id": "<m1@acme.example>"}
        # Rendering sent nothing anywhere.
        assert psa_sim.calls(None) == [] and smtp_sink.messages == []
    finally:
        await delivery.aclose()


async def test_without_a_psa_there_is_no_psa_entry_and_its_rows_wait_unclaimed(store):
    _, astore, clock = store
    delivery = Delivery(astore, settings_from_dict({}), clock=clock)
    assert set(delivery.targets) == {"smtp:default", "imap:default"}
    assert "psa" not in delivery._kinds() and "webhook" in delivery._kinds()


def receiver() -> tuple[ThreadedServer, list[dict]]:
    got: list[dict] = []

    async def hook(request: Request):
        got.append({"path": request.url.path, "body": json.loads(await request.body())})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook/{key}", hook, methods=["POST"])])
    return ThreadedServer(app).start(), got


async def test_a_row_whose_target_is_not_configured_is_held_with_the_reason(store):
    sync, astore, clock = store
    settings = settings_from_dict({})
    ref = sync.stage(RawMessage(b"Message-ID: <m2@acme.example>\r\n\r\nx", "pipe", None,
                                NOW)).id
    fields = {"title": "web01 down", "status": "OPEN", "alert_key": "acme:web01"}
    hook_id = sync.enqueue(OutboxItem("webhook", "webhook:halo:acme:web01",
                                      {"target": "halo", "fields": fields}, "OPEN"), ref)
    # A kind this version cannot deliver (a newer version's, say).
    pager = OutboxItem("pager", "pager:acme:web01", {"to": "+1", "n": 1}, "OPEN")  # type: ignore
    pager_id = sync.enqueue(pager, ref)
    delivery = Delivery(astore, settings, clock=clock)
    try:
        assert await delivery.drain() == 1  # the webhook row; no target knows "pager"
        [claimed] = sync.claim_outbox(NOW, 5, ("pager",))
        await delivery.deliver(claimed)
        rows = {r["id"]: r for r in sync.query(
            "SELECT id, state, next_attempt_at, last_error, crashes FROM outbox")}
        for row_id, named in ((hook_id, "no webhook target named 'halo'"),
                              (pager_id, "cannot deliver outbox rows of kind 'pager'")):
            row = rows[row_id]
            assert row["state"] == "pending" and row["crashes"] == 0, row
            assert row["next_attempt_at"] == NOW + HOLD_DELAY
            assert row["last_error"].startswith("held: ") and named in row["last_error"]
        held = sync.query("SELECT detail FROM events WHERE kind='retry' ORDER BY id")
        assert [json.loads(e["detail"])["outbox"] for e in held] == [hook_id, pager_id]
        assert sync.scalar("SELECT outcome FROM messages WHERE id=?", (ref,)) is None
        assert "dead" not in {r["state"] for r in rows.values()}

        # A reload brings the webhook back: the held row goes out with the new peers.
        server, got = receiver()
        try:
            delivery.use(settings, Peers(None, None, {
                "halo": WebhookTarget(hook_settings("halo", server.url))}))
            clock.now = NOW + HOLD_DELAY
            assert await delivery.drain() == 1
            assert got == [{"path": "/hook/acme:web01",
                            "body": {"title": "web01 down", "status": "OPEN"}}]
            assert sync.scalar("SELECT state FROM outbox WHERE id=?", (hook_id,)) == "done"
        finally:
            server.stop()
    finally:
        await delivery.aclose()
