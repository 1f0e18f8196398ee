"""The outbox: calls to the PSA, webhooks and mail waiting to go out, one ordered queue per key.

`OutboxMixin` is the part of `Store` that owns the `outbox` table: rows are enqueued with a
decision, claimed head-of-key only (an UPDATE never overtakes its OPEN), settled as done, retried
or dead, and inspected or requeued by the administrator. In-flight rows carry their owner and are
taken back only from a dead one (`reclaim_in_flight`). It builds on `OwnersMixin` (who is
gone) and `StoreBase`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from bridge.models import OutboxItem
from bridge.store.base import inserted_id
from bridge.store.owners import OwnersMixin


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    ordering_key: str
    message_ref: int | None
    action: str | None
    correlation_id: str | None
    payload: dict[str, Any]
    attempts: int
    occurrences: int = 1
    first_arrived_at: float | None = None
    last_arrived_at: float | None = None
    correlation_state: str | None = None  # of correlation_id, read with the claim
    crashes: int = 0  # deliverer crashes and deaths with this row in flight so far


CRASH_LIMIT = 3  # deliverer crashes (or deaths with the row in flight) before a row goes dead


class OutboxMixin(OwnersMixin):
    """The outbox queue (mixed into `Store`)."""

    # -- outbox -------------------------------------------------------------------------------

    def enqueue(self, item: OutboxItem, message_ref: int | None, now: float | None = None,
                arrived_at: float | None = None) -> int:
        now = now or self.clock()
        due = item.not_before if item.not_before is not None else now
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO outbox (kind, ordering_key, message_ref, action, correlation_id,"
                " payload, next_attempt_at, created_at, updated_at, first_arrived_at,"
                " last_arrived_at, held_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (item.kind, item.ordering_key, message_ref, item.action, item.correlation_id,
                 json.dumps(item.payload), due, now, now, arrived_at, arrived_at,
                 item.not_before if item.not_before is not None else arrived_at))
            row_id = inserted_id(cur)
            self._event(conn, "queued", message_ref, item.ordering_key if item.kind != "smtp"
                        else None, None, {"outbox": row_id, "kind": item.kind,
                                          "action": item.action})
        return row_id

    def claim_outbox(self, now: float, limit: int, kinds: tuple[str, ...] | None = None,
                     behind_backlog: int | None = None) -> list[OutboxRow]:
        """Take the head row of each ordering key that is due.

        Only the oldest unfinished row of a key may go, so an UPDATE never overtakes its OPEN,
        across retries and restarts alike. `behind_backlog` (`run --once` while it still
        processes: the last outbox id from before the run) takes only rows queued since, and
        of those a row held on the arrival clock (a coalescing window, a storm's group wait)
        only once every message that arrived before its hold ended has been processed — until
        then a message of the backlog may still fold into it, as it would have, had it been
        processed before anything was sent. Rows from before the run wait for its processing,
        as they always did."""
        kinds = kinds or ("psa", "webhook", "smtp", "imap")
        marks = ",".join("?" * len(kinds))
        with self.write() as conn:
            held, horizon = "", list[float]()
            if behind_backlog is not None:
                held, horizon = " AND o.id > ?", [behind_backlog]
                oldest = conn.execute(  # per state: each an index lookup (migration 12)
                    "SELECT min(a) FROM (SELECT min(arrived_at) AS a FROM messages WHERE"
                    " state='staged' UNION ALL SELECT min(arrived_at) FROM messages WHERE"
                    " state='processing')").fetchone()[0]
                if oldest is not None:
                    held += " AND coalesce(o.held_until, 0) < ?"
                    horizon.append(oldest)
            rows = conn.execute(
                f"SELECT o.id, o.kind, o.ordering_key, o.message_ref, o.action,"
                f" o.correlation_id, o.payload, o.attempts, o.occurrences, o.first_arrived_at,"
                f" o.last_arrived_at, (SELECT c.state FROM correlations c"
                f"   WHERE c.correlation_id = o.correlation_id), o.crashes FROM outbox o"
                f" WHERE o.state='pending' AND o.next_attempt_at <= ? AND o.kind IN ({marks})"
                f"{held}"
                f" AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.ordering_key=o.ordering_key"
                f"   AND p.kind=o.kind AND p.id < o.id AND p.state IN ('pending','in_flight'))"
                f" ORDER BY o.next_attempt_at, o.id LIMIT ?",
                [now, *kinds, *horizon, limit]).fetchall()
            conn.executemany("UPDATE outbox SET state='in_flight', attempts=attempts+1,"
                             " claimed_by=?, updated_at=? WHERE id=?",
                             [(self.owner, now, r[0]) for r in rows])
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7] + 1, r[8],
                          r[9], r[10], r[11], r[12]) for r in rows]

    def outbox_high_water(self) -> int:
        """The id of the last outbox row queued so far (0: none)."""
        return int(self.scalar("SELECT coalesce(max(id), 0) FROM outbox"))

    def reclaim_in_flight(self) -> int:
        """Rows left in flight by a deliverer that is gone go back to pending (they are re-sent
        with the same correlationId, so a create that did succeed is not doubled). Only rows of
        a dead owner (or claimed without one) are taken: a live daemon's calls are its own.
        Each counts as a crash; at CRASH_LIMIT the row goes dead instead of being sent again."""
        now = self.clock()
        with self.write() as conn:
            claimants = [r[0] for r in conn.execute(
                "SELECT DISTINCT claimed_by FROM outbox WHERE state='in_flight'").fetchall()]
            if not claimants:
                return 0
            gone, unregistered = self.gone_claimants(claimants)
            taken = [c for c in (gone | unregistered) if c is not None]
            marks = ",".join("?" * len(taken)) or "NULL"
            null = " OR claimed_by IS NULL" if None in unregistered else ""
            rows = conn.execute(
                f"UPDATE outbox SET state='pending', claimed_by=NULL, crashes=crashes+1,"
                f" updated_at=? WHERE state='in_flight' AND (claimed_by IN ({marks}){null})"
                f" RETURNING id, crashes, message_ref, ordering_key", [now, *taken]).fetchall()
            for row_id, crashes, message_ref, key in rows:
                if crashes < CRASH_LIMIT:
                    continue
                reason = (f"the deliverer crashed or died with this row in flight {crashes}"
                          " times")
                conn.execute("UPDATE outbox SET state='dead', last_error=? WHERE id=?",
                             (reason, row_id))
                if message_ref is not None:
                    conn.execute("UPDATE messages SET state='done', outcome='failed', reason=?,"
                                 " updated_at=? WHERE id=? AND state='pending'",
                                 (reason, now, message_ref))
                    self._event(conn, "outcome", message_ref, None, "failed", {"reason": reason})
                self._event(conn, "dead", message_ref, key, "failed",
                            {"outbox": row_id, "reason": reason})
            self._prune_owners(conn, gone)
        return len(rows)

    def outbox_crashed(self, row_id: int, next_at: float, error: str) -> None:
        """The deliverer crashed on this row (an exception): counted apart from retries."""
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='pending', claimed_by=NULL, crashes=crashes+1,"
                         " next_attempt_at=?, last_error=?, updated_at=? WHERE id=?",
                         (next_at, error, self.clock(), row_id))

    def retry_waiting_now(self) -> int:
        """After a reload: rows waiting on a failure (refused credentials, an SMTP or webhook
        setting, a peer that was down) are tried again at once with the new settings. Held
        work (coalescing windows, resolve delays) keeps its time."""
        now = self.clock()
        with self.write() as conn:
            return conn.execute("UPDATE outbox SET next_attempt_at=? WHERE state='pending'"
                                " AND last_error IS NOT NULL AND next_attempt_at>?",
                                (now, now)).rowcount

    def release_outbox(self, row_ids: list[int]) -> None:
        """Rows claimed but never tried go back to pending, their attempt not counted."""
        with self.write() as conn:
            conn.executemany("UPDATE outbox SET state='pending', attempts=attempts-1,"
                             " claimed_by=NULL WHERE id=?"
                             " AND state='in_flight'", [(i,) for i in row_ids])

    def outbox_done(self, row_id: int, result: dict[str, Any]) -> None:
        self.outbox_settled([(row_id, result)], ())

    def outbox_settled(self, done: Sequence[tuple[int, dict[str, Any]]],
                       outcomes: Sequence[tuple[int, str, str]]) -> None:
        """Many settlements at once (group commit): rows done, with their results, and the
        messages they end, with (message id, outcome, reason) — as `set_outcome`, whose
        `outcome` event the caller records in its place among the row's other events. One
        statement per kind of write: the per-row statements were a third of a settlement."""
        now = self.clock()
        with self.write() as conn:
            conn.executemany("UPDATE outbox SET state='done', result=?, last_error=NULL,"
                             " updated_at=? WHERE id=?",
                             [(json.dumps(result), now, row_id) for row_id, result in done])
            conn.executemany("UPDATE messages SET state='done', outcome=?, reason=?,"
                             " updated_at=? WHERE id=? AND state='pending'",
                             [(outcome, reason, now, ref) for ref, outcome, reason in outcomes])

    def outbox_retry(self, row_id: int, next_at: float, error: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='pending', claimed_by=NULL, next_attempt_at=?,"
                         " last_error=?, updated_at=? WHERE id=?",
                         (next_at, error, self.clock(), row_id))

    def outbox_dead(self, row_id: int, reason: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='dead', last_error=?, updated_at=?"
                         " WHERE id=?", (reason, self.clock(), row_id))

    def flush_held(self) -> int:
        """`run --once --flush`: every row still held by storm control (coalescing window,
        resolve delay, group wait, minimum duration) is due now. Rows waiting to retry after
        a failure keep their backoff. Returns how many rows were moved."""
        now = self.clock()
        with self.write() as conn:
            n = conn.execute("UPDATE outbox SET next_attempt_at=?, updated_at=? WHERE"
                             " state='pending' AND attempts=0 AND next_attempt_at>?",
                             (now, now, now)).rowcount
            if n:
                self._event(conn, "flushed", None, None, None, {"rows": n})
        return int(n)

    def outbox_pending_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM outbox WHERE state IN"
                               " ('pending','in_flight')"))

    def next_outbox_due(self) -> float | None:
        """When the next row can go: the earliest due head of a key. A row due behind a held
        row of its key (an append behind a held OPEN) cannot go before that one does."""
        return self.scalar(
            "SELECT min(o.next_attempt_at) FROM outbox o WHERE o.state='pending' AND NOT EXISTS"
            " (SELECT 1 FROM outbox p WHERE p.ordering_key=o.ordering_key AND p.kind=o.kind"
            "  AND p.id < o.id AND p.state IN ('pending','in_flight'))")

    def outbox_rows(self, states: tuple[str, ...] = ("pending", "in_flight", "dead"),
                    limit: int = 500) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(states))
        return self.query(f"SELECT id, kind, ordering_key, message_ref, action, correlation_id,"
                          f" state, attempts, next_attempt_at, last_error, created_at,"
                          f" acknowledged_at"
                          f" FROM outbox WHERE state IN ({marks}) ORDER BY id LIMIT ?",
                          [*states, limit])

    def outbox_requeue(self, row_id: int) -> bool:
        """`mailbridge outbox retry`: a dead or waiting row goes out again now."""
        with self.write() as conn:
            n = conn.execute("UPDATE outbox SET state='pending', next_attempt_at=?, attempts=0,"
                             " crashes=0, acknowledged_at=NULL, updated_at=? WHERE id=? AND"
                             " state IN ('dead','pending')",
                             (self.clock(), self.clock(), row_id)).rowcount
            if n:
                self._event(conn, "outbox-retry", None, None, None, {"outbox": row_id})
        return bool(n)

    def outbox_drop(self, row_id: int) -> bool:
        """`mailbridge outbox drop`: the admin gives up on a row; it moves to 'dropped' (out
        of the list and of `degraded`) and its message ends failed."""
        with self.write() as conn:
            row = conn.execute("SELECT message_ref FROM outbox WHERE id=? AND state IN"
                               " ('dead','pending')", (row_id,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE outbox SET state='dropped', last_error=coalesce(last_error"
                         " || '; ', '') || 'dropped by the administrator', updated_at=?"
                         " WHERE id=?", (self.clock(), row_id))
            if row[0] is not None:
                conn.execute("UPDATE messages SET state='done', outcome=coalesce(outcome,"
                             " 'failed'), reason=coalesce(reason, '') || '; outbox row dropped"
                             " by the administrator', updated_at=? WHERE id=? AND"
                             " state='pending'", (self.clock(), row[0]))
            self._event(conn, "outbox-drop", row[0], None, None, {"outbox": row_id})
        return True

    def outbox_ack(self, row_id: int) -> bool:
        """`mailbridge outbox ack`: a dead row stays dead and listed, but acknowledged, so it
        no longer makes mailbridge `degraded` (a retry later is still possible)."""
        with self.write() as conn:
            n = conn.execute("UPDATE outbox SET acknowledged_at=?, updated_at=? WHERE id=? AND"
                             " state='dead' AND acknowledged_at IS NULL",
                             (self.clock(), self.clock(), row_id)).rowcount
            if n:
                self._event(conn, "outbox-ack", None, None, None, {"outbox": row_id})
        return bool(n)

    def recent_replies(self, to: str, since: float) -> int:
        return int(self.scalar(
            "SELECT count(*) FROM outbox WHERE kind='smtp' AND action='reply' AND created_at>?"
            " AND json_extract(payload, '$.to')=?", (since, to)))

    def outbox_results(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        marks = ",".join("?" * len(ids)) or "NULL"
        rows = self.query(f"SELECT id, state, result, last_error, correlation_id,"
                          f" next_attempt_at FROM outbox"
                          f" WHERE id IN ({marks})", ids)
        return {r["id"]: r for r in rows}
