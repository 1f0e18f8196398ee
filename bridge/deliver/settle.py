"""How a delivered outbox row is settled: the writes it causes, its payload, its next wait.

`Writes` records the store writes one delivery causes and applies them in one transaction;
`with_occurrences` is the payload to send (an append covering several occurrences says so);
`backoff` is the wait before the next attempt (Retry-After when given, else exponential with
jitter); the constants are the worker's limits and hold times. Used by `Delivery`
(`bridge.deliver.outbox`, which re-exports these names) and its target handlers.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

from bridge.deliver.psa_wire import truncate
from bridge.store.db import OutboxRow, Store
# Crashes of the deliverer on a row (an exception, or the process dying with the row in flight)
# before it goes dead; counted in the row's own `crashes`, never in `attempts`, so transient
# retries (503s, timeouts) do not use it up. Defined by the store, which counts the deaths.
from bridge.store.outbox import CRASH_LIMIT
RETRY_CAP = 15 * 60.0    # longest wait between two attempts of a temporary failure
HOLD_DELAY = 5 * 60.0    # 409: the partner may re-enable the integration; ask slowly
AUTH_RECHECK = 10 * 60.0 # credentials refused: try again now and then even without a reload


class Writes:
    """The store writes one delivery causes, recorded and then applied in one transaction
    on the store's thread (a call used to cost four or five separate commits). Each method
    records the Store method of the same name with the same arguments."""

    def __init__(self) -> None:
        self.ops: list[Callable[[Store], object]] = []

    def event(self, kind: str, message_ref: int | None = None, alert_key: str | None = None,
              outcome: str | None = None, /, **detail: Any) -> None:
        self.ops.append(lambda s: s.event(kind, message_ref, alert_key, outcome, **detail))

    def outbox_done(self, row_id: int, result: dict[str, Any]) -> None:
        self.ops.append(lambda s: s.outbox_done(row_id, result))

    def outbox_dead(self, row_id: int, reason: str) -> None:
        self.ops.append(lambda s: s.outbox_dead(row_id, reason))

    def outbox_retry(self, row_id: int, next_at: float, error: str) -> None:
        self.ops.append(lambda s: s.outbox_retry(row_id, next_at, error))

    def outbox_crashed(self, row_id: int, next_at: float, error: str) -> None:
        self.ops.append(lambda s: s.outbox_crashed(row_id, next_at, error))

    def set_outcome(self, message_ref: int | None, outcome: str, reason: str) -> None:
        self.ops.append(lambda s: s.set_outcome(message_ref, outcome, reason))

    def confirm_correlation(self, correlation_id: str, psa_id: str | None) -> None:
        self.ops.append(lambda s: s.confirm_correlation(correlation_id, psa_id))

    def close_correlation(self, correlation_id: str) -> None:
        self.ops.append(lambda s: s.close_correlation(correlation_id))

    def void_correlation(self, correlation_id: str, reason: str) -> None:
        self.ops.append(lambda s: s.void_correlation(correlation_id, reason))

    def apply(self, store: Store) -> None:
        if not self.ops:
            return
        with store.write():
            for op in self.ops:
                op(store)


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
