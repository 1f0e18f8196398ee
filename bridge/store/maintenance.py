"""Operator-side writes and transaction plumbing: retention, reconcile's closes, admin alerts,
per-message savepoints, the scratch copy `simulate` starts from, the lock wait of `ingest`.

`MaintenanceMixin` is part of `Store`. Each write records its event in the same transaction as
the change, so the audit trail never shows a change that did not happen or misses one that did.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bridge.models import OutboxItem
from bridge.store.base import EventRow

PRUNE_BATCH = 2000  # rows per write transaction: a long prune never blocks the pipeline for long

# The live state a preview starts from. Unfinished outbox rows bring the message rows they
# belong to (without their raw bytes), so their outcomes can still settle in the preview.
_COPY_LIVE = [
    "INSERT INTO messages SELECT * FROM live.messages WHERE id IN (SELECT message_ref FROM"
    " live.outbox WHERE state IN ('pending','in_flight'))",
    "INSERT INTO correlations SELECT * FROM live.correlations WHERE state='open'",
    "INSERT INTO storm_members SELECT * FROM live.storm_members WHERE storm_id IN"
    " (SELECT correlation_id FROM live.correlations WHERE state='open')",
    "INSERT INTO outbox SELECT * FROM live.outbox WHERE state IN ('pending','in_flight')",
    "UPDATE outbox SET state='pending' WHERE state='in_flight'",
    # Expected mail: a report in the preview moves its deadline (or resolves its outage), and
    # a deadline passed at the preview's clock opens what `run` would open.
    "INSERT INTO expectations SELECT * FROM live.expectations",
]


class MaintenanceMixin:
    conn: sqlite3.Connection
    clock: Callable[[], float]
    _event_rows: list[EventRow] | None

    if TYPE_CHECKING:  # provided by Store and its other mixins
        def write(self, durable: bool = False) -> contextlib.AbstractContextManager[
            sqlite3.Connection]: ...

        def _event(self, conn: sqlite3.Connection, kind: str, message_ref: int | None,
                   alert_key: str | None, outcome: str | None,
                   detail: dict[str, Any]) -> None: ...

        def close_correlation(self, correlation_id: str) -> None: ...

        def set_meta(self, key: str, value: str) -> None: ...

        def enqueue(self, item: OutboxItem, message_ref: int | None, now: float | None = None,
                    arrived_at: float | None = None) -> int: ...

    # -- retention ----------------------------------------------------------------------------

    def prune_before(self, cut: float, correlations_cut: float, batch: int = PRUNE_BATCH,
                     **detail: Any) -> dict[str, int]:
        """Delete, `batch` rows per transaction: raw bytes of finished messages staged before
        `cut`, events before `cut`, delivered outbox rows updated before `cut`, closed or
        void correlations last seen before `correlations_cut`. Returns the count per step.
        When anything went, the `pruned` event (with `detail` and the counts) is recorded in
        the last transaction."""
        steps = [
            ("raw_cleared", "DELETE FROM raw_messages WHERE message_ref IN (SELECT m.id FROM"
             " messages m JOIN raw_messages r ON r.message_ref = m.id"
             " WHERE m.state='done' AND m.staged_at < ? LIMIT ?)", cut),
            ("events_deleted", "DELETE FROM events WHERE id IN (SELECT id FROM events"
             " WHERE at < ? LIMIT ?)", cut),
            ("outbox_deleted", "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE"
             " state='done' AND updated_at < ? LIMIT ?)", cut),
            ("correlations_deleted", "DELETE FROM correlations WHERE correlation_id IN"
             " (SELECT correlation_id FROM correlations WHERE state IN ('closed','void','damped')"
             " AND coalesce(closed_at, last_seen_at) < ? LIMIT ?)", correlations_cut),
        ]
        counts: dict[str, int] = {}
        for i, (name, sql, cutoff) in enumerate(steps):
            total = 0
            while True:
                with self.write() as conn:
                    n = conn.execute(sql, (cutoff, batch)).rowcount
                    total += n
                    if n < batch and i == len(steps) - 1:
                        counts[name] = total
                        if any(counts.values()):
                            self._event(conn, "pruned", None, None, None,
                                        {**detail, "counts": counts})
                if n < batch:
                    break
            counts[name] = total
        return counts

    # -- reconcile and admin alerts -----------------------------------------------------------

    def close_reconciled(self, correlation_id: str, alert_key: str | None, reason: str) -> None:
        """Close a correlation the PSA no longer has open, with its `reconciled` event."""
        with self.write() as conn:
            self.close_correlation(correlation_id)
            self._event(conn, "reconciled", None, alert_key, None,
                        {"correlation_id": correlation_id, "reason": reason})

    def record_admin_alert(self, kind: str, message: str, now: float,
                           mail: OutboxItem | None) -> None:
        """An admin alert was raised: when (for the reminder interval), its event, and the mail
        to the administrator if there is one to send — in one transaction."""
        with self.write() as conn:
            self.set_meta(f"admin_alert:{kind}", str(now))
            self._event(conn, "admin-alert", None, None, None, {"kind": kind, "message": message})
            if mail is not None:
                self.enqueue(mail, None)

    # -- transaction plumbing -----------------------------------------------------------------

    @contextlib.contextmanager
    def savepoint(self, name: str = "msg") -> Iterator[None]:
        """Inside a write transaction: what the block wrote is undone if it raises (the
        exception goes on), the rest of the transaction is kept — events waiting in a
        `batched_events` block included."""
        events = self._event_rows
        mark = len(events) if events is not None else 0
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            if events is not None:
                del events[mark:]
            raise
        self.conn.execute(f"RELEASE {name}")

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's lock before it fails as busy."""
        self.conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def copy_live_state(self, live_path: Path) -> None:
        """Fill this (scratch) store with the live store's state a preview starts from: open
        correlations and their storm members, unfinished outbox rows (in flight ones pending
        again) and their messages, the expected-mail deadlines — never raw mail or events. The live file is only read."""
        if not live_path.exists():
            return
        uri = f"file:{live_path.resolve()}?mode=ro"
        self.conn.execute("ATTACH DATABASE ? AS live", (uri,))
        try:
            with self.write() as conn:
                for sql in _COPY_LIVE:
                    conn.execute(sql)
        finally:
            self.conn.execute("DETACH DATABASE live")
