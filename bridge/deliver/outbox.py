"""The outbox worker: takes due rows, sends them, and settles them (SPEC §3.6).

Rows of one ordering key go strictly one after another (the store only hands out the oldest
unfinished row of a key), different keys go concurrently up to `psa.concurrency`. What a row's
result means is decided here, in one table-like `match` per target: permanent errors end the
message's wait with an outcome, temporary ones reschedule the row with backoff and jitter, and
nothing is ever dropped because a peer is down. A row whose delivery crashes the worker
repeatedly goes `dead` with the reason instead of blocking its key for ever.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import replace
from typing import Any, Callable

from bridge.config import Settings
from bridge.decide import new_correlation_id
from bridge.deliver.psa import truncate
from bridge.store.db import AsyncStore, OutboxRow

log = logging.getLogger("mailbridge.outbox")

CRASH_LIMIT = 5          # unexpected exceptions before a row goes dead
RETRY_CAP = 15 * 60.0    # longest wait between two attempts of a temporary failure
HOLD_DELAY = 5 * 60.0    # 409: the partner may re-enable the integration; ask slowly
AUTH_RECHECK = 10 * 60.0 # credentials refused: try again now and then even without a reload

class Writes:
    """The store writes one delivery causes, recorded and then applied in one transaction
    on the store's thread (a call used to cost four or five separate commits)."""

    WRITE_OPS = frozenset({"event", "outbox_done", "outbox_dead", "outbox_retry",
                           "set_outcome", "confirm_correlation", "close_correlation",
                           "void_correlation"})

    def __init__(self) -> None:
        self.ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name not in self.WRITE_OPS:
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> None:
            self.ops.append((name, args, kwargs))
        return record

    def apply(self, store: Any) -> None:
        if not self.ops:
            return
        with store.write():
            for name, args, kwargs in self.ops:
                getattr(store, name)(*args, **kwargs)


PSA_OUTCOME = {"created": "created", "updated": "appended", "closed": "resolved",
               "suppressed": "suppressed"}


def with_occurrences(row: OutboxRow, limit: int | None = None) -> dict[str, Any]:
    """The payload to send; an append that covers several occurrences says so.

    The note goes at the end of the summary; when `limit` (the PSA client's summary length) is
    given, the alert's own text is shortened instead, so the client's cut never drops the note."""
    data = dict(row.payload)
    if row.occurrences > 1 and row.first_arrived_at and row.last_arrived_at:
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.first_arrived_at))
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.last_arrived_at))
        note = (f"\n\n[mailbridge] This update covers {row.occurrences} occurrences,"
                f" first {first} UTC, last {last} UTC.")
        summary = str(data.get("summary", ""))
        if limit is not None and len(summary) + len(note) > limit:
            summary = truncate(summary, max(limit - len(note), 1))
        data["summary"] = summary + note
    return data


