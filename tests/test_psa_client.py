"""PsaClient against the PSA simulator over real HTTP: every verdict and error class."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any

import pytest
import stamina
from pydantic import SecretStr

from bridge.config import PsaSettings
from bridge.deliver.http import HttpClient
from bridge.models import TicketCall
from bridge.deliver.psa import (
    PsaClient,
    PsaError,
    RetryPolicy,
    TokenBucket,
    Verdict,
    interpret_sync_response,
    parse_retry_after,
    redact_payload,
    truncate,
)
from tests.fixtures.psa import SimulatorServer

# Tiny waits keep the retry tests fast while still going through stamina's backoff. (The
# suite's conftest also puts stamina in test mode: no waits, 3 attempts; tests that measure a
# real wait or a different number of attempts switch that off locally.)
FAST = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, wait_jitter=0.0, timeout=10.0,
                   max_inline_retry_after=2.0)


def alert(**overrides: Any) -> TicketCall:
    fields = {"title": "Backup Failed: Agent not checking in", "summary": "Job 'nightly' failed",
              "alert_type": "Backup Failed", "account_id": "ACME-001",
              "product_group": "backup"} | overrides
    return TicketCall(**fields)


@pytest.fixture
async def client(psa_sim: SimulatorServer):
    async with PsaClient(psa_sim.settings(), retry=FAST) as c:
        yield c


async def test_create_update_close(psa_sim: SimulatorServer, client: PsaClient) -> None:
    created = await client.sync("OPEN", alert(), "mb-1")
    assert created.verdict is Verdict.CREATED and created.http_status == 201
    assert created.correlation_id == "mb-1" and created.psa_message_id
    updated = await client.sync("UPDATE", alert(summary="again"), "mb-1")
    assert updated.verdict is Verdict.UPDATED
    closed = await client.sync("RESOLVED", alert(), "mb-1")
    assert closed.verdict is Verdict.CLOSED
    (ticket,) = psa_sim.tickets()
    assert ticket["status"] == "closed" and len(ticket["history"]) == 3
    sent = psa_sim.calls()
    assert [c["incidentStatus"] for c in sent] == ["OPEN", "UPDATE", "RESOLVED"]


async def test_open_without_id_gets_one_and_quirks_are_tolerated(
        psa_sim: SimulatorServer, client: PsaClient) -> None:
    # With quirks on, answers alternate correlationID/correlationId and int/str statusCode.
    ids = set()
    for n in range(4):
        result = await client.sync("OPEN", alert(title=f"alert {n}"), None)
        assert result.verdict is Verdict.CREATED
        ids.add(result.correlation_id)
    assert len(ids) == 4 and None not in ids
    assert {t["correlationId"] for t in psa_sim.tickets()} == ids


@pytest.mark.parametrize("variant, status", [("200", 200), ("409", 409)])
async def test_suppressed_both_variants(psa_sim: SimulatorServer, client: PsaClient,
                                        variant: str, status: int) -> None:
    psa_sim.control(suppressed_variant=variant, suppressions=[{"product_group": "backup"}])
    result = await client.sync("OPEN", alert(), "mb-s")
    assert result.verdict is Verdict.SUPPRESSED and result.http_status == status
    assert psa_sim.tickets() == []


async def test_ticket_creation_off_is_suppressed(psa_sim: SimulatorServer,
                                                 client: PsaClient) -> None:
    psa_sim.control(features={"ticket_creation": False})
    assert (await client.sync("OPEN", alert(), None)).verdict is Verdict.SUPPRESSED


@pytest.mark.parametrize("control, data, cause", [
    ({"psa": ""}, {}, "No PSA found"),
    ({}, {"account_id": "NOPE-1"}, "Account was not found"),
    ({}, {"account_id": "UMBRELLA-004"}, "not mapped"),
    ({}, {"product_group": "toasters"}, "No rules defined"),
    ({"rule": {"product_group": "backup", "enabled": False}}, {}, "turned off"),
])
async def test_open_not_found_causes(psa_sim: SimulatorServer, client: PsaClient,
                                     control: dict[str, Any], data: dict[str, Any],
                                     cause: str) -> None:
    if control:
        psa_sim.control(**control)
    for _ in range(2):  # twice: once per quirk style of writing the cause
        result = await client.sync("OPEN", alert(**data), None)
        assert result.verdict is Verdict.NOT_FOUND and result.http_status == 404
        assert cause in result.message and cause in result.detail
        assert result.ticket_gone is None  # only asked for UPDATE/RESOLVED
    assert len(psa_sim.calls()) == 2  # a permanent error is not retried


async def test_update_not_found_causes_and_lookup(psa_sim: SimulatorServer,
                                                  client: PsaClient) -> None:
    missing = await client.sync("UPDATE", alert(), "never-existed")
    assert missing.verdict is Verdict.NOT_FOUND and "Ticket not found" in missing.message
    assert missing.ticket_gone is True

    await client.sync("OPEN", alert(), "t-rule")
    psa_sim.control(rule={"product_group": "backup", "remove": True})
    rule_gone = await client.sync("UPDATE", alert(), "t-rule")
    assert rule_gone.verdict is Verdict.NOT_FOUND and "Rule was not found" in rule_gone.message
    assert rule_gone.ticket_gone is False  # the ticket itself is still open

    psa_sim.control(reset=True)
    await client.sync("OPEN", alert(), "t-int")
    psa_sim.control(integration={"remove": True})
    # The request's integrationId is gone too, so this is the integration cause either way.
    result = await client.sync("RESOLVED", alert(), "t-int")
    assert result.verdict is Verdict.NOT_FOUND and "Integration not found" in result.message

    psa_sim.control(reset=True)
    await client.sync("OPEN", alert(), "t-closed")
    await client.sync("RESOLVED", alert(), "t-closed")
    stale = await client.sync("UPDATE", alert(), "t-closed")
    assert stale.verdict is Verdict.NOT_FOUND and stale.ticket_gone is True


@pytest.mark.parametrize("change, words", [
    ({"active": False}, "not in an active state"),
    ({"alerting": False}, "not enabled"),
])
async def test_conflict(psa_sim: SimulatorServer, client: PsaClient, change: dict[str, Any],
                        words: str) -> None:
    psa_sim.control(integration=change)
    result = await client.sync("OPEN", alert(), None)
    assert result.verdict is Verdict.CONFLICT and result.http_status == 409
    assert words in result.message
    status = await client.integration_status()
    assert status.reachable and status.authorized and not status.alerting_enabled


async def test_wrong_credentials_are_auth_and_not_retried(psa_sim: SimulatorServer) -> None:
    settings = psa_sim.settings(client_secret=SecretStr("wrong-secret-value"))
    async with PsaClient(settings, retry=FAST) as client:
        result = await client.sync("OPEN", alert(), None)
        assert result.verdict is Verdict.AUTH and result.http_status == 401
        assert result.attempts == 1 and len(psa_sim.calls()) == 1
        lookup = await client.get_alert("x")
        assert lookup.state == "unknown" and lookup.http_status == 401
        status = await client.integration_status()
        assert status.reachable and not status.authorized
        with pytest.raises(PsaError) as info:
            await client.list_alerts()
        assert "wrong-secret-value" not in str(info.value)


async def test_403_is_auth(psa_sim: SimulatorServer, client: PsaClient) -> None:
    psa_sim.control(fail_next=1, fail_status=403)
    assert (await client.sync("OPEN", alert(), None)).verdict is Verdict.AUTH


async def test_400_is_rejected(psa_sim: SimulatorServer, client: PsaClient) -> None:
    psa_sim.control(fail_next=1, fail_status=400)
    result = await client.sync("OPEN", alert(), None)
    assert result.verdict is Verdict.REJECTED and result.attempts == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_then_success(psa_sim: SimulatorServer, client: PsaClient,
                                         status: int) -> None:
    psa_sim.control(fail_next=1, fail_status=status)
    result = await client.sync("OPEN", alert(), "mb-retry")
    assert result.verdict is Verdict.CREATED and result.attempts == 2
    assert [c["status"] for c in psa_sim.calls()] == [status, 201]


async def test_persistent_failure_is_transient_and_bounded(psa_sim: SimulatorServer,
                                                           client: PsaClient) -> None:
    psa_sim.control(fail_next=10, fail_status=503)
    result = await client.sync("OPEN", alert(), "mb-down")
    assert result.verdict is Verdict.TRANSIENT and result.http_status == 503
    assert result.attempts == len(psa_sim.calls()) > 1
    assert result.correlation_id == "mb-down"  # the outbox re-sends the very same id


async def test_retries_after_a_first_attempt_outside_stamina_back_off_and_stop_as_before(
        psa_sim: SimulatorServer) -> None:
    """The first attempt is made without stamina; a retryable failure then enters it as its
    attempt 1: stamina's hooks see retries 1 and 2 with its exponential waits, and the call
    stops after `attempts` calls in all."""
    seen: list[tuple[int, float, str]] = []
    hook = lambda d: seen.append((d.retry_num, d.wait_for, repr(d.caused_by)))  # noqa: E731
    policy = RetryPolicy(attempts=3, wait_initial=0.05, wait_max=1.0, wait_jitter=0.0,
                         timeout=10.0)
    psa_sim.control(fail_next=10, fail_status=503)
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([hook])
    try:
        with stamina.set_testing(False):
            async with PsaClient(psa_sim.settings(), retry=policy) as client:
                start = time.monotonic()
                result = await client.sync("OPEN", alert(), "mb-backoff")
                elapsed = time.monotonic() - start
    finally:
        stamina.instrumentation.set_on_retry_hooks(before)
    assert result.verdict is Verdict.TRANSIENT and result.attempts == 3
    assert len(psa_sim.calls()) == 3
    assert [(n, round(w, 2)) for n, w, _ in seen] == [(1, 0.05), (2, 0.1)]
    assert all("PsaTransient" in cause and "secret" not in cause for _, _, cause in seen)
    assert elapsed >= 0.15


async def test_a_call_that_succeeds_at_once_never_enters_stamina(
        psa_sim: SimulatorServer, client: PsaClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: Any) -> None:
        raise AssertionError("stamina entered for a call that succeeded")
    monkeypatch.setattr(stamina, "retry_context", refuse)
    result = await client.sync("OPEN", alert(), "mb-fast")
    assert result.verdict is Verdict.CREATED and result.attempts == 1


async def test_429_retry_after_is_honoured(psa_sim: SimulatorServer, client: PsaClient) -> None:
    psa_sim.control(throttle_next=1, retry_after="1")
    start = time.monotonic()
    with stamina.set_testing(False):
        result = await client.sync("OPEN", alert(), None)
    assert result.verdict is Verdict.CREATED and result.attempts == 2
    assert time.monotonic() - start >= 0.95


async def test_long_retry_after_goes_back_to_the_outbox(psa_sim: SimulatorServer,
                                                        client: PsaClient) -> None:
    psa_sim.control(throttle_next=1, retry_after=formatdate(time.time() + 120, usegmt=True))
    result = await client.sync("OPEN", alert(), None)
    assert result.verdict is Verdict.TRANSIENT and result.http_status == 429
    assert result.attempts == 1 and 100 < (result.retry_after or 0) <= 120


async def test_dropped_connection_is_retried(psa_sim: SimulatorServer,
                                             client: PsaClient) -> None:
    psa_sim.control(drop_next=1)
    result = await client.sync("OPEN", alert(), "mb-drop")
    assert result.verdict is Verdict.CREATED and result.attempts == 2
    assert [c["status"] for c in psa_sim.calls()] == ["dropped", 201]


@pytest.mark.parametrize("mode", ["500", "drop"])
async def test_fail_after_apply_makes_no_second_ticket(psa_sim: SimulatorServer,
                                                       client: PsaClient, mode: str) -> None:
    psa_sim.control(fail_after_apply_next=1, fail_after_apply=mode)
    result = await client.sync("OPEN", alert(), "mb-ambiguous")
    assert result.verdict is Verdict.CREATED and result.correlation_id == "mb-ambiguous"
    assert result.attempts == 2
    assert [t["correlationId"] for t in psa_sim.tickets()] == ["mb-ambiguous"]


async def test_fail_after_apply_exhausting_retries_then_outbox_resend(
        psa_sim: SimulatorServer) -> None:
    with stamina.set_testing(False):
        await _resend_after_ambiguous_failure(psa_sim)
    assert len(psa_sim.tickets()) == 1


async def _resend_after_ambiguous_failure(psa_sim: SimulatorServer) -> None:
    async with PsaClient(psa_sim.settings(), retry=RetryPolicy(attempts=1)) as client:
        psa_sim.control(fail_after_apply_next=1, fail_after_apply="drop")
        first = await client.sync("OPEN", alert(), "mb-outbox")
        assert first.verdict is Verdict.TRANSIENT
        # The outbox re-sends the same row later: same id, same ticket.
        lookup = await client.get_alert("mb-outbox")
        assert lookup.state == "found" and lookup.is_open
        again = await client.sync("OPEN", alert(), "mb-outbox")
        assert again.verdict is Verdict.CREATED


async def test_timeout_is_transient(psa_sim: SimulatorServer) -> None:
    psa_sim.control(latency_ms=400)
    async with PsaClient(psa_sim.settings(timeout=0.1), retry=FAST) as client:
        result = await client.sync("OPEN", alert(), "mb-slow")
    assert result.verdict is Verdict.TRANSIENT and "Timeout" in result.detail
    assert result.attempts > 1


async def test_unreachable_psa() -> None:
    settings = PsaSettings(base_url="http://127.0.0.1:9", client_id="c",  # the discard port
                           client_secret=SecretStr("s"), integration_id="i")
    async with PsaClient(settings, retry=FAST) as client:
        result = await client.sync("OPEN", alert(), None)
        assert result.verdict is Verdict.TRANSIENT and "ConnectError" in result.detail
        status = await client.integration_status()
        assert not status.reachable and "unreachable" in status.message
        assert (await client.get_alert("x")).state == "unknown"


async def test_get_list_and_integration(psa_sim: SimulatorServer, client: PsaClient) -> None:
    await client.sync("OPEN", alert(), "mb-a")
    found = await client.get_alert("mb-a")
    assert found.state == "found" and found.ticket and found.ticket["correlationId"] == "mb-a"
    assert found.is_open
    assert (await client.get_alert("mb-nope")).state == "gone"
    listed = await client.list_alerts()
    assert [t["correlationId"] for t in listed] == ["mb-a"]
    assert listed[0]["history"][0]["action"] == "created"
    status = await client.integration_status()
    assert status.reachable and status.authorized and status.alerting_enabled
    psa_sim.control(integration={"remove": True})
    status = await client.integration_status()
    assert not status.alerting_enabled and "not found" in status.message


async def test_get_retries_when_faults_apply_to_all(psa_sim: SimulatorServer,
                                                    client: PsaClient) -> None:
    psa_sim.control(applies_to="all", fail_next=1, fail_status=502)
    assert (await client.integration_status()).alerting_enabled


async def test_payload_is_strict_and_cut(psa_sim: SimulatorServer) -> None:
    async with PsaClient(psa_sim.settings(summary_max_chars=100), retry=FAST) as client:
        data = alert(title="é" * 300, summary="x" * 500, device="web01")
        payload = client.build_payload("OPEN", data, "mb-cut")
        assert payload["data"]["incidentStatus"] == "OPEN"  # the action decides
        # The core's neutral names become MSPCentric's wire names here, and only here.
        assert (payload["data"]["alertType"], payload["data"]["accountId"],
                payload["data"]["productGroup"]) == ("Backup Failed", "ACME-001", "backup")
        assert not {"alert_type", "account_id", "product_group"} & set(payload["data"])
        assert len(payload["data"]["title"]) == 255 and payload["data"]["title"].endswith("…")
        assert len(payload["data"]["summary"]) == 100
        assert payload["grantType"] == "client_credentials" and payload["scope"] == "vendor_manage"
        assert payload["integrationId"] == "demo-integration"
        assert payload["correlationId"] == "mb-cut" and payload["data"]["device"] == "web01"
        result = await client.sync("OPEN", data, "mb-cut")
        assert result.verdict is Verdict.CREATED
    (ticket,) = psa_sim.tickets()
    assert len(ticket["title"]) == 255 and ticket["device"] == "web01"
    with pytest.raises(ValueError, match="alert_type, account_id, product_group"):
        TicketCall.from_payload({"title": "t", "summary": "s"})
    with pytest.raises(ValueError, match="correlationId"):
        await client.sync("UPDATE", alert(), None)


def test_truncate_keeps_characters_whole() -> None:
    assert truncate("short", 10) == "short"
    decomposed = "abcde\u0301fgh"  # e + combining acute accent
    assert truncate(decomposed, 6) == "abcd…"
    assert truncate("x" * 20, 10) == "x" * 9 + "…"


async def test_secrets_never_leak(psa_sim: SimulatorServer, caplog: pytest.LogCaptureFixture,
                                  client: PsaClient) -> None:
    caplog.set_level(logging.DEBUG)
    psa_sim.control(fail_next=5, fail_status=500)
    result = await client.sync("OPEN", alert(), None)
    payload = client.build_payload("OPEN", alert(), None)
    redacted = redact_payload(payload | {"data": payload["data"] | {"summary": "s" * 500}})
    texts = [repr(client), repr(result), str(redacted), caplog.text, repr(client.settings)]
    for text in texts:
        assert "demo-secret" not in text and "demo-org-token" not in text
    assert redacted["clientSecret"] == "***" and redacted["organizationOemToken"] == "***"
    assert redacted["clientId"] == "demo-client" and len(redacted["data"]["summary"]) < 250


def test_interpret_is_liberal() -> None:
    r = interpret_sync_response("RESOLVED", 200, b'{"message":"closed","statusCode":"200",'
                                b'"data":{"messageId":"m","correlationID":"c"}}', "sent")
    assert (r.verdict, r.correlation_id, r.psa_message_id) == (Verdict.CLOSED, "c", "m")
    r = interpret_sync_response("OPEN", 201, b'{"statusCode":"201","message":"created",'
                                b'"data":{"correlationId":"c2"}}', None)
    assert (r.verdict, r.correlation_id) == (Verdict.CREATED, "c2")
    r = interpret_sync_response("OPEN", 201, b"<html>ok</html>", "sent")
    assert (r.verdict, r.correlation_id) == (Verdict.CREATED, "sent")
    r = interpret_sync_response("UPDATE", 200, b"", "sent")
    assert r.verdict is Verdict.UPDATED
    r = interpret_sync_response("OPEN", 200, b'{"statusCode":404,"message":"failed",'
                                b'"error":"Account was not found"}', None)
    assert r.verdict is Verdict.NOT_FOUND and r.message == "Account was not found"
    r = interpret_sync_response("OPEN", 409, b'{"statusCode":409,"message":"Alert suppressed '
                                b'by rules"}', None)
    assert r.verdict is Verdict.SUPPRESSED
    r = interpret_sync_response("OPEN", 409, b'{"message":"Alerts is not enabled"}', None)
    assert r.verdict is Verdict.CONFLICT
    r = interpret_sync_response("OPEN", 200, b'{"message":"suppressed","statusCode":201}', None)
    assert r.verdict is Verdict.SUPPRESSED
    r = interpret_sync_response("OPEN", 422, b"nope", None)
    assert r.verdict is Verdict.REJECTED and "nope" in r.detail


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("99999", cap=60) == 60
    date = formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 30
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_rate_limit(psa_sim: SimulatorServer) -> None:
    bucket = TokenBucket(rate=20.0, burst=2)
    start = time.monotonic()
    for _ in range(6):
        await bucket.take()
    assert time.monotonic() - start >= 0.18  # 2 at once, then 4 at 20/s
    async with PsaClient(psa_sim.settings(rate_limit=10.0), retry=FAST) as client:
        start = time.monotonic()
        for n in range(13):
            await client.sync("OPEN", alert(title=f"t{n}"), None)
        assert time.monotonic() - start >= 0.25  # a burst of 10, then 3 more at 10/s


async def test_caller_supplied_http_client(psa_sim: SimulatorServer) -> None:
    http = HttpClient(timeout=10.0)
    client = PsaClient(psa_sim.settings(), http=http, retry=FAST)
    assert (await client.sync("OPEN", alert(), None)).verdict is Verdict.CREATED
    await client.aclose()
    assert not http.closed  # not ours to close
    await http.aclose()
