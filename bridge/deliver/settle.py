"""How a delivered outbox row is settled: its settlement, its payload, its next wait.

A target returns a `Settlement` (built with `done`, `settled`, `dead`, `failed`, `retry`,
`wait_until`); `apply_settlement` writes it in one transaction, `apply_settlements` writes
several in one (group commit). `with_occurrences` is the ticket
call to send (an append covering several occurrences says so); `backoff` is the wait before the next
attempt (Retry-After when given, else exponential with jitter); the constants are the worker's
limits and hold times; `TargetEnv` is what every target may use. Used by `Delivery`
(`bridge.deliver.outbox`) and the targets (`bridge.deliver.registry`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from bridge.config import Settings
from bridge.deliver.psa_wire import truncate
from bridge.models import Outcome, TicketCall
from bridge.seams import CorrelationOp, Effect, Event, RowState, Settlement
from bridge.store.db import OutboxRow
# Crashes of the deliverer on a row (an exception, or the process dying with the row in flight)
# before it goes dead; counted in the row's own `crashes`, never in `attempts`, so transient
# retries (503s, timeouts) do not use it up. Defined by the store, which counts the deaths.
from bridge.store.outbox import CRASH_LIMIT
RETRY_CAP = 15 * 60.0    # longest wait between two attempts of a temporary failure
HOLD_DELAY = 5 * 60.0    # 409: the partner may re-enable the integration; ask slowly
AUTH_RECHECK = 10 * 60.0 # credentials refused: try again now and then even without a reload

if TYPE_CHECKING:
    from bridge.store.db import AsyncStore, Store


class Mailbox(Protocol):
    """A mailbox the IMAP-move target refiles in (an IMAP source)."""

    async def refile(self, message_id: str, folder: str) -> int: ...


@dataclass(frozen=True)
class TargetEnv:
    """What every delivery target may use besides its own peer."""

    store: AsyncStore
    settings: Settings
    clock: Callable[[], float]
    new_id: Callable[[], str]  # a fresh correlation id (a create made anew)
    mailboxes: Mapping[str, Mailbox] = field(default_factory=dict)  # IMAP sources by name


# -- settlements: what the targets return -----------------------------------------------------

def done(result: Mapping[str, object], *effects: Effect) -> Settlement:
    return Settlement(RowState.DONE, "", result=result, effects=effects)


def settled(outcome: Outcome, reason: str, *effects: Effect) -> Settlement:
    """Done, and the row's message ends with `outcome`."""
    return Settlement(RowState.DONE, reason, outcome,
                      result={"outcome": outcome.value, "reason": reason}, effects=effects)


def dead(reason: str, *effects: Effect) -> Settlement:
    return Settlement(RowState.DEAD, reason, effects=effects)


def failed(reason: str, *effects: Effect) -> Settlement:
    """Dead, and the row's message ends `failed`."""
    return Settlement(RowState.DEAD, reason, Outcome.FAILED, effects=effects)


def retry(row: OutboxRow, now: float, wait: float, error: str, *effects: Effect) -> Settlement:
    """Again after `wait` seconds, with a `retry` event saying why."""
    event = Event("retry", row.message_ref, row.ordering_key, None,
                  {"outbox": row.id, "attempt": row.attempts, "wait": round(wait, 1),
                   "error": error})
    return Settlement(RowState.RETRY, error, retry_at=now + wait, effects=(*effects, event))


def wait_until(at: float, reason: str, *effects: Effect) -> Settlement:
    """Again at `at`, without a retry event (the row is waiting, nothing failed)."""
    return Settlement(RowState.RETRY, reason, retry_at=at, effects=effects)


def apply_settlement(store: Store, row: OutboxRow, s: Settlement) -> None:
    """Everything one attempt changes, in one transaction on the store's thread (a call used
    to cost four or five separate commits)."""
    with store.write():
        _apply_effects(store, s)
        _apply_state(store, row, s)
        if s.outcome is not None:
            store.set_outcome(row.message_ref, s.outcome.value, s.reason)


