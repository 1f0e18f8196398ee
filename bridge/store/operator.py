"""The operator's reads: the numbers and rows behind `status`, the dashboard, `/metrics`,
`events`, `tickets`, `quarantine`, `reconcile` and the demo's report.

`OperatorMixin` is part of `Store` (it relies on `conn` and `db`). It returns plain data
straight from the tables; turning it into views (redaction, decoding headers, ages) is
`bridge.operator.views`' job. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

import sqlite_utils

from bridge.models import Outcome

OUTCOMES = [o.value for o in Outcome]
_OUTCOME_MARKS = ",".join("?" * len(OUTCOMES))
HEAD_BYTES = 16384  # enough for any sane header block; never the body


class OperatorMixin:
    conn: sqlite3.Connection
    db: sqlite_utils.Database

    def _counts(self, sql: str, params: Sequence[Any] = ()) -> dict[str, int]:
        return {row[0]: row[1] for row in self.conn.execute(sql, params).fetchall()}

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.conn.execute(sql, params).fetchone()[0])

    # -- counts (status, dashboard, metrics, health) ------------------------------------------

    def outcome_counts(self, since: float | None = None) -> dict[str, int]:
        """Messages by outcome, all time or recorded since `since` (uses the outcome index)."""
        if since is None:
            return self._counts("SELECT outcome, count(*) FROM messages WHERE outcome IS NOT"
                                " NULL GROUP BY outcome")
        return self._counts(f"SELECT outcome, count(*) FROM messages WHERE outcome IN"
                            f" ({_OUTCOME_MARKS}) AND updated_at >= ? GROUP BY outcome",
                            (*OUTCOMES, since))

    def unfinished_message_counts(self) -> dict[str, int]:
        """Messages by state among staged, processing and pending (absent states: no key)."""
        return self._counts("SELECT state, count(*) FROM messages WHERE state IN"
                            " ('staged','processing','pending') GROUP BY state")

    def outbox_state_counts(self) -> dict[str, int]:
        """Rows by state; dead rows the administrator acknowledged count as 'acknowledged'."""
        return self._counts("SELECT CASE WHEN state='dead' AND acknowledged_at IS NOT NULL"
                            " THEN 'acknowledged' ELSE state END AS s, count(*) FROM outbox"
                            " GROUP BY s")

    def failures_since(self, since: float) -> int:
        """Messages that failed plus outbox rows that went dead, recorded since `since`."""
        failed = self._count("SELECT count(*) FROM messages WHERE outcome='failed'"
                             " AND updated_at >= ?", (since,))
        dead = self._count("SELECT count(*) FROM outbox WHERE state='dead'"
                           " AND updated_at >= ?", (since,))
        return failed + dead

    def open_ticket_count(self) -> int:
        return self._count("SELECT count(*) FROM correlations WHERE state='open'")

    def dead_outbox_count(self) -> int:
        """Dead rows nobody has acknowledged yet (`outbox ack`): what still needs a person."""
        return self._count("SELECT count(*) FROM outbox WHERE state='dead'"
                           " AND acknowledged_at IS NULL")

    def held_outbox(self, now: float) -> tuple[int, float | None]:
        """Rows waiting to go later (holds, backoff): how many and when the last is due."""
        n, last = self.conn.execute("SELECT count(*), max(next_attempt_at) FROM outbox WHERE"
                                    " state='pending' AND next_attempt_at > ?",
                                    (now,)).fetchone()
        return int(n), None if last is None else float(last)

    def last_psa_call(self, since: float) -> dict[str, Any] | None:
        """The latest PSA call since `since` (its `sent` event): at, verdict, detail JSON."""
        row = self.conn.execute("SELECT at, outcome, detail FROM events WHERE at > ? AND"
                                " kind='sent' ORDER BY at DESC, id DESC LIMIT 1",
                                (since,)).fetchone()
        return None if row is None else {"at": row[0], "verdict": row[1], "detail": row[2]}

    def refused_creates(self, since: float) -> list[dict[str, Any]]:
        """Creates the PSA answered with 404 since `since` (their `create-refused` events)."""
        return [{"at": r[0], "message_ref": r[1], "alert_key": r[2], "detail": r[3]}
                for r in self.conn.execute(
                    "SELECT at, message_ref, alert_key, detail FROM events WHERE at > ? AND"
                    " kind='create-refused' ORDER BY at", (since,)).fetchall()]

    def stuck_staged_count(self, staged_before: float) -> int:
        return self._count("SELECT count(*) FROM messages WHERE state='staged'"
                           " AND staged_at < ?", (staged_before,))

    def oldest_unsent_at(self) -> float | None:
        """When the oldest pending or in-flight outbox row was created (None: none waits)."""
        value = self.conn.execute("SELECT min(created_at) FROM outbox WHERE state IN"
                                  " ('pending','in_flight')").fetchone()[0]
        return None if value is None else float(value)

    def outcomes_by_hour(self, first: float) -> list[tuple[str, int, int]]:
        """(outcome, hours after `first`, count) of messages whose outcome was recorded since
        `first`, for the dashboard's chart."""
        return [(str(o), int(h), int(n)) for o, h, n in self.conn.execute(
            f"SELECT outcome, CAST((updated_at - ?) / 3600 AS INTEGER) AS h, count(*)"
            f" FROM messages WHERE outcome IN ({_OUTCOME_MARKS}) AND updated_at >= ?"
            f" GROUP BY outcome, h", (first, *OUTCOMES, first)).fetchall()]

    # -- rows ---------------------------------------------------------------------------------

    def event_rows(self, *, message_ref: int | None = None, alert_key: str | None = None,
                   since: float | None = None, outcome: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        """The latest `limit` matching events, newest first, `detail` as stored (JSON text).
        `alert_key` also selects the events of the key's messages that carry no key
        themselves; `outcome` also every event of messages that ended in it."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if message_ref is not None:
            where.append("message_ref = ?")
            params.append(message_ref)
        if alert_key is not None:
            where.append("(alert_key = ? OR message_ref IN (SELECT id FROM messages"
                         " WHERE alert_key = ?))")
            params += [alert_key, alert_key]
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if outcome is not None:
            where.append("(outcome = ? OR message_ref IN (SELECT id FROM messages"
                         " WHERE outcome=?))")
            params += [outcome, outcome]
        return list(self.db.query(
            f"SELECT id, at, kind, message_ref, alert_key, outcome, detail FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", [*params, limit]))

    def open_ticket_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Open correlations, most recently seen first."""
        return list(self.db.query(
            "SELECT correlation_id, alert_key, account_id, product_group, alert_type, title,"
            " opened_at, last_seen_at, occurrences, confirmed FROM correlations"
            " WHERE state='open' ORDER BY last_seen_at DESC LIMIT ?",
            (-1 if limit is None else limit,)))

    def message_rows(self, limit: int, *, outcomes: Sequence[str] | None = None,
                     message_ref: int | None = None,
                     head_bytes: int = HEAD_BYTES) -> list[dict[str, Any]]:
        """Messages newest first, optionally only those with one of `outcomes` or the one
        `message_ref`; `head` is the first `head_bytes` of the raw message (None once
        pruned), `pruned` whether its raw bytes are gone."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if outcomes is not None:
            where.append(f"outcome IN ({','.join('?' * len(outcomes))})")
            params += list(outcomes)
        if message_ref is not None:
            where.append("id = ?")
            params.append(message_ref)
        # substr() reads only the head of the blob: a 50 MB message costs 16 KiB here.
        return list(self.db.query(
            f"SELECT id, source, arrived_at, staged_at, updated_at, size, state, outcome,"
            f" reason, rule, alert_key, oversize,"
            f" NOT EXISTS (SELECT 1 FROM raw_messages r WHERE r.message_ref = messages.id)"
            f" AS pruned, (SELECT substr(r.raw, 1, {int(head_bytes)}) FROM raw_messages r"
            f"  WHERE r.message_ref = messages.id) AS head"
            f" FROM messages WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            [*params, limit]))

    def dead_outbox_rows(self, limit: int) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT id, kind, ordering_key, message_ref, action, attempts, last_error,"
            " updated_at FROM outbox WHERE state='dead' ORDER BY id DESC LIMIT ?", (limit,)))

    def messages_in_arrival_order(self) -> list[dict[str, Any]]:
        """Every message's source uid and result, in arrival order (the demo's report)."""
        return list(self.db.query("SELECT id, source_uid, outcome, state, reason, rule"
                                  " FROM messages ORDER BY arrived_at, id"))

    def message_id_header(self, message_ref: int | None) -> str | None:
        """The Message-ID a staged message carried (None: none, or no such message)."""
        row = self.conn.execute("SELECT message_id FROM messages WHERE id=?",
                                (message_ref,)).fetchone()
        return row[0] if row else None

    # -- reconcile ----------------------------------------------------------------------------

    def confirmed_open_correlations(self) -> list[dict[str, Any]]:
        """Open correlations whose create the PSA acknowledged."""
        return list(self.db.query(
            "SELECT correlation_id, alert_key, account_id, title, opened_at FROM correlations"
            " WHERE state='open' AND confirmed=1"))

    def correlation_ids(self) -> set[str]:
        """Every correlation id mailbridge knows, in any state."""
        return {row[0] for row in self.conn.execute("SELECT correlation_id FROM correlations")}
