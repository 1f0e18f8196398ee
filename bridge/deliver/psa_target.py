"""The MSPCentric PSA as a delivery target: one outbox row, one sync call, one settlement.

What the PSA's verdict means for the row and its message is decided here, in one `match`:
a create, append or resolve ends the message with that outcome; a refused payload or a 404 on
a create ends it `failed`; a 409 holds the row and asks slowly; refused credentials pause the
kind until a reload (`Settlement.refused`); anything transient retries with backoff. A
follow-up whose create never made a ticket (or whose ticket is gone) is made into a create
anew. The row's payload is the core's neutral `TicketCall`; the PSA's wire names stay inside
`PsaClient.build_payload`.
One instance, "default", from `[psa]`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, cast

from bridge.deliver.psa import Action, PsaClient, PsaResult, Verdict, redact_payload
from bridge.deliver.settle import (AUTH_RECHECK, HOLD_DELAY, PSA_OUTCOME, TargetEnv,
                                   backoff, failed, retry, settled, wait_until,
                                   with_occurrences)
from bridge.models import Outcome, TicketCall
from bridge.seams import CorrelationChange, CorrelationOp, Effect, Event, RowState, Settlement
from bridge.store.db import OutboxRow

def _action(row: OutboxRow) -> Action:
    return cast(Action, row.action) if row.action in ("UPDATE", "RESOLVED") else "OPEN"


class PsaTarget:
    kind = "psa"

    def __init__(self, env: TargetEnv, client: PsaClient, name: str = "default"):
        self.env = env
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"PsaTarget(name={self.name!r})"

    async def render(self, row: OutboxRow) -> dict[str, object]:
        action, cid = _action(row), row.correlation_id
        data = with_occurrences(row, self.env.settings.psa.summary_max_chars)
        body = redact_payload(self.client.build_payload(action, data, cid))
        return {"kind": self.kind, "target": self.name, "action": action,
                "correlation_id": cid, "request": body}

    async def deliver(self, row: OutboxRow) -> Settlement:
        action, cid = _action(row), row.correlation_id
        if action in ("UPDATE", "RESOLVED") and cid and row.correlation_state == "void":
            # The create never made a ticket (suppressed, refused, or gone since).
            if action == "RESOLVED":
                return settled(Outcome.NOTHING_TO_RESOLVE,
                               "the ticket this would resolve was never created")
            row = await self._as_create(row)
            action, cid = _action(row), row.correlation_id
        started = time.monotonic()
        result = await self.client.sync(
            action, with_occurrences(row, self.env.settings.psa.summary_max_chars), cid)
        duration = time.monotonic() - started
        verdict = Verdict(result.verdict)
        sent = Event("sent", row.message_ref, row.ordering_key, verdict.value, {
            "outbox": row.id, "action": action, "correlation_id": cid,
            "attempt": row.attempts, "http_status": result.http_status,
            "message": result.message or result.detail,
            "duration_ms": round(duration * 1000, 1),
            "title": str(row.payload.get("title", ""))[:120]})
        _observe(verdict.value, duration)
        return await self._settle(row, action, cid, verdict, result, sent)

    async def _settle(self, row: OutboxRow, action: Action, cid: str | None, verdict: Verdict,
                      result: PsaResult, sent: Event) -> Settlement:
        now = self.env.clock()
        match verdict:
            case Verdict.CREATED:
                return settled(Outcome.CREATED,
                               f"ticket {result.correlation_id or cid} created",
                               *_confirm(sent, cid, result))
            case Verdict.UPDATED if action == "OPEN":
                # The partner's de-duplication appended our create to an existing ticket.
                effects = _confirm(sent, cid, result)
                if cid:
                    cid = result.correlation_id or cid
                return settled(Outcome.APPENDED,
                               f"the PSA de-duplicated it into ticket {cid}", *effects)
            case Verdict.UPDATED:
                return settled(Outcome.APPENDED, f"ticket {cid} updated", sent)
            case Verdict.CLOSED:
                # A held resolve closes its correlation only now.
                closing: tuple[Effect, ...] = (
                    (CorrelationChange(CorrelationOp.CLOSE, cid),) if cid else ())
                return settled(PSA_OUTCOME["closed"], f"ticket {cid} closed", sent, *closing)
            case Verdict.SUPPRESSED:
                voiding: tuple[Effect, ...] = ((CorrelationChange(
                    CorrelationOp.VOID, cid, "create suppressed by the PSA's rules"),)
                    if action == "OPEN" and cid else ())
                return settled(Outcome.SUPPRESSED,
                               f"the PSA suppressed it: {result.message or 'no ticket'}",
                               sent, *voiding)
            case Verdict.NOT_FOUND:
                return await self._not_found(row, action, cid, result, sent)
            case Verdict.REJECTED:  # 400/422…: the PSA will never accept this payload
                return failed(f"the PSA rejected the call: HTTP {result.http_status}"
                              f" {result.message}", sent)
            case Verdict.CONFLICT:
                return retry(row, now, backoff(0, result.retry_after or HOLD_DELAY, cap=3600),
                             f"held: 409 {result.message} (integration inactive or alerting"
                             " disabled; retrying slowly)", sent)
            case Verdict.AUTH:
                why = f"HTTP {result.http_status}: {result.message}"
                return Settlement(RowState.RETRY, f"credentials refused: {why}",
                                  retry_at=now + AUTH_RECHECK, effects=(sent,), refused=why)
            case _:  # transient: 429, 5xx, timeouts, connection errors
                return retry(row, now, backoff(row.attempts, result.retry_after),
                             f"temporary: {result.http_status or ''}"
                             f" {result.message or result.detail}".replace("  ", " ").strip(),
                             sent)

    async def _not_found(self, row: OutboxRow, action: Action, cid: str | None,
                         result: PsaResult, sent: Event) -> Settlement:
        cause = result.message or "OemNotFoundException"
        if action == "OPEN" or not cid:
            voiding: tuple[Effect, ...] = ((CorrelationChange(
                CorrelationOp.VOID, cid, f"create refused: {cause}"),) if cid else ())
            # An expected answer (an account the partner has not mapped, a product group
            # without rules), not mailbridge's trouble: the message's outcome, with the PSA's
            # message, and a line in the daily digest; no dead row. Across several accounts
            # it is the integration's trouble: `status` degrades (docs/health.md).
            call = TicketCall.from_payload(row.payload)
            refused = Event("create-refused", row.message_ref, row.ordering_key, "failed", {
                "outbox": row.id, "account_id": call.account_id,
                "product_group": call.product_group, "alert_type": call.alert_type,
                "message": cause, "title": call.title[:120]})
            return settled(Outcome.FAILED, f"404 from the PSA: {cause}", sent, refused,
                           *voiding)
        # The 404 does not say which cause: the client has asked whether the ticket itself
        # still exists (GET …/alert/{correlationId}).
        gone = result.ticket_gone
        if gone is None:
            return retry(row, self.env.clock(), backoff(row.attempts),
                         "404 on update; ticket lookup failed, will ask again", sent)
        if not gone:
            return failed(f"404 from the PSA although the ticket exists: {cause}", sent)
        void = CorrelationChange(CorrelationOp.VOID, cid, "the PSA no longer has this ticket")
        if action == "RESOLVED":
            return settled(Outcome.NOTHING_TO_RESOLVE,
                           f"ticket {cid} no longer exists at the PSA", sent, void)
        await self._as_create(row)
        return wait_until(self.env.clock(), f"ticket {cid} gone at the PSA: creating anew",
                          sent, void)

    async def _as_create(self, row: OutboxRow) -> OutboxRow:
        """The row becomes a create under a fresh correlation id (written at once: the next
        attempt, and any row after it, must see the new correlation)."""
        store = self.env.store
        new_cid = self.env.new_id()
        arrived = await store.message_arrived_at(row.message_ref)
        await store.reopen_as_create(row.id, row.ordering_key, new_cid,
                                     TicketCall.from_payload(row.payload),
                                     arrived)
        state = await store.correlation_state(new_cid)
        if state == "open":
            return replace(row, action="OPEN", correlation_id=new_cid)
        current = await store.open_correlation(row.ordering_key)
        return replace(row, action="UPDATE",
                       correlation_id=current.correlation_id if current else new_cid)


def _confirm(sent: Event, cid: str | None, result: PsaResult) -> tuple[Effect, ...]:
    if not cid:
        return (sent,)
    return (sent, CorrelationChange(CorrelationOp.CONFIRM, cid, result.correlation_id))


def _observe(verdict: str, duration: float) -> None:
    observe = _OBSERVERS.get(verdict)
    if observe is None:
        observe = _OBSERVERS[verdict] = _observer(verdict)
    observe(duration)


def _observer(verdict: str) -> Callable[[float], None]:
    """The metrics of one verdict, looked up once (labels() takes a lock and builds a key:
    per call, that was a few per cent of delivery's CPU)."""
    try:
        from bridge.operator import metrics
    except ImportError:
        return lambda duration: None
    calls, latency = metrics.API_CALLS.labels(verdict), metrics.API_LATENCY

    def observe(duration: float) -> None:
        calls.inc()
        latency.observe(duration)
    return observe


_OBSERVERS: dict[str, Callable[[float], None]] = {}
