"""The plumbing every part of `Store` builds on: the connection, transactions, reads, events.

`StoreBase` declares what `Store.__init__` (bridge.store.db) sets up and implements the
helpers on top of it; the domain mixins (`staging`, `decisions`, `outbox`, `owners`, `reads`)
inherit from it, so each one is type-checked against the attributes it really uses.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import sqlite3
from typing import Any, Callable, Iterator

import sqlite_utils

events_log = logging.getLogger("mailbridge.events")
# Events an administrator reading the log should not miss. (Not a voided correlation: a
# create the PSA refused or suppressed is that message's outcome, an expected answer.)
TROUBLE_EVENTS = frozenset({"retry", "dead", "rules-reload-failed", "admin-alert",
                            "xml-reply-limited"})


# An event row as inserted: at, kind, message_ref, alert_key, outcome, detail (JSON text).
EventRow = tuple[float, str, int | None, str | None, str | None, str | None]
_INSERT_EVENT = ("INSERT INTO events (at, kind, message_ref, alert_key, outcome, detail)"
                 " VALUES (?,?,?,?,?,?)")
# One encoder for every event (json.dumps with `default=` builds a new one per call).
_JSON = json.JSONEncoder(default=str)


def no_redaction(text: str) -> str:
    return text


def inserted_id(cur: sqlite3.Cursor) -> int:
    """The rowid an INSERT just made (always set after one)."""
    if cur.lastrowid is None:
        raise RuntimeError("no row was inserted")
    return cur.lastrowid


class StoreBase:
    """Connection plumbing shared by the store's mixins (set up by `Store.__init__`)."""

    path: str
    clock: Callable[[], float]  # injected in tests: due times and windows follow it
    readonly: bool
    # The owner (see bridge.store.lease) under which this connection's claims are recorded;
    # None: claims without an owner, taken back by any reclaim (the pre-owner behaviour).
    owner: str | None
    conn: sqlite3.Connection
    db: sqlite_utils.Database
    # Applied to every event's detail before it is stored or logged (the daemon sets the
    # secrets redactor).
    redact: Callable[[str], str]
    # False in a throwaway replay store (`rules diff`): no decision reads the audit trail, and
    # writing it was a sixth of a replay's CPU.
    record_events: bool = True
    # Inside `batched_events`: the events made so far, inserted together when it ends.
    _event_rows: list[EventRow] | None = None

    def write(self, durable: bool = False
              ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction, taken IMMEDIATE so read-decide-write cannot interleave with
        another process. `durable` commits with synchronous=FULL (staging: the source is told
        the message is taken right after)."""
        if self.conn.in_transaction:  # nested: join the outer transaction
            # A plain context manager: a batch joins it for every event and outbox row.
            return contextlib.nullcontext(self.conn)
        return self._transaction(durable)

    @contextlib.contextmanager
    def _transaction(self, durable: bool) -> Iterator[sqlite3.Connection]:
        if durable:
            self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                         " DO UPDATE SET value=excluded.value", (key, value))

    def get_meta(self, key: str) -> str | None:
        value = self.scalar("SELECT value FROM meta WHERE key=?", (key,))
        return None if value is None else str(value)

    # -- events -------------------------------------------------------------------------------

    def event(self, kind: str, message_ref: int | None = None, alert_key: str | None = None,
              outcome: str | None = None, /, **detail: Any) -> None:
        with self.write() as conn:
            self._event(conn, kind, message_ref, alert_key, outcome, detail)

    @contextlib.contextmanager
    def batched_events(self) -> Iterator[None]:
        """Inside a write transaction: the events made in the block are inserted together at
        its end (one statement for many rows, in the order they were made); a savepoint that
        rolls back drops its own (`MaintenanceMixin.savepoint`)."""
        if self._event_rows is not None:  # nested: the outer block inserts them
            yield
            return
        rows: list[EventRow] = []
        self._event_rows = rows
        try:
            yield
            self.conn.executemany(_INSERT_EVENT, rows)
        finally:
            self._event_rows = None

    def _event(self, conn: sqlite3.Connection, kind: str, message_ref: int | None,
               alert_key: str | None, outcome: str | None, detail: dict[str, Any]) -> None:
        if not self.record_events:
            return
        if isinstance(outcome, enum.Enum):  # an enum's plain value, never its repr
            outcome = str(outcome.value)
        text = self.redact(_JSON.encode(detail)) if detail else None
        row = (self.clock(), kind, message_ref, alert_key, outcome, text)
        if self._event_rows is not None:
            self._event_rows.append(row)
        else:
            conn.execute(_INSERT_EVENT, row)
        # The same event, one log line (the log handler redacts again and formats it).
        level = logging.WARNING if kind in TROUBLE_EVENTS else logging.INFO
        if events_log.isEnabledFor(level):
            extra = {k: v for k, v in (("message_ref", message_ref), ("alert_key", alert_key))
                     if v is not None}
            events_log.log(level, "%s%s %s", kind, f" -> {outcome}" if outcome else "",
                           text or "", extra=extra)
