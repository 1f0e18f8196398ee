"""The outbox worker: takes due rows, sends them, and settles them (SPEC §3.6).

Rows of one ordering key go strictly one after another (the store only hands out the oldest
unfinished row of a key), different keys go concurrently up to `psa.concurrency`. What a row's
result means is decided here, in one table-like `match` per target: permanent errors end the
message's wait with an outcome, temporary ones reschedule the row with backoff and jitter, and
nothing is ever dropped because a peer is down. A row whose delivery crashes the worker (or
dies with it) CRASH_LIMIT times goes `dead` with the reason instead of blocking its key for
ever; transient retries do not count towards that cap. Here: the loops
and the PSA; `Writes`, `with_occurrences`, `backoff` and the limits are in `settle`
(re-exported), mail, webhooks and IMAP moves in `other_targets` (mixed in).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Mapping, cast

from bridge.config import Settings
from bridge.decide import new_correlation_id
from bridge.deliver.other_targets import OtherTargets
from bridge.deliver.peers import CURRENT_ROW, Peers
from bridge.deliver.settle import (AUTH_RECHECK, CRASH_LIMIT, HOLD_DELAY, PSA_OUTCOME,
                                   RETRY_CAP, Writes, backoff, with_occurrences)
from bridge.models import PsaAction
from bridge.store.db import AsyncStore, OutboxRow
from bridge.store.owners import HEARTBEAT

if TYPE_CHECKING:
    from bridge.deliver.psa import PsaClient
    from bridge.deliver.psa_wire import PsaResult
    from bridge.deliver.smtp import SmtpSender
    from bridge.deliver.webhook import WebhookTarget
    from bridge.sources.imap import ImapSource
    from bridge.status import RuntimeStatus

__all__ = ["AUTH_RECHECK", "CRASH_LIMIT", "HOLD_DELAY", "PSA_OUTCOME", "RETRY_CAP", "Delivery",
           "Writes", "backoff", "with_occurrences"]

log = logging.getLogger("mailbridge.outbox")
RECLAIM_EVERY = HEARTBEAT  # seconds between two looks for rows left by a dead deliverer


class Delivery(OtherTargets):
    def __init__(self, store: AsyncStore, settings: Settings, *, psa: PsaClient | None = None,
                 smtp: SmtpSender | None = None,
                 webhooks: Mapping[str, WebhookTarget] | None = None,
                 mailboxes: Mapping[str, ImapSource] | None = None,
                 runtime: RuntimeStatus | None = None, clock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] = new_correlation_id):
        self.store = store
        self.settings = settings
        self.psa = psa
        self.smtp = smtp
        self.webhooks = webhooks or {}
        self.mailboxes = mailboxes or {}  # IMAP sources by name, for outcome-based moves
        self.runtime = runtime
        self.clock = clock
        self.new_id = new_id
        self.psa_refused: str | None = None  # set on 401/403: stop sending until reload
        self._psa_recheck_at = 0.0
        self.wake = asyncio.Event()
        self._retired: list[Peers] = []  # peers replaced by a reload, closed after their calls

    # -- control ------------------------------------------------------------------------------

    def use(self, settings: Settings, peers: Peers) -> None:
        """A reload's fresh peers and settings, for every row claimed from now on. Calls in
        flight finish on the old peers, which are closed once the current pass has ended."""
        self._retired.append(Peers(self.psa, self.smtp, dict(self.webhooks)))
        self.settings = settings
        self.smtp = peers.smtp
        self.webhooks = dict(peers.webhooks)
        self.resume_psa(peers.psa)

    async def aclose(self) -> None:
        await self._close_retired()
        await Peers(self.psa, self.smtp, dict(self.webhooks)).aclose()

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for peers in retired:
            try:
                await peers.aclose()
            except Exception:  # a peer that fails to close must not stop delivery
                log.warning("closing the previous PSA/webhook clients failed", exc_info=True)

    def resume_psa(self, psa: PsaClient | None = None) -> None:
        """After SIGHUP with new credentials: start sending again."""
        if psa is not None:
            self.psa = psa
        self.psa_refused = None
        if self.runtime is not None:
            self.runtime.psa_auth_ok()
        self.wake.set()

    def _kinds(self) -> tuple[str, ...]:
        kinds = ["smtp", "webhook", "imap"]
        if self.psa is not None and (self.psa_refused is None
                                     or self.clock() >= self._psa_recheck_at):
            kinds.append("psa")
        return tuple(kinds)

    # -- loops --------------------------------------------------------------------------------

    async def drain(self) -> int:
        """Send everything that is due now; return how many rows were attempted.

        A sliding window: up to `psa.concurrency` calls are in flight at any time, and a free
        slot is refilled as soon as a call ends (the next row of that key may be due now).
        Replies to XML transactions wait until the window is empty, so they report the
        results of the calls sent in the same pass."""
        limit = self.settings.psa.concurrency
        running: set[asyncio.Task[None]] = set()
        ready: collections.deque[OutboxRow] = collections.deque()
        replies: list[OutboxRow] = []
        total = 0
        try:
            while True:
                rows: list[OutboxRow] = []
                if len(ready) < limit:
                    # Claim ahead (rows claimed are in flight: a crash hands them back at
                    # start-up), so one claim transaction serves many calls.
                    rows = await self.store.claim_outbox(
                        self.clock(), 2 * limit - len(ready) - len(running), self._kinds())
                    total += len(rows)
                    for row in rows:
                        if row.kind == "smtp" and row.payload.get("type") == "reply":
                            replies.append(row)
                        else:
                            ready.append(row)
                while ready and len(running) < limit:
                    running.add(asyncio.ensure_future(self.deliver(ready.popleft())))
                if running:
                    _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                elif replies:
                    await asyncio.gather(*(self.deliver(r) for r in replies))
                    replies.clear()
                elif not rows:
                    return total
        finally:
            if running:  # cancelled (shutdown): let the calls in flight end, up to the caller
                await asyncio.gather(*running, return_exceptions=True)
            if self._retired:
                await self._close_retired()
            # Rows claimed ahead but not started stay in flight in the store until this
            # owner's lease ends (then `reclaim_in_flight` hands them back). Hand them back
            # now if we can.
            if ready or replies:
                await self.store.release_outbox([r.id for r in [*ready, *replies]])

    async def run(self, stop: asyncio.Event) -> None:
        await self.store.reclaim_in_flight()
        reclaimed_at = time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() - reclaimed_at >= RECLAIM_EVERY:
                    # Rows of a one-shot command (or another host) that died meanwhile.
                    reclaimed_at = time.monotonic()
                    await self.store.reclaim_in_flight()
                await self.drain()
            except Exception:  # the store itself failed: wait and try again, never die
                log.exception("outbox pass failed")
            due = await self.store.next_outbox_due()
            wait = 5.0 if due is None else min(5.0, max(0.0, due - self.clock()))
            self.wake.clear()
            stopper = asyncio.ensure_future(stop.wait())
            waker = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait({stopper, waker}, timeout=max(wait, 0.01),
                               return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            waker.cancel()

    # -- one row ------------------------------------------------------------------------------

    async def deliver(self, row: OutboxRow) -> None:
        # Everything a row's result changes is written in one transaction at the end.
        CURRENT_ROW.set(row.id)  # this task's row, for the dry-run peers' request log
        tx = Writes()
        try:
            if row.kind == "psa":
                await self._psa(tx, row)
            elif row.kind == "smtp":
                await self._smtp(tx, row)
            elif row.kind == "webhook":
                await self._webhook(tx, row)
            elif row.kind == "imap":
                await self._imap(tx, row)
            else:
                tx.outbox_dead(row.id, f"unknown outbox kind {row.kind!r}")
        except Exception as exc:  # a bug or an unexpected peer answer: count it, never loop
            log.exception("outbox row %s crashed", row.id)
            reason = f"{type(exc).__name__}: {exc}"
            tx = Writes()  # nothing half-done is written
            crashes = row.crashes + 1
            if crashes >= CRASH_LIMIT:
                self._dead(tx, row, f"delivery crashed {crashes} times; last: {reason}")
            else:
                tx.outbox_crashed(row.id, self.clock() + backoff(crashes), reason)
        await self.store.run(tx.apply, self.store.store)

    def _dead(self, tx: Writes, row: OutboxRow, reason: str) -> None:
        tx.outbox_dead(row.id, reason)
        tx.set_outcome(row.message_ref, "failed", reason)
        tx.event("dead", row.message_ref, row.ordering_key, "failed",
                 outbox=row.id, reason=reason)

    def _retry(self, tx: Writes, row: OutboxRow, wait: float, error: str) -> None:
        tx.outbox_retry(row.id, self.clock() + wait, error)
        tx.event("retry", row.message_ref, row.ordering_key, None,
                 outbox=row.id, attempt=row.attempts, wait=round(wait, 1),
                 error=error)

    # -- the PSA ------------------------------------------------------------------------------

    async def _psa(self, tx: Writes, row: OutboxRow) -> None:
        action, cid = row.action or "OPEN", row.correlation_id
        if action in ("UPDATE", "RESOLVED") and cid:
            if row.correlation_state == "void":
                # The create never made a ticket (suppressed, refused, or gone since).
                if action == "RESOLVED":
                    self._settle(tx, row, "nothing-to-resolve",
                                 "the ticket this would resolve was never created")
                    return
                row = await self._as_create(row)
                action, cid = row.action or "OPEN", row.correlation_id
        if self.psa is None:  # not reached: rows of kind psa are claimed only with a client
            self._retry(tx, row, HOLD_DELAY, "no PSA client configured")
            return
        started = time.monotonic()
        result = await self.psa.sync(
            # The store holds only the actions the decider wrote (OutboxItem.action).
            cast(PsaAction, action),
            with_occurrences(row, self.settings.psa.summary_max_chars), cid)
        duration = time.monotonic() - started
        tx.event(
            "sent", row.message_ref, row.ordering_key, result.verdict, outbox=row.id,
            action=action, correlation_id=cid, attempt=row.attempts,
            http_status=result.http_status, message=result.message or result.detail,
            duration_ms=round(duration * 1000, 1), title=str(row.payload.get("title", ""))[:120])
        self._observe(result.verdict, duration)
        verdict = result.verdict
        if verdict == "created":
            if cid:
                tx.confirm_correlation(cid, result.correlation_id)
            self._settle(tx, row, "created", f"ticket {result.correlation_id or cid} created")
        elif verdict == "updated" and action == "OPEN":
            # The partner's de-duplication appended our create to an existing ticket.
            if cid:
                tx.confirm_correlation(cid, result.correlation_id)
                cid = result.correlation_id or cid
            self._settle(tx, row, "appended",
                         f"the PSA de-duplicated it into ticket {cid}")
        elif verdict in ("updated", "closed"):
            if verdict == "closed" and cid:  # a held resolve closes its correlation only now
                tx.close_correlation(cid)
            self._settle(tx, row, PSA_OUTCOME[verdict],
                         f"ticket {cid} {'updated' if verdict == 'updated' else 'closed'}")
        elif verdict == "suppressed":
            if action == "OPEN" and cid:
                tx.void_correlation(cid, "create suppressed by the PSA's rules")
            self._settle(tx, row, "suppressed",
                         f"the PSA suppressed it: {result.message or 'no ticket'}")
        elif verdict == "not_found":
            await self._not_found(tx, row, action, cid, result)
        elif verdict == "rejected":  # 400/422…: the PSA will never accept this payload
            self._fail(tx, row, f"the PSA rejected the call: HTTP {result.http_status}"
                       f" {result.message}")
        elif verdict == "conflict":
            self._retry(tx, row, backoff(0, result.retry_after or HOLD_DELAY, cap=3600),
                        f"held: 409 {result.message} (integration inactive or alerting"
                        " disabled; retrying slowly)")
        elif verdict == "auth":
            self.psa_refused = f"HTTP {result.http_status}: {result.message}"
            self._psa_recheck_at = self.clock() + AUTH_RECHECK
            if self.runtime is not None:
                self.runtime.psa_auth_refused(self.psa_refused)
            log.error("the PSA refused mailbridge's credentials (%s); sending stopped until"
                      " the credentials are reloaded (systemctl reload mailbridge)",
                      self.psa_refused)
            tx.outbox_retry(row.id, self.clock() + AUTH_RECHECK,
                            f"credentials refused: {self.psa_refused}")
        else:  # transient: 429, 5xx, timeouts, connection errors
            self._retry(tx, row, backoff(row.attempts, result.retry_after),
                        f"temporary: {result.http_status or ''}"
                        f" {result.message or result.detail}".replace("  ", " ").strip())

    async def _not_found(self, tx: Writes, row: OutboxRow, action: str,
                         cid: str | None, result: PsaResult) -> None:
        cause = result.message or "OemNotFoundException"
        if action == "OPEN" or not cid:
            if cid:
                tx.void_correlation(cid, f"create refused: {cause}")
            self._fail(tx, row, f"404 from the PSA: {cause}")
            return
        # The 404 does not say which cause: the client has asked whether the ticket itself
        # still exists (GET …/alert/{correlationId}).
        gone = result.ticket_gone
        if gone is None:
            self._retry(tx, row, backoff(row.attempts),
                        "404 on update; ticket lookup failed, will ask again")
        elif not gone:
            self._fail(tx, row, f"404 from the PSA although the ticket exists: {cause}")
        else:
            tx.void_correlation(cid, "the PSA no longer has this ticket")
            if action == "RESOLVED":
                self._settle(tx, row, "nothing-to-resolve",
                             f"ticket {cid} no longer exists at the PSA")
            else:
                await self._as_create(row)
                tx.outbox_retry(row.id, self.clock(),
                                f"ticket {cid} gone at the PSA: creating anew")

    async def _as_create(self, row: OutboxRow) -> OutboxRow:
        new_cid = self.new_id()
        arrived = await self.store.message_arrived_at(row.message_ref)
        await self.store.reopen_as_create(row.id, row.ordering_key, new_cid, dict(row.payload),
                                          arrived)
        state = await self.store.correlation_state(new_cid)
        if state == "open":
            return replace(row, action="OPEN", correlation_id=new_cid)
        current = await self.store.open_correlation(row.ordering_key)
        return replace(row, action="UPDATE",
                       correlation_id=current.correlation_id if current else new_cid)

    def _settle(self, tx: Writes, row: OutboxRow, outcome: str, reason: str) -> None:
        tx.outbox_done(row.id, {"outcome": outcome, "reason": reason})
        tx.set_outcome(row.message_ref, outcome, reason)

    def _fail(self, tx: Writes, row: OutboxRow, reason: str) -> None:
        tx.outbox_dead(row.id, reason)
        tx.set_outcome(row.message_ref, "failed", reason)

    def _observe(self, verdict: str, duration: float) -> None:
        try:
            from bridge import metrics
        except ImportError:
            return
        metrics.API_CALLS.labels(verdict).inc()
        metrics.API_LATENCY.observe(duration)
