"""Staging: raw messages taken durably from a source, claimed for processing and settled.

`StagingMixin` is the part of `Store` that owns the `messages` and `raw_messages` tables:
staging with duplicate detection by (source, uid) or Message-ID and hash, big raw bodies
through incremental blob I/O, claims by pipeline workers, and the final outcome of a message.
Claims have owners and a poison cap (see `claim_staged`). It builds on `OutboxMixin`
(`outbox_pending_count`) and, through it, `OwnersMixin` and `StoreBase`.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from bridge.models import RawMessage
from bridge.store.base import inserted_id
from bridge.store.outbox import OutboxMixin


CLAIM_LIMIT = 3         # hand-outs without an outcome before a message is quarantined as poison
LEGACY_STALE = 300.0    # seconds: a claim made without an owner is taken back after this


@dataclass(frozen=True)
class StagedRow:
    id: int
    source: str
    source_uid: str | None
    arrived_at: float
    raw: bytes
    oversize: int | None = None


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


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


class StagingMixin(OutboxMixin):
    """Staged messages and their raw bytes (mixed into `Store`)."""

    # -- staging ------------------------------------------------------------------------------

    def stage(self, msg: RawMessage) -> StageResult:
        """Store the raw bytes durably; a message seen before is reported as a duplicate."""
        return self.stage_many([msg])[0]

    def stage_many(self, msgs: list[RawMessage]) -> list[StageResult]:
        """Stage a batch in one durable commit (one fsync for the batch)."""
        results: list[StageResult] = []
        now = self.clock()
        with self.write(durable=True) as conn, self.batched_events():
            hashed = [(msg, hashlib.sha256(msg.raw).hexdigest(), message_id_of(msg.raw))
                      for msg in msgs]
            by_uid, by_hash = self._known(hashed)
            for msg, sha, mid in hashed:
                # Same Message-ID and same bytes: the same message seen again (re-delivery,
                # UIDVALIDITY reset, a pipe retried by the MTA). Without a Message-ID the hash
                # alone is the identity.
                existing = by_uid.get((msg.source, msg.source_uid)) \
                    if msg.source_uid is not None else None
                if existing is None:
                    existing = by_hash.get((sha, mid))
                if existing is not None:
                    # Seen again (re-delivery, a crash before the source was told, a UIDVALIDITY
                    # reset): recorded, acknowledged, not processed twice.
                    self._event(conn, "received-again", existing, None, None,
                                {"source": msg.source, "source_uid": msg.source_uid})
                    results.append(StageResult(existing, True))
                    continue
                cur = conn.execute(
                    "INSERT INTO messages (source, source_uid, arrived_at, staged_at, message_id,"
                    " sha256, size, state, updated_at, oversize)"
                    " VALUES (?,?,?,?,?,?,?,'staged',?,?)",
                    (msg.source, msg.source_uid, msg.arrived_at, now, mid, sha, len(msg.raw),
                     now, msg.oversize))
                mid_id = inserted_id(cur)
                if msg.source_uid is not None:  # a later copy in this batch is a duplicate
                    by_uid[(msg.source, msg.source_uid)] = mid_id
                by_hash.setdefault((sha, mid), mid_id)
                self._put_raw(mid_id, msg.raw)
                self._event(conn, "staged", mid_id, None, None,
                            {"source": msg.source, "source_uid": msg.source_uid,
                             "size": len(msg.raw), "message_id": mid})
                results.append(StageResult(mid_id, False))
        return results

    def _known(self, hashed: list[tuple[RawMessage, str, str | None]]
               ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str | None], int]]:
        """The staged messages a batch may repeat, asked once for the batch: by (source, uid),
        and by (hash, Message-ID) the first staged (the lowest id, as one look-up each
        found)."""
        by_uid: dict[tuple[str, str], int] = {}
        by_hash: dict[tuple[str, str | None], int] = {}
        for source in {msg.source for msg, _, _ in hashed}:
            for part in _chunks([m.source_uid for m, _, _ in hashed
                                 if m.source == source and m.source_uid is not None]):
                by_uid.update(((source, uid), ref) for ref, uid in self.conn.execute(
                    f"SELECT id, source_uid FROM messages WHERE source=? AND source_uid IN"
                    f" ({','.join('?' * len(part))})", (source, *part)))
        for part in _chunks(sorted({sha for _, sha, _ in hashed})):
            for ref, sha, mid in self.conn.execute(
                    f"SELECT id, sha256, message_id FROM messages WHERE sha256 IN"
                    f" ({','.join('?' * len(part))}) ORDER BY id", part):
                by_hash.setdefault((sha, mid), ref)
        return by_uid, by_hash

    def claim_staged(self, worker: str, limit: int = 100, only: int | None = None,
                     with_raw: bool = True) -> list[StagedRow]:
        """Atomically take staged messages for processing; no two workers get the same one.

        Claims are recorded under the store's owner (else `worker`). First, messages whose
        claimant is gone go back to staged as suspects (`reclaim_messages`); a message handed
        out CLAIM_LIMIT times without an outcome is quarantined instead of handed out again;
        while suspects wait, they are handed out alone, one per claim, so a poison message
        charges no batch around it."""
        now = self.clock()
        with self.write() as conn:
            self._reclaim_messages(conn, now)
            self._quarantine_poison(conn, now, only)
            # Indexes of the staged (suspect) rows in arrival order: else the planner walks
            # and sorts every staged message per batch.
            where, params = "state='staged'", list[Any]()
            source = "messages INDEXED BY messages_staged"
            if only is not None:
                where += " AND id=?"
                params.append(only)
                source = "messages"
            elif conn.execute("SELECT 1 FROM messages INDEXED BY messages_suspect WHERE"
                              " state='staged' AND suspect=1 LIMIT 1").fetchone():
                where, limit = "state='staged' AND suspect=1", 1
                source = "messages INDEXED BY messages_suspect"
            rows = conn.execute(
                f"UPDATE messages SET state='processing', claimed_by=?, claimed_at=?,"
                f" updated_at=?, claims=claims+1 WHERE id IN (SELECT id FROM {source} WHERE"
                f" {where} ORDER BY arrived_at, id LIMIT ?)"
                f" RETURNING id, source, source_uid, arrived_at, oversize",
                [self.owner or worker, now, now, *params, limit]).fetchall()
            # Without raw: the pipeline's workers read the bytes themselves
            # (bridge.process.isolation).
            raws = self._get_raws([r[0] for r in rows]) if with_raw else {}
        rows.sort(key=lambda r: (r[3], r[0]))
        return [StagedRow(r[0], r[1], r[2], r[3], raws.get(r[0]) or b"", r[4]) for r in rows]

    def reclaim_messages(self) -> int:
        """Messages in processing whose claimant is gone go back to staged (as suspects)."""
        with self.write() as conn:
            return self._reclaim_messages(conn, self.clock())

    def _reclaim_messages(self, conn: sqlite3.Connection, now: float) -> int:
        claimants = [r[0] for r in conn.execute(
            "SELECT DISTINCT claimed_by FROM messages WHERE state='processing'").fetchall()]
        if not claimants:
            return 0
        gone, unregistered = self.gone_claimants(claimants)
        # A claimant without an owner row (a process without a lease) keeps the old rule: its
        # claim is taken back LEGACY_STALE seconds after it was made.
        stale = [c for c in unregistered if c is not None]
        marks = ",".join("?" * len(gone)) or "NULL"
        smarks = ",".join("?" * len(stale)) or "NULL"
        rows = conn.execute(
            f"UPDATE messages SET state='staged', claimed_by=NULL, suspect=1, updated_at=?"
            f" WHERE state='processing' AND (claimed_by IN ({marks}) OR ((claimed_by IS NULL"
            f" OR claimed_by IN ({smarks})) AND claimed_at < ?))"
            f" RETURNING id, claims",
            [now, *gone, *stale, now - LEGACY_STALE]).fetchall()
        for mid, claims in rows:
            self._event(conn, "reclaimed", mid, None, None,
                        {"claims": claims, "why": "its claimant is gone"})
        self._prune_owners(conn, gone)
        return len(rows)

    def _quarantine_poison(self, conn: sqlite3.Connection, now: float,
                           only: int | None) -> None:
        # Over the suspects only (few), not every staged message; in id order, as ever.
        rows = conn.execute("SELECT id, claims FROM messages INDEXED BY messages_suspect WHERE"
                            " state='staged' AND suspect=1 AND claims >= ?",
                            [CLAIM_LIMIT]).fetchall()
        if only is not None and only not in {r[0] for r in rows}:
            rows += conn.execute("SELECT id, claims FROM messages WHERE id=? AND"
                                 " state='staged'", [only]).fetchall()
        rows.sort()
        for mid, claims in rows:
            if claims < CLAIM_LIMIT:
                continue
            reason = (f"processing crashed or was killed {claims} times (its worker or the"
                      " whole process died while handling this message); not tried again")
            conn.execute("UPDATE messages SET state='done', outcome='quarantined', reason=?,"
                         " claimed_by=NULL, updated_at=? WHERE id=?", (reason, now, mid))
            self._event(conn, "poison", mid, None, "quarantined", {"claims": claims})
            self._event(conn, "outcome", mid, None, "quarantined", {"reason": reason})

    def requeue_crashed(self, message_ref: int, error: str) -> None:
        """A worker crashed on this message (not a budget overrun): back to staged as a
        suspect, its claim counted, so it is tried alone and quarantined at CLAIM_LIMIT."""
        with self.write() as conn:
            n = conn.execute("UPDATE messages SET state='staged', claimed_by=NULL, suspect=1,"
                             " updated_at=? WHERE id=? AND state='processing'",
                             (self.clock(), message_ref)).rowcount
            if n:
                self._event(conn, "processing-crashed", message_ref, None, None,
                            {"error": error})

    def requeue_uncounted(self, message_ref: int, reason: str) -> None:
        """The worker pool went away under this message (a reload closed it): back to staged,
        its claim not counted, for the new parts to process."""
        with self.write() as conn:
            n = conn.execute("UPDATE messages SET state='staged', claimed_by=NULL,"
                             " claims=max(claims-1, 0), updated_at=? WHERE id=? AND"
                             " state='processing'", (self.clock(), message_ref)).rowcount
            if n:
                self._event(conn, "processing-requeued", message_ref, None, None,
                            {"reason": reason})

    def claims_held(self, message_refs: list[int], worker: str) -> set[int]:
        """Which of these messages this store (its owner, else `worker`) still holds the claim
        of: a decision is recorded only then (the administrator may have released or
        quarantined one, or a reclaim may have handed it on). Asked once for a batch in its
        write transaction: recording one message never moves another's claim."""
        marks = ",".join("?" * len(message_refs))
        return {r[0] for r in self.conn.execute(
            f"SELECT id FROM messages WHERE id IN ({marks}) AND state='processing' AND"
            f" claimed_by=?", (*message_refs, self.owner or worker))}

    # -- the administrator: `mailbridge processing` ---------------------------------------

    def processing_rows(self) -> list[dict[str, Any]]:
        """Messages in processing with their claimant and whether it is alive."""
        rows = self.query("SELECT id, source, arrived_at, claimed_by, claimed_at, claims"
                          " FROM messages WHERE state='processing' ORDER BY claimed_at, id")
        for r in rows:
            alive = self.claimant_alive(r["claimed_by"])
            r["claimant"] = {True: "alive", False: "gone", None: "no lease"}[alive]
        return rows

    def processing_release(self, message_ref: int, force: bool = False) -> str | None:
        """Back to staged (as a suspect, its claim counted). None when done, else why not."""
        return self._processing_change(message_ref, force, None)

    def processing_quarantine(self, message_ref: int, force: bool = False) -> str | None:
        return self._processing_change(message_ref, force, "quarantined by the administrator")

    def _processing_change(self, message_ref: int, force: bool,
                           reason: str | None) -> str | None:
        with self.write() as conn:
            row = conn.execute("SELECT claimed_by FROM messages WHERE id=? AND"
                               " state='processing'", (message_ref,)).fetchone()
            if row is None:
                return f"message {message_ref} is not in processing"
            if not force and self.claimant_alive(row[0]):
                # A live claimant would record its own decision afterwards; refusing keeps
                # the message from being decided twice.
                return (f"message {message_ref} is held by a live process ({row[0]});"
                        " use --force to take it anyway")
            now = self.clock()
            if reason is None:
                conn.execute("UPDATE messages SET state='staged', claimed_by=NULL, suspect=1,"
                             " updated_at=? WHERE id=?", (now, message_ref))
                self._event(conn, "processing-release", message_ref, None, None,
                            {"claimant": row[0]})
            else:
                conn.execute("UPDATE messages SET state='done', outcome='quarantined', reason=?,"
                             " claimed_by=NULL, updated_at=? WHERE id=?",
                             (reason, now, message_ref))
                self._event(conn, "outcome", message_ref, None, "quarantined",
                            {"reason": reason, "claimant": row[0]})
        return None

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
            conn.execute("UPDATE messages SET state='staged', claimed_by=NULL,"
                         " claims=max(claims-1, 0) WHERE state='processing' AND claimed_by=?",
                         (self.owner or worker,))

    def forget_raw(self, message_ref: int) -> bool:
        """`quarantine delete`: the raw bytes go, the row and its outcome stay (audit)."""
        with self.write() as conn:
            n = conn.execute("DELETE FROM raw_messages WHERE message_ref=? AND message_ref IN"
                             " (SELECT id FROM messages WHERE outcome='quarantined')",
                             (message_ref,)).rowcount
            if n:
                self._event(conn, "quarantine-delete", message_ref, None, None, {})
        return bool(n)

    def message_state(self, message_ref: int) -> dict[str, Any] | None:
        """State, outcome and reason of one message, and whether its raw bytes are kept."""
        rows = list(self.db.query(
            "SELECT id, state, outcome, reason, EXISTS (SELECT 1 FROM raw_messages WHERE"
            " message_ref=id) AS has_raw FROM messages WHERE id=?", [message_ref]))
        return rows[0] if rows else None

    def requeue_message(self, message_ref: int) -> str | None:
        """`replay`: back to `staged` for the current rules; the earlier outcome stays in the
        event history (recorded in the same transaction). Returns the earlier outcome."""
        with self.write() as conn:
            row = conn.execute("SELECT outcome FROM messages WHERE id=?",
                               (message_ref,)).fetchone()
            if row is None:
                return None
            # A fresh start: a poison-quarantined message gets its tries again.
            conn.execute("UPDATE messages SET state='staged', outcome=NULL, claimed_by=NULL,"
                         " claims=0, suspect=0 WHERE id=?", (message_ref,))
            self._event(conn, "replayed", message_ref, None, None, {"previous": row[0]})
        return str(row[0])

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

    def finish_message(self, message_ref: int, outcome: str, reason: str,
                       alert_key: str | None = None, rule: str | None = None) -> None:
        now = self.clock()
        with self.write() as conn:
            conn.execute(
                "UPDATE messages SET state='done', outcome=?, reason=?,"
                " alert_key=coalesce(?, alert_key), rule=coalesce(?, rule), updated_at=?"
                " WHERE id=?", (outcome, reason, alert_key, rule, now, message_ref))
            self._event(conn, "outcome", message_ref, alert_key, outcome, {"reason": reason})
