"""SQLite access for the pipeline. All SQL lives here, so stages stay free of I/O."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlite_utils

from bridge.models import (AlertContext, CorrelationView, Decision, OutboxItem, PendingCall,
                           RawMessage)
from bridge.store.schema import MIGRATIONS

T = TypeVar("T")
events_log = logging.getLogger("mailbridge.events")
# Events an administrator reading the log should not miss.
TROUBLE_EVENTS = frozenset({"retry", "dead", "rules-reload-failed", "admin-alert",
                            "correlation-void", "xml-reply-limited"})


@dataclass(frozen=True)
class StagedRow:
    id: int
    source: str
    source_uid: str | None
    arrived_at: float
    raw: bytes
    oversize: int | None = None


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


@dataclass(frozen=True)
class StageResult:
    id: int
    duplicate: bool


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header, read cheaply from the header block (no full MIME parse)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.splitlines()
    for i, line in enumerate(lines):
        if line[:11].lower() == b"message-id:":
            value = line[11:]
            # RFC 5322 folding: continuation lines start with white space.
            for cont in lines[i + 1:]:
                if cont[:1] in (b" ", b"\t"):
                    value += cont
                else:
                    break
            text = value.decode("ascii", "replace").strip()
            return text or None
    return None


class Store:
    """Synchronous store. Use from one thread only (see AsyncStore)."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self.clock = clock  # injected in tests: due times and windows follow it
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0,
                               isolation_level=None)
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # A bigger page cache than SQLite's 2 MB default: the outbox, correlation and event
        # indexes of a busy day stay in memory (measured on the backlog benchmark).
        conn.execute("PRAGMA cache_size=-32768")
        conn.execute("PRAGMA temp_store=MEMORY")
        self._migrate()

    # -- plumbing -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _split_sql(sql):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def write(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken IMMEDIATE so read-decide-write cannot interleave with
        another process. `durable` commits with synchronous=FULL (staging: the source is told
        the message is taken right after)."""
        if self.conn.in_transaction:  # nested: join the outer transaction
            yield self.conn
            return
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

    def close(self) -> None:
        self.conn.close()

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    # -- staging ------------------------------------------------------------------------------

    def stage(self, msg: RawMessage) -> StageResult:
        """Store the raw bytes durably; a message seen before is reported as a duplicate."""
        return self.stage_many([msg])[0]

    def stage_many(self, msgs: list[RawMessage]) -> list[StageResult]:
        """Stage a batch in one durable commit (one fsync for the batch)."""
        results: list[StageResult] = []
        now = self.clock()
        with self.write(durable=True) as conn:
            for msg in msgs:
                sha = hashlib.sha256(msg.raw).hexdigest()
                mid = message_id_of(msg.raw)
                existing = None
                if msg.source_uid is not None:
                    existing = conn.execute(
                        "SELECT id FROM messages WHERE source=? AND source_uid=?",
                        (msg.source, msg.source_uid)).fetchone()
                if existing is None:
                    # Same Message-ID and same bytes: the same message seen again (re-delivery,
                    # UIDVALIDITY reset, a pipe retried by the MTA). Without a Message-ID the
                    # hash alone is the identity.
                    existing = conn.execute(
                        "SELECT id FROM messages WHERE sha256=? AND message_id IS ?",
                        (sha, mid)).fetchone()
                if existing is not None:
                    # Seen again (re-delivery, a crash before the source was told, a UIDVALIDITY
                    # reset): recorded, acknowledged, not processed twice.
                    self._event(conn, "received-again", existing[0], None, None,
                                {"source": msg.source, "source_uid": msg.source_uid})
                    results.append(StageResult(existing[0], True))
                    continue
                cur = conn.execute(
                    "INSERT INTO messages (source, source_uid, arrived_at, staged_at, message_id,"
                    " sha256, size, state, updated_at, oversize)"
                    " VALUES (?,?,?,?,?,?,?,'staged',?,?)",
                    (msg.source, msg.source_uid, msg.arrived_at, now, mid, sha, len(msg.raw),
                     now, msg.oversize))
                mid_id = int(cur.lastrowid)
                self._put_raw(mid_id, msg.raw)
                self._event(conn, "staged", mid_id, None, None,
                            {"source": msg.source, "source_uid": msg.source_uid,
                             "size": len(msg.raw), "message_id": mid})
                results.append(StageResult(mid_id, False))
        return results

    def claim_staged(self, worker: str, limit: int = 100,
                     only: int | None = None) -> list[StagedRow]:
        """Atomically take staged messages for processing; no two workers get the same one.

        Rows claimed by a worker that died are taken back after `stale` seconds."""
        now = self.clock()
        stale = now - 300
        with self.write() as conn:
            where = "(state='staged' OR (state='processing' AND claimed_at < ?))"
            params: list[Any] = [stale]
            if only is not None:
                where += " AND id=?"
                params.append(only)
            rows = conn.execute(
                f"UPDATE messages SET state='processing', claimed_by=?, claimed_at=?,"
                f" updated_at=? WHERE id IN (SELECT id FROM messages WHERE {where}"
                f" ORDER BY arrived_at, id LIMIT ?)"
                f" RETURNING id, source, source_uid, arrived_at, oversize",
                [worker, now, now, *params, limit]).fetchall()
            raws = self._get_raws([r[0] for r in rows])
        rows.sort(key=lambda r: (r[3], r[0]))
        return [StagedRow(r[0], r[1], r[2], r[3], raws.get(r[0]) or b"", r[4]) for r in rows]

    # Big messages go through SQLite's incremental blob I/O: a plain INSERT or SELECT builds
    # the whole record in a buffer of SQLite's besides the Python bytes, one more full copy of
    # a 50 MB attachment than needed.
    BLOB_CHUNK = 1 << 20

    def _put_raw(self, message_ref: int, raw: bytes) -> None:
        if len(raw) < self.BLOB_CHUNK:
            self.conn.execute("INSERT INTO raw_messages (message_ref, raw) VALUES (?, ?)",
                              (message_ref, raw))
            return
        self.conn.execute("INSERT INTO raw_messages (message_ref, raw) VALUES (?, zeroblob(?))",
                          (message_ref, len(raw)))
        view = memoryview(raw)
        with self.conn.blobopen("raw_messages", "raw", message_ref) as blob:
            for start in range(0, len(raw), self.BLOB_CHUNK):
                blob.write(view[start:start + self.BLOB_CHUNK])

    def _get_raws(self, refs: list[int]) -> dict[int, bytes]:
        marks = ",".join("?" * len(refs)) or "NULL"
        sizes = self.conn.execute(f"SELECT message_ref, length(raw) FROM raw_messages WHERE"
                                  f" message_ref IN ({marks})", refs).fetchall()
        small = [ref for ref, size in sizes if size < self.BLOB_CHUNK]
        out: dict[int, bytes] = {}
        if small:
            out.update(self.conn.execute(
                f"SELECT message_ref, raw FROM raw_messages WHERE message_ref IN"
                f" ({','.join('?' * len(small))})", small).fetchall())
        for ref, size in sizes:
            if size >= self.BLOB_CHUNK:
                with self.conn.blobopen("raw_messages", "raw", ref, readonly=True) as blob:
                    out[ref] = blob.read()
        return out

    def release_claims(self, worker: str) -> None:
        """Give back messages this worker claimed but did not finish (shutdown)."""
        with self.write() as conn:
            conn.execute("UPDATE messages SET state='staged', claimed_by=NULL WHERE"
                         " state='processing' AND claimed_by=?", (worker,))

    # -- decisions ----------------------------------------------------------------------------

    def open_correlation(self, alert_key: str) -> CorrelationView | None:
        row = self.conn.execute(
            "SELECT correlation_id, opened_at, occurrences FROM correlations"
            " WHERE alert_key=? AND state='open'", (alert_key,)).fetchone()
        return CorrelationView(alert_key, row[0], row[1], row[2]) if row else None

    def apply_decision(self, message_ref: int, decision: Decision, *, arrived_at: float,
                       rule: str | None = None, alert_meta: dict[str, Any] | None = None) -> None:
        """Record a decision: correlation changes, storm membership, folded or cancelled calls,
        new outbox rows and the message's state — in the caller's transaction, so a decision
        and its outbox rows always commit together."""
        now = self.clock()
        conn = self.conn
        d = decision
        self._event(conn, "decided", message_ref, d.alert_key,
                    d.outcome.value if d.outcome else "pending",
                    {"reason": d.reason, "rule": rule,
                     "queued": [i.action for i in d.outbox], "folded_into": d.fold_into,
                     "cancelled": d.cancel_row, "storm": d.storm_join})
        self.record_effects(message_ref, d, arrived_at=arrived_at, alert_meta=alert_meta)
        state = "done" if d.outcome is not None else "pending"
        conn.execute(
            "UPDATE messages SET state=?, outcome=?, reason=?, alert_key=?, rule=?,"
            " updated_at=? WHERE id=?",
            (state, d.outcome.value if d.outcome else None, d.reason, d.alert_key, rule, now,
             message_ref))

    def record_effects(self, message_ref: int, decision: Decision, *, arrived_at: float,
                       alert_meta: dict[str, Any] | None = None) -> list[int]:
        """The parts of a decision beyond the message itself: correlations, storm membership,
        folds, cancels and new outbox rows (whose ids are returned)."""
        now = self.clock()
        conn = self.conn
        meta = dict(alert_meta or {})
        d = decision
        if d.close_correlation:  # first: a stale ticket is closed before its successor opens
            conn.execute("UPDATE correlations SET state='closed', closed_at=? WHERE"
                         " correlation_id=? AND state='open'", (arrived_at, d.close_correlation))
        if d.open_correlation:
            key = d.open_key or d.alert_key
            if d.open_key:  # a storm ticket: its routing comes from its own OPEN payload
                p = next((i.payload for i in d.outbox if i.correlation_id == d.open_correlation),
                         {})
                meta |= {"product_group": p.get("productGroup"), "alert_type": p.get("alertType"),
                         "title": p.get("title")}
            conn.execute(
                "INSERT INTO correlations (correlation_id, alert_key, state, account_id,"
                " product_group, alert_type, title, opened_at, last_seen_at, previous_id)"
                " VALUES (?,?,'open',?,?,?,?,?,?,?)",
                (d.open_correlation, key, meta.get("account_id"), meta.get("product_group"),
                 meta.get("alert_type"), meta.get("title"), arrived_at, arrived_at,
                 d.previous_id))
        if d.reopen:
            conn.execute("UPDATE correlations SET state='open', closed_at=NULL WHERE"
                         " correlation_id=?", (d.reopen,))
        if d.alert_key and not (d.open_correlation and not d.open_key):
            conn.execute(
                "UPDATE correlations SET occurrences=occurrences+1,"
                " last_seen_at=max(last_seen_at, ?) WHERE alert_key=? AND state='open'",
                (arrived_at, d.alert_key))
        if d.storm_join:
            # A grouped key that recovered and fires again during the storm is open again, so
            # the storm ticket does not resolve while it is still failing.
            conn.execute("INSERT INTO storm_members (storm_id, alert_key, account_id, state,"
                         " joined_at) VALUES (?,?,?,'open',?) ON CONFLICT (storm_id, alert_key)"
                         " DO UPDATE SET state='open', joined_at=excluded.joined_at",
                         (d.storm_join, d.alert_key, meta.get("account_id"), arrived_at))
        if d.storm_leave:
            conn.execute("UPDATE storm_members SET state='resolved' WHERE storm_id=? AND"
                         " alert_key=?", (d.storm_leave, d.alert_key))
        if d.fold_into is not None:
            self._fold(d.fold_into, arrived_at, d.fold_note)
        if d.cancel_row is not None:
            self._cancel(d.cancel_row, message_ref)
        if d.flush_row is not None:
            conn.execute("UPDATE outbox SET next_attempt_at=min(next_attempt_at, ?) WHERE id=?"
                         " AND state='pending'", (now, d.flush_row))
        return [self.enqueue(item, message_ref, now=now, arrived_at=arrived_at)
                for item in d.outbox]

    def correlation_meta(self, alert_key: str) -> dict[str, Any] | None:
        """Routing of the open ticket of a key (an XML update names only its alert id)."""
        rows = self.query("SELECT account_id, product_group, alert_type, title FROM"
                          " correlations WHERE alert_key=? AND state='open'", [alert_key])
        return rows[0] if rows else None

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

    def _fold(self, row_id: int, arrived_at: float, note: str | None) -> None:
        conn = self.conn
        conn.execute("UPDATE outbox SET occurrences=occurrences+1,"
                     " last_arrived_at=max(coalesce(last_arrived_at, ?), ?),"
                     " first_arrived_at=min(coalesce(first_arrived_at, ?), ?), updated_at=?"
                     " WHERE id=?", (arrived_at, arrived_at, arrived_at, arrived_at,
                                     self.clock(), row_id))
        if note:
            payload = json.loads(self.scalar("SELECT payload FROM outbox WHERE id=?",
                                             (row_id,)) or "{}")
            payload["summary"] = f"{payload.get('summary', '')}\n{note}"
            conn.execute("UPDATE outbox SET payload=? WHERE id=?", (json.dumps(payload), row_id))

    def _cancel(self, row_id: int, by_message: int) -> None:
        """A pending resolve is cancelled by a re-fire (flap): its message is settled too."""
        conn = self.conn
        row = conn.execute("SELECT message_ref, ordering_key FROM outbox WHERE id=? AND"
                           " state='pending'", (row_id,)).fetchone()
        if row is None:
            return
        reason = f"resolve cancelled: the alert fired again (message {by_message}) within the" \
                 " resolve delay"
        conn.execute("UPDATE outbox SET state='done', result=?, updated_at=? WHERE id=?",
                     (json.dumps({"cancelled": reason}), self.clock(), row_id))
        conn.execute("UPDATE messages SET state='done', outcome='coalesced', reason=?,"
                     " updated_at=? WHERE id=? AND state='pending'",
                     (reason, self.clock(), row[0]))
        # Keyed, so `mailbridge events --key` shows what became of the cancelled resolve.
        self._event(conn, "cancelled", row[0], row[1], "coalesced",
                    {"outbox": row_id, "by_message": by_message, "reason": reason})

    def alert_context(self, alert: Any, arrived_at: float, policy: Any) -> AlertContext:
        """What decide() needs to know about an alert key, read in the deciding transaction."""
        key = alert.alert_key
        corr = self.open_correlation(key)
        storm_of_key = None
        sid = self.scalar("SELECT m.storm_id FROM storm_members m JOIN correlations c ON"
                          " c.correlation_id=m.storm_id WHERE m.alert_key=? AND m.state='open'"
                          " AND c.state='open' LIMIT 1", (key,))
        if sid:
            storm_of_key = self._correlation_view(sid)
        ctx: dict[str, Any] = {
            "arrived_at": arrived_at, "open_correlation": corr,
            "pending_update": self._pending(key, "UPDATE"),
            "pending_resolve": self._pending(key, "RESOLVED"),
            "storm_of_key": storm_of_key,
        }
        if storm_of_key is not None:
            ctx["storm_members_open"] = int(self.scalar(
                "SELECT count(*) FROM storm_members WHERE storm_id=? AND state='open'", (sid,)))
            ctx["storm_pending_update"] = self._pending(storm_of_key.alert_key, "UPDATE")
        elif corr is None and alert.status != "resolved":
            ctx["last_closed"] = self._last_closed(key)
            # The window ends at this alert's arrival: alerts that arrived later but were
            # processed first (live mail before another mailbox's backlog) do not count.
            since = arrived_at - policy.account_window
            ctx["new_alerts_account"] = int(self.scalar(
                "SELECT (SELECT count(*) FROM correlations WHERE account_id=? AND opened_at>?"
                " AND opened_at<=? AND alert_key NOT LIKE 'storm:%') + (SELECT count(*) FROM"
                " storm_members WHERE account_id=? AND joined_at>? AND joined_at<=?)",
                (alert.account_id, since, arrived_at, alert.account_id, since, arrived_at)))
            ctx["new_alerts_global"] = int(self.scalar(
                "SELECT (SELECT count(*) FROM correlations WHERE opened_at>? AND opened_at<=?"
                " AND alert_key NOT LIKE 'storm:%') + (SELECT count(*) FROM storm_members"
                " WHERE joined_at>? AND joined_at<=?)", (since, arrived_at, since, arrived_at)))
            storm = self.open_correlation(f"storm:{alert.account_id}")
            ctx["open_storm"] = storm
            if storm is not None:
                ctx["storm_pending_update"] = self._pending(storm.alert_key, "UPDATE")
        return AlertContext(**ctx)

    def _pending(self, key: str, action: str) -> PendingCall | None:
        r = self.conn.execute(
            "SELECT id, action, first_arrived_at, occurrences, next_attempt_at, message_ref,"
            " length(json_extract(payload, '$.summary'))"
            " FROM outbox WHERE kind='psa' AND ordering_key=? AND action=? AND state='pending'"
            " ORDER BY id DESC LIMIT 1", (key, action)).fetchone()
        if r is None:
            return None
        return PendingCall(r[0], r[1], r[2] if r[2] is not None else 0.0, r[3], r[4], r[5],
                           r[6] or 0)

    def _correlation_view(self, cid: str) -> CorrelationView | None:
        r = self.conn.execute("SELECT alert_key, correlation_id, opened_at, occurrences FROM"
                              " correlations WHERE correlation_id=?", (cid,)).fetchone()
        return CorrelationView(*r) if r else None

    def _last_closed(self, key: str) -> CorrelationView | None:
        r = self.conn.execute("SELECT alert_key, correlation_id, opened_at, occurrences FROM"
                              " correlations WHERE alert_key=? AND state='closed'"
                              " ORDER BY closed_at DESC LIMIT 1", (key,)).fetchone()
        return CorrelationView(*r) if r else None

    def close_correlation(self, correlation_id: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE correlations SET state='closed', closed_at=? WHERE"
                         " correlation_id=? AND state='open'", (self.clock(), correlation_id))

    def finish_message(self, message_ref: int, outcome: str, reason: str,
                       alert_key: str | None = None, rule: str | None = None) -> None:
        now = self.clock()
        with self.write() as conn:
            conn.execute(
                "UPDATE messages SET state='done', outcome=?, reason=?,"
                " alert_key=coalesce(?, alert_key), rule=coalesce(?, rule), updated_at=?"
                " WHERE id=?", (outcome, reason, alert_key, rule, now, message_ref))
            self._event(conn, "outcome", message_ref, alert_key, outcome, {"reason": reason})

    # -- outbox -------------------------------------------------------------------------------

    def enqueue(self, item: OutboxItem, message_ref: int | None, now: float | None = None,
                arrived_at: float | None = None) -> int:
        now = now or self.clock()
        due = item.not_before if item.not_before is not None else now
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO outbox (kind, ordering_key, message_ref, action, correlation_id,"
                " payload, next_attempt_at, created_at, updated_at, first_arrived_at,"
                " last_arrived_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (item.kind, item.ordering_key, message_ref, item.action, item.correlation_id,
                 json.dumps(item.payload), due, now, now, arrived_at, arrived_at))
            row_id = int(cur.lastrowid)
            self._event(conn, "queued", message_ref, item.ordering_key if item.kind != "smtp"
                        else None, None, {"outbox": row_id, "kind": item.kind,
                                          "action": item.action})
        return row_id

    def claim_outbox(self, now: float, limit: int, kinds: tuple[str, ...] | None = None,
                     busy_keys: frozenset[str] = frozenset()) -> list[OutboxRow]:
        """Take the head row of each ordering key that is due.

        Only the oldest unfinished row of a key may go, so an UPDATE never overtakes its OPEN,
        across retries and restarts alike."""
        kinds = kinds or ("psa", "webhook", "smtp", "imap")
        marks = ",".join("?" * len(kinds))
        with self.write() as conn:
            rows = conn.execute(
                f"SELECT o.id, o.kind, o.ordering_key, o.message_ref, o.action,"
                f" o.correlation_id, o.payload, o.attempts, o.occurrences, o.first_arrived_at,"
                f" o.last_arrived_at, (SELECT c.state FROM correlations c"
                f"   WHERE c.correlation_id = o.correlation_id) FROM outbox o"
                f" WHERE o.state='pending' AND o.next_attempt_at <= ? AND o.kind IN ({marks})"
                f" AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.ordering_key=o.ordering_key"
                f"   AND p.kind=o.kind AND p.id < o.id AND p.state IN ('pending','in_flight'))"
                f" ORDER BY o.next_attempt_at, o.id LIMIT ?",
                [now, *kinds, limit + len(busy_keys)]).fetchall()
            taken: list[OutboxRow] = []
            for r in rows:
                if r[2] in busy_keys or len(taken) >= limit:
                    continue
                conn.execute("UPDATE outbox SET state='in_flight', attempts=attempts+1,"
                             " updated_at=? WHERE id=?", (now, r[0]))
                taken.append(OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]),
                                       r[7] + 1, r[8], r[9], r[10], r[11]))
        return taken

    def reclaim_in_flight(self) -> int:
        """At start-up: rows left in flight by a crash go back to pending (they are re-sent
        with the same correlationId, so a create that did succeed is not doubled)."""
        with self.write() as conn:
            return conn.execute("UPDATE outbox SET state='pending' WHERE state='in_flight'"
                                ).rowcount

    def release_outbox(self, row_ids: list[int]) -> None:
        """Rows claimed but never tried go back to pending, their attempt not counted."""
        with self.write() as conn:
            conn.executemany("UPDATE outbox SET state='pending', attempts=attempts-1 WHERE id=?"
                             " AND state='in_flight'", [(i,) for i in row_ids])

    def outbox_done(self, row_id: int, result: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='done', result=?, last_error=NULL,"
                         " updated_at=? WHERE id=?", (json.dumps(result), self.clock(), row_id))

    def outbox_retry(self, row_id: int, next_at: float, error: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='pending', next_attempt_at=?, last_error=?,"
                         " updated_at=? WHERE id=?", (next_at, error, self.clock(), row_id))

    def outbox_dead(self, row_id: int, reason: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE outbox SET state='dead', last_error=?, updated_at=?"
                         " WHERE id=?", (reason, self.clock(), row_id))

    def outbox_pending_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM outbox WHERE state IN"
                               " ('pending','in_flight')"))

    def next_outbox_due(self) -> float | None:
        return self.scalar("SELECT min(next_attempt_at) FROM outbox WHERE state='pending'")

    def outbox_rows(self, states: tuple[str, ...] = ("pending", "in_flight", "dead"),
                    limit: int = 500) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(states))
        return self.query(f"SELECT id, kind, ordering_key, message_ref, action, correlation_id,"
                          f" state, attempts, next_attempt_at, last_error, created_at"
                          f" FROM outbox WHERE state IN ({marks}) ORDER BY id LIMIT ?",
                          [*states, limit])

    def outbox_requeue(self, row_id: int) -> bool:
        """`mailbridge outbox retry`: a dead or waiting row goes out again now."""
        with self.write() as conn:
            n = conn.execute("UPDATE outbox SET state='pending', next_attempt_at=?, attempts=0,"
                             " updated_at=? WHERE id=? AND state IN ('dead','pending')",
                             (self.clock(), self.clock(), row_id)).rowcount
            if n:
                self._event(conn, "outbox-retry", None, None, None, {"outbox": row_id})
        return bool(n)

    def outbox_drop(self, row_id: int) -> bool:
        """`mailbridge outbox drop`: the admin gives up on a row; its message ends failed."""
        with self.write() as conn:
            row = conn.execute("SELECT message_ref FROM outbox WHERE id=? AND state IN"
                               " ('dead','pending')", (row_id,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE outbox SET state='dead', last_error='dropped by the"
                         " administrator', updated_at=? WHERE id=?", (self.clock(), row_id))
            if row[0] is not None:
                conn.execute("UPDATE messages SET state='done', outcome=coalesce(outcome,"
                             " 'failed'), reason=coalesce(reason, '') || '; outbox row dropped"
                             " by the administrator', updated_at=? WHERE id=? AND"
                             " state='pending'", (self.clock(), row[0]))
            self._event(conn, "outbox-drop", row[0], None, None, {"outbox": row_id})
        return True

    # -- correlations as delivery sees them ---------------------------------------------------

    def correlation_state(self, correlation_id: str) -> str | None:
        return self.scalar("SELECT state FROM correlations WHERE correlation_id=?",
                           (correlation_id,))

    def confirm_correlation(self, correlation_id: str, psa_id: str | None) -> str:
        """The PSA acknowledged a create. If it named the ticket differently (it should not:
        we send our own id), adopt its id everywhere so later calls use it."""
        with self.write() as conn:
            if psa_id and psa_id != correlation_id:
                conn.execute("UPDATE correlations SET correlation_id=? WHERE correlation_id=?",
                             (psa_id, correlation_id))
                conn.execute("UPDATE outbox SET correlation_id=? WHERE correlation_id=? AND"
                             " state='pending'", (psa_id, correlation_id))
                correlation_id = psa_id
            conn.execute("UPDATE correlations SET confirmed=1 WHERE correlation_id=?",
                         (correlation_id,))
        return correlation_id

    def void_correlation(self, correlation_id: str, reason: str) -> None:
        """No ticket exists for this correlation (create refused, or ticket gone at the PSA)."""
        with self.write() as conn:
            conn.execute("UPDATE correlations SET state='void', closed_at=? WHERE"
                         " correlation_id=?", (self.clock(), correlation_id))
            self._event(conn, "correlation-void", None, None, None,
                        {"correlation_id": correlation_id, "reason": reason})

    def reopen_as_create(self, row_id: int, alert_key: str, new_cid: str,
                         meta: dict[str, Any], arrived_at: float) -> None:
        """An UPDATE whose ticket does not exist becomes the OPEN of a new ticket."""
        with self.write() as conn:
            current = self.open_correlation(alert_key)
            if current is None:
                conn.execute(
                    "INSERT INTO correlations (correlation_id, alert_key, state, account_id,"
                    " product_group, alert_type, title, opened_at, last_seen_at)"
                    " VALUES (?,?,'open',?,?,?,?,?,?)",
                    (new_cid, alert_key, meta.get("accountId"), meta.get("productGroup"),
                     meta.get("alertType"), str(meta.get("title", ""))[:255], arrived_at,
                     arrived_at))
                cid = new_cid
            else:  # a later alert already opened one: append to it instead
                cid = current.correlation_id
            conn.execute("UPDATE outbox SET action=?, correlation_id=?, updated_at=? WHERE id=?",
                         ("OPEN" if current is None else "UPDATE", cid, self.clock(), row_id))

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                         " DO UPDATE SET value=excluded.value", (key, value))

    def get_meta(self, key: str) -> str | None:
        return self.scalar("SELECT value FROM meta WHERE key=?", (key,))

    def forget_raw(self, message_ref: int) -> bool:
        """`quarantine delete`: the raw bytes go, the row and its outcome stay (audit)."""
        with self.write() as conn:
            n = conn.execute("DELETE FROM raw_messages WHERE message_ref=? AND message_ref IN"
                             " (SELECT id FROM messages WHERE outcome='quarantined')",
                             (message_ref,)).rowcount
            if n:
                self._event(conn, "quarantine-delete", message_ref, None, None, {})
        return bool(n)

    def message_raw(self, message_ref: int) -> bytes | None:
        return self._get_raws([message_ref]).get(message_ref)

    def message_arrived_at(self, message_ref: int | None) -> float:
        value = self.scalar("SELECT arrived_at FROM messages WHERE id=?", (message_ref,))
        return float(value) if value is not None else self.clock()

    def set_outcome(self, message_ref: int | None, outcome: str, reason: str) -> None:
        """Delivery settled a pending message. A message already done keeps its outcome (an
        XML transaction's outcome is `xml`; each action's result is an event)."""
        if message_ref is None:
            return
        with self.write() as conn:
            conn.execute("UPDATE messages SET state='done', outcome=?, reason=?, updated_at=?"
                         " WHERE id=? AND state='pending'",
                         (outcome, reason, self.clock(), message_ref))
            self._event(conn, "outcome", message_ref, None, outcome, {"reason": reason})

    def pending_work(self) -> dict[str, int]:
        return {
            "staged": int(self.scalar("SELECT count(*) FROM messages WHERE state IN"
                                      " ('staged','processing')")),
            "outbox": self.outbox_pending_count(),
        }

    # -- events -------------------------------------------------------------------------------

    def event(self, kind: str, message_ref: int | None = None, alert_key: str | None = None,
              outcome: str | None = None, /, **detail: Any) -> None:
        with self.write() as conn:
            self._event(conn, kind, message_ref, alert_key, outcome, detail)

    redact: Callable[[str], str] = staticmethod(lambda s: s)  # type: ignore[assignment]

    def _event(self, conn: sqlite3.Connection, kind: str, message_ref: int | None,
               alert_key: str | None, outcome: str | None, detail: dict[str, Any]) -> None:
        outcome = getattr(outcome, "value", outcome)  # an enum's plain value, never its repr
        text = self.redact(json.dumps(detail, default=str)) if detail else None
        conn.execute("INSERT INTO events (at, kind, message_ref, alert_key, outcome, detail)"
                     " VALUES (?,?,?,?,?,?)",
                     (self.clock(), kind, message_ref, alert_key, outcome, text))
        # The same event, one log line (the log handler redacts again and formats it).
        level = logging.WARNING if kind in TROUBLE_EVENTS else logging.INFO
        if events_log.isEnabledFor(level):
            extra = {k: v for k, v in (("message_ref", message_ref), ("alert_key", alert_key))
                     if v is not None}
            events_log.log(level, "%s%s %s", kind, f" -> {outcome}" if outcome else "",
                           text or "", extra=extra)

    # -- maintenance --------------------------------------------------------------------------

    def backup(self, target: Path | str) -> None:
        dest = sqlite3.connect(str(target))
        with dest:
            self.conn.backup(dest)
        dest.close()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class AsyncStore:
    """Runs a Store on one dedicated thread; `await store.call(fn, *args)` or attribute calls."""

    def __init__(self, store: Store):
        self.store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix="store")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.run(method, *args, **kwargs)

        return call

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)
