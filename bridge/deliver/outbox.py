"""The outbox worker: takes due rows, hands each to its target, and settles it (SPEC §3.6).

Rows of one ordering key go strictly one after another (the store only hands out the oldest
unfinished row of a key), different keys go concurrently up to `psa.concurrency`. Each row goes
to the target registered for its kind and instance (`bridge.deliver.registry`: the PSA, mail,
webhooks, IMAP moves), which makes one attempt and returns a `Settlement` — plain data: the
row's state, the message's outcome, the retry time, the correlation changes and events — that
is written here in one transaction, together with those of the calls that ended with it
(group commit, bridge.deliver.groupcommit). A row whose target is gone (a reload removed it) is held
with the reason, never dropped. A row whose delivery crashes the worker (or dies with it)
CRASH_LIMIT times goes `dead` with the reason instead of blocking its key for ever; transient
retries do not count towards that cap. A target that reports our credentials refused pauses
its kind until a reload (or a recheck now and then).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Mapping

from bridge.config import Settings
from bridge.decide.core import new_correlation_id
from bridge.deliver.groupcommit import GroupCommit
from bridge.deliver.peers import CURRENT_ROW, Peers
from bridge.deliver.registry import (CLAIMED_WITHOUT_INSTANCE, address_of, build_targets,
                                     missing_reason)
from bridge.deliver.settle import (AUTH_RECHECK, CRASH_LIMIT, HOLD_DELAY, PSA_OUTCOME,
                                   RETRY_CAP, Mailbox, TargetEnv, backoff, retry,
                                   with_occurrences)
from bridge.models import Outcome
from bridge.seams import Event, RowState, Settlement, Target
from bridge.store.db import AsyncStore, OutboxRow
from bridge.store.owners import HEARTBEAT

if TYPE_CHECKING:
    from bridge.deliver.psa import PsaClient
    from bridge.deliver.smtp import SmtpSender
    from bridge.deliver.webhook import WebhookTarget
    from bridge.operator.status import RuntimeStatus

__all__ = ["AUTH_RECHECK", "CRASH_LIMIT", "HOLD_DELAY", "PSA_OUTCOME", "RETRY_CAP", "Delivery",
           "backoff", "with_occurrences"]

log = logging.getLogger("mailbridge.outbox")
RECLAIM_EVERY = HEARTBEAT  # seconds between two looks for rows left by a dead deliverer


class Delivery:
    def __init__(self, store: AsyncStore, settings: Settings, *, psa: PsaClient | None = None,
                 smtp: SmtpSender | None = None,
                 webhooks: Mapping[str, WebhookTarget] | None = None,
                 mailboxes: Mapping[str, Mailbox] | None = None,
                 runtime: RuntimeStatus | None = None,
                 clock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] = new_correlation_id):
        self.store = store
        self.settings = settings
        self.runtime = runtime
        self.clock = clock
        self.new_id = new_id
        self._peers = Peers(psa, smtp, dict(webhooks or {}))
        self._mailboxes: dict[str, Mailbox] = dict(mailboxes or {})  # IMAP sources by name
        self.targets: dict[str, Target] = {}
        # Kinds whose peer refused our credentials: why, and when to try once more anyway.
        self._paused: dict[str, tuple[str, float]] = {}
        self.wake = asyncio.Event()
        self._calling = 0  # calls of the drain's window under way (their settlements not made)
        # Settlements of calls that end together: one commit. It waits for company only
        # while other calls are still under way.
        self._commit = GroupCommit(store, busy=lambda: self._calling > 0)
        self._retired: list[Peers] = []  # peers replaced by a reload, closed after their calls
        self._build()

    def _build(self) -> None:
        """A fresh registry; calls in flight keep the targets they started with."""
        env = TargetEnv(self.store, self.settings, self.clock, self.new_id, self._mailboxes)
        self.targets = build_targets(env, self._peers)

    # -- control ------------------------------------------------------------------------------

    @property
    def psa(self) -> PsaClient | None:
        return self._peers.psa

    @psa.setter
    def psa(self, client: PsaClient | None) -> None:
        self._peers = replace(self._peers, psa=client)
        self._build()

    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        return dict(self._mailboxes)

    @mailboxes.setter
    def mailboxes(self, sources: Mapping[str, Mailbox]) -> None:
        self._mailboxes = dict(sources)
        self._build()

    @property
    def psa_refused(self) -> str | None:
        """Why the PSA refused our credentials (HTTP status and message), until a reload."""
        paused = self._paused.get("psa")
        return paused[0] if paused else None

    def use(self, settings: Settings, peers: Peers) -> None:
        """A reload's fresh peers and settings, for every row claimed from now on. Calls in
        flight finish on the old peers, which are closed once the current pass has ended."""
        self._retired.append(self._peers)
        self.settings = settings
        self._peers = peers
        self._build()
        self._paused.clear()
        self.resume_psa()

    async def aclose(self) -> None:
        await self._close_retired()
        await self._peers.aclose()

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
        self._paused.pop("psa", None)
        if self.runtime is not None:
            self.runtime.psa_auth_ok()
        self.wake.set()

    def _kinds(self) -> tuple[str, ...]:
        now = self.clock()
        kinds = {t.kind for t in self.targets.values()} | CLAIMED_WITHOUT_INSTANCE
        return tuple(sorted(k for k in kinds
                            if k not in self._paused or now >= self._paused[k][1]))

    def _pause(self, kind: str, why: str) -> None:
        self._paused[kind] = (why, self.clock() + AUTH_RECHECK)
        if kind == "psa" and self.runtime is not None:
            self.runtime.psa_auth_refused(why)
        log.error("%s refused mailbridge's credentials (%s); sending stopped until the"
                  " credentials are reloaded (systemctl reload mailbridge)",
                  "the PSA" if kind == "psa" else f"the {kind} target", why)

    # -- loops --------------------------------------------------------------------------------

    async def drain(self, behind_backlog: int | None = None) -> int:
        """Send everything that is due now; return how many rows were attempted.

        A sliding window: up to `psa.concurrency` calls are in flight at any time, and a slot
        is refilled as soon as its call has ended — while the call's settlement waits for its
        group commit (its row stays in flight in the store until then, so the next row of
        its key cannot be claimed before it is written). Replies to XML transactions wait
        until the window is empty, so they report the results of the calls sent in the same
        pass. `behind_backlog`: see `Store.claim_outbox`."""
        limit = self.settings.psa.concurrency
        tasks: set[asyncio.Task[None]] = set()  # calls, and settlements not yet committed
        ready: collections.deque[OutboxRow] = collections.deque()
        replies: list[OutboxRow] = []
        total = 0
        woken = asyncio.Event()
        settled = [True]  # a row was settled since the last claim (its key's next may be due)

        def ended(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            settled[0] = True
            woken.set()

        try:
            while True:
                rows: list[OutboxRow] = []
                want = 2 * limit - len(ready) - self._calling
                # Claim ahead (rows claimed are in flight: a crash hands them back at
                # start-up), so one claim transaction serves many calls; claim again once
                # half of those are under way, and only when it can find more than the last
                # claim did (it was full, or a row was settled since).
                if len(ready) <= limit // 2 and want > 0 and settled[0]:
                    rows = await self.store.claim_outbox(self.clock(), want, self._kinds(),
                                                         behind_backlog)
                    settled[0] = len(rows) == want
                    total += len(rows)
                    for row in rows:
                        if row.kind == "smtp" and row.payload.get("type") == "reply":
                            replies.append(row)
                        else:
                            ready.append(row)
                while ready and self._calling < limit:
                    self._calling += 1
                    task = asyncio.ensure_future(self._windowed(ready.popleft(), woken))
                    tasks.add(task)
                    task.add_done_callback(ended)
                if tasks:
                    woken.clear()
                    await woken.wait()
                elif replies:
                    await asyncio.gather(*(self.deliver(r) for r in replies))
                    replies.clear()
                elif not rows and not ready:
                    return total
        finally:
            if tasks:  # cancelled (shutdown): let the calls in flight end, up to the caller
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._retired:
                await self._close_retired()
            # Rows claimed ahead but not started stay in flight in the store until this
            # owner's lease ends (then `reclaim_in_flight` hands them back). Hand them back
            # now if we can.
            if ready or replies:
                await self.store.release_outbox([r.id for r in [*ready, *replies]])

    async def run_until(self, done: asyncio.Future[object], queued_after: int) -> None:
        """`run --once`: send what is due each time processing wakes delivery (a batch was
        processed), until `done` (the processing) has ended; the caller drains the rest. Only
        rows queued by this run (after id `queued_after`) go meanwhile, and those held on the
        arrival clock wait for the backlog behind them (`Store.claim_outbox`), so what
        `run --once` sends does not depend on how far processing had got."""
        while not done.done():
            self.wake.clear()
            await self.drain(behind_backlog=queued_after)
            waker: asyncio.Future[object] = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait((waker, done), return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()

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
        await self._commit.settle(row, await self._attempt(row))

    async def _windowed(self, row: OutboxRow, freed: asyncio.Event) -> None:
        """`deliver` in the drain's window: the slot is free again (`freed`) once the call
        has ended."""
        try:
            settlement = await self._attempt(row)
        finally:
            self._calling -= 1
            freed.set()
        await self._commit.settle(row, settlement)

    async def _attempt(self, row: OutboxRow) -> Settlement:
        CURRENT_ROW.set(row.id)  # this task's row, for the dry-run peers' request log
        target = self.targets.get(address_of(row))
        try:
            if target is None:
                # A reload removed it (or renamed it): hold the row (the admin may restore the
                # target, or give up with `mailbridge outbox drop ID`), never drop it silently.
                settlement = retry(row, self.clock(), HOLD_DELAY, missing_reason(row))
            else:
                settlement = await target.deliver(row)
        except Exception as exc:  # a bug or an unexpected peer answer: count it, never loop
            log.exception("outbox row %s crashed", row.id)
            settlement = self._crashed(row, f"{type(exc).__name__}: {exc}")
        if target is not None and settlement.refused is not None:
            self._pause(target.kind, settlement.refused)
        elif target is not None and target.kind == "psa" and _answered(settlement):
            # Any answer but 401/403 means the credentials were accepted: `PSA auth` shows
            # the last call's result, not only what a reload set.
            self._paused.pop("psa", None)
            if self.runtime is not None and self.runtime.psa_auth != "ok":
                self.runtime.psa_auth_ok()
        return settlement

    def _crashed(self, row: OutboxRow, reason: str) -> Settlement:
        crashes = row.crashes + 1
        if crashes < CRASH_LIMIT:
            return Settlement(RowState.CRASHED, reason, retry_at=self.clock() + backoff(crashes))
        reason = f"delivery crashed {crashes} times; last: {reason}"
        return Settlement(RowState.DEAD, reason, Outcome.FAILED, effects=(
            Event("dead", row.message_ref, row.ordering_key, "failed",
                  {"outbox": row.id, "reason": reason}),))

    async def render(self, row: OutboxRow) -> dict[str, object]:
        """The request this row's target would send now (nothing is sent): what `simulate`
        can show for a call."""
        target = self.targets.get(address_of(row))
        if target is None:
            return {"kind": row.kind, "held": missing_reason(row)}
        return await target.render(row)


def _answered(settlement: Settlement) -> bool:
    """Whether the PSA answered this row's call with an HTTP status (its `sent` event)."""
    return any(isinstance(e, Event) and e.kind == "sent" and e.detail.get("http_status")
               for e in settlement.effects)