def _apply_effects(store: Store, s: Settlement) -> None:
    for effect in s.effects:
        if isinstance(effect, Event):
            store.event(effect.kind, effect.message_ref, effect.alert_key, effect.outcome,
                        **effect.detail)
        elif effect.op is CorrelationOp.CONFIRM:
            store.confirm_correlation(effect.correlation_id, effect.value)
        elif effect.op is CorrelationOp.CLOSE:
            store.close_correlation(effect.correlation_id)
        else:
            store.void_correlation(effect.correlation_id, effect.value or "")


def _apply_state(store: Store, row: OutboxRow, s: Settlement) -> None:
    at = s.retry_at if s.retry_at is not None else store.clock()
    if s.state is RowState.DONE:
        store.outbox_done(row.id, dict(s.result or {}))
    elif s.state is RowState.RETRY:
        store.outbox_retry(row.id, at, s.reason)
    elif s.state is RowState.CRASHED:
        store.outbox_crashed(row.id, at, s.reason)
    else:
        store.outbox_dead(row.id, s.reason)


def apply_settlements(store: Store, batch: Sequence[tuple[OutboxRow, Settlement]]
                      ) -> list[Exception | None]:
    """Several rows' settlements in one transaction (group commit, bridge.deliver.groupcommit),
    their events inserted together. A row whose writes fail is undone alone, and its exception
    is returned in its place (None: written): the batch is tried as a whole first (one
    savepoint, one statement per kind of write), and only when that fails row by row, each
    in a savepoint of its own."""
    with store.write(), store.batched_events():
        try:
            with store.savepoint("settle"):
                _apply_together(store, batch)
        except Exception:  # some row's writes failed (all undone): each row alone now
            pass
        else:
            return [None] * len(batch)
        errors: list[Exception | None] = []
        for row, s in batch:
            try:
                with store.savepoint("settle"):
                    apply_settlement(store, row, s)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
    return errors


def _apply_together(store: Store, batch: Sequence[tuple[OutboxRow, Settlement]]) -> None:
    """`apply_settlement` for each row, with the rows done and the messages' outcomes written
    together at the end. Those writes touch neither correlations nor rows still pending, so
    moving them after the other rows' writes changes nothing; the events stay in order."""
    done: list[tuple[int, dict[str, Any]]] = []
    outcomes: list[tuple[int, str, str]] = []
    for row, s in batch:
        _apply_effects(store, s)
        if s.state is RowState.DONE:
            done.append((row.id, dict(s.result or {})))
        else:
            _apply_state(store, row, s)
        if s.outcome is not None and row.message_ref is not None:
            outcomes.append((row.message_ref, s.outcome.value, s.reason))
            store.event("outcome", row.message_ref, None, s.outcome.value, reason=s.reason)
    store.outbox_settled(done, outcomes)


PSA_OUTCOME = {"created": Outcome.CREATED, "updated": Outcome.APPENDED,
               "closed": Outcome.RESOLVED, "suppressed": Outcome.SUPPRESSED}


def with_occurrences(row: OutboxRow, limit: int | None = None) -> TicketCall:
    """The ticket call to send; an append that covers several occurrences says so.

    The note goes at the end of the summary; when `limit` (the PSA client's summary length) is
    given, the alert's own text is shortened instead, so the client's cut never drops the note."""
    call = TicketCall.from_payload(row.payload)
    if row.occurrences > 1 and row.first_arrived_at and row.last_arrived_at:
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.first_arrived_at))
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.last_arrived_at))
        note = (f"\n\n[mailbridge] This update covers {row.occurrences} occurrences,"
                f" first {first} UTC, last {last} UTC.")
        summary = call.summary
        if limit is not None and len(summary) + len(note) > limit:
            summary = truncate(summary, max(limit - len(note), 1))
        call = replace(call, summary=summary + note)
    return call


def backoff(attempts: int, retry_after: float | None = None, cap: float = RETRY_CAP) -> float:
    """Seconds to wait: the server's Retry-After when given, else exponential with jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    base = min(cap, 2.0 ** min(attempts, 20))
    return base * random.uniform(0.5, 1.0)