def backoff(attempts: int, retry_after: float | None = None, cap: float = RETRY_CAP) -> float:
    """Seconds to wait: the server's Retry-After when given, else exponential with jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    base = min(cap, 2.0 ** min(attempts, 20))
    return base * random.uniform(0.5, 1.0)


class Delivery:
    def __init__(self, store: AsyncStore, settings: Settings, *, psa: Any = None,
                 smtp: Any = None, webhooks: dict[str, Any] | None = None,
                 mailboxes: dict[str, Any] | None = None,
                 runtime: Any = None, clock: Callable[[], float] = time.time,
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

    # -- control ------------------------------------------------------------------------------

    def resume_psa(self, psa: Any = None) -> None:
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
            # Rows claimed ahead but not started stay in flight in the store; start-up (or
            # the next `reclaim_in_flight`) hands them back. Hand them back now if we can.
            if ready or replies:
                await self.store.release_outbox([r.id for r in [*ready, *replies]])

    async def run(self, stop: asyncio.Event) -> None:
        await self.store.reclaim_in_flight()
        while not stop.is_set():
            try:
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
            if row.attempts >= CRASH_LIMIT:
                self._dead(tx, row, f"delivery crashed {row.attempts} times; last: {reason}")
            else:
                tx.outbox_retry(row.id, self.clock() + backoff(row.attempts), reason)
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
        started = time.monotonic()
        result = await self.psa.sync(
            action, with_occurrences(row, self.settings.psa.summary_max_chars), cid)
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
                         cid: str | None, result: Any) -> None:
        cause = result.message or "OemNotFoundException"
        if action == "OPEN" or not cid:
            if cid:
                tx.void_correlation(cid, f"create refused: {cause}")
            self._fail(tx, row, f"404 from the PSA: {cause}")
            return
        # The 404 does not say which cause: the client has asked whether the ticket itself
        # still exists (GET …/alert/{correlationId}).
        gone = getattr(result, "ticket_gone", None)
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

    # -- mail ---------------------------------------------------------------------------------

    async def _smtp(self, tx: Writes, row: OutboxRow) -> None:
        if self.smtp is None:
            self._retry(tx, row, HOLD_DELAY, "no SMTP server configured")
            return
        from bridge.deliver import smtp as mail

        if row.payload.get("type") == "reply" and row.payload.get("rows"):
            from bridge.xmltx import final_results

            rows = await self.store.outbox_results(list(row.payload["rows"]))
            results = final_results(dict(row.payload), rows)
            if results is None:  # an action's call is still waiting: answer when settled
                # Not before the earliest moment the waiting calls can settle (a call in
                # flight elsewhere gets a second).
                now = self.clock()
                waits = [r["next_attempt_at"] if r["state"] == "pending" else now + 1.0
                         for r in rows.values() if r["state"] in ("pending", "in_flight")]
                tx.outbox_retry(row.id, max([now, *waits]),
                                "waiting for the transaction's calls")
                return
            row = replace(row, payload={**row.payload, "final": results})
        try:
            msg = await self._compose(row, mail)
        except mail.ComposeError as exc:  # e.g. a reply address from untrusted XML
            tx.outbox_dead(row.id, f"cannot compose the mail: {exc}")
            return
        result = await self.smtp.send(msg)
        p = row.payload
        tx.event("mailed", row.message_ref, None, result.verdict, outbox=row.id,
                 type=p.get("type"), to=p.get("to"), detail=result.detail)
        if result.verdict == "ok":
            tx.outbox_done(row.id, {"sent_to": p.get("to")})
        elif getattr(result, "config_error", False):
            # Our SMTP settings are wrong (certificate, login): hold everything, do not
            # dead-letter every message one by one; the admin fixes the config and reloads.
            if self.runtime is not None:
                _call(self.runtime, "smtp_problem", result.detail)
            self._retry(tx, row, HOLD_DELAY, f"SMTP configuration problem: {result.detail}")
        elif result.verdict == "permanent":
            tx.outbox_dead(row.id, f"SMTP refused: {result.detail}")
        else:
            self._retry(tx, row, backoff(row.attempts), f"SMTP: {result.detail}")

    async def _compose(self, row: OutboxRow, mail: Any) -> Any:
        p = row.payload
        from_address = self.settings.smtp.from_address if self.settings.smtp else "mailbridge"
        if p.get("type") == "forward":
            raw = await self.store.message_raw(row.message_ref) or b""
            from bridge.parse.mime import parse

            msg = mail.compose_forward(raw, parse(raw), p["to"], p.get("note", ""),
                                       from_address)
        elif p.get("type") == "reply":
            from bridge.parse.xmlapi import build_response, response_text

            final = p.get("final")
            if final is None:
                from bridge.xmltx import final_results

                final = final_results(dict(p), {})
            tx_id = p.get("transaction_id")
            msg = mail.compose_reply(p["to"], p.get("bcc"), p.get("subject", ""),
                                     response_text(tx_id, final or []),
                                     build_response(tx_id, final or []),
                                     from_address, p.get("in_reply_to"))
        else:
            msg = mail.compose_admin_alert(p["to"], p.get("subject", "mailbridge alert"),
                                           p.get("text", ""), from_address)
        return msg

    async def _imap(self, tx: Writes, row: OutboxRow) -> None:
        await _refile(self, tx, row)

    # -- webhooks -----------------------------------------------------------------------------

    async def _webhook(self, tx: Writes, row: OutboxRow) -> None:
        name = str(row.payload.get("target", ""))
        target = self.webhooks.get(name)
        if target is None:
            tx.outbox_dead(row.id, f"no webhook target named {name!r}")
            return
        fields = dict(row.payload.get("fields", {}))
        result = await target.send(fields)
        tx.event("webhook", row.message_ref, row.ordering_key, result.verdict,
                 outbox=row.id, target=name, status=result.status,
                 detail=result.detail)
        if result.verdict == "ok":
            tx.outbox_done(row.id, {"status": result.status})
        elif result.verdict == "permanent":
            tx.outbox_dead(row.id, f"webhook {name}: {result.detail}")
        else:
            self._retry(tx, row, backoff(row.attempts), f"webhook {name}: {result.detail}")


def _call(obj: Any, name: str, *args: Any) -> None:
    fn = getattr(obj, name, None)
    if callable(fn):
        fn(*args)


async def _refile(delivery: Delivery, tx: Writes, row: OutboxRow) -> None:
    source = delivery.mailboxes.get(str(row.payload.get("source")))
    folder = str(row.payload.get("folder"))
    if source is None:
        tx.outbox_dead(row.id, f"no IMAP source {row.payload.get('source')!r}")
        return
    rows = await delivery.store.query("SELECT message_id FROM messages WHERE id=?",
                                      [row.message_ref])
    message_id = rows[0]["message_id"] if rows else None
    if not message_id:
        tx.outbox_done(row.id, {"moved": 0, "why": "no Message-ID"})
        return
    try:
        moved = await source.refile(message_id, folder)
    except Exception as exc:  # IMAP down: try again later, like any other delivery
        delivery._retry(tx, row, backoff(row.attempts), f"IMAP move: {exc}")
        return
    tx.event("refiled", row.message_ref, None, None, folder=folder,
             moved=moved)
    tx.outbox_done(row.id, {"moved": moved, "folder": folder})
