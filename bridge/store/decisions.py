"""Decisions: what the pipeline decided about an alert, and the correlations it maintains.

`DecisionsMixin` is the part of `Store` that records a decision in the deciding transaction
(correlation opens and closes, storm membership, folded or cancelled pending calls, new outbox
rows) and keeps correlations as delivery sees them (confirmed, void, reopened as a create). It
builds on `OutboxMixin` (`enqueue`), `ContextMixin` (the context `decide()` reads about an alert
key, `bridge.store.context`) and `StoreBase`.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.decide.stormgroup import add_storm_line
from bridge.models import CorrelationView, Decision, TicketCall
from bridge.store.context import ContextMixin
from bridge.store.outbox import OutboxMixin


class DecisionsMixin(OutboxMixin, ContextMixin):
    """Decisions, correlations and storm state (mixed into `Store`)."""

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

    def record_effects(self, message_ref: int | None, decision: Decision, *, arrived_at: float,
                       alert_meta: dict[str, Any] | None = None) -> list[int]:
        """The parts of a decision beyond the message itself: correlations, storm membership,
        folds, cancels and new outbox rows (whose ids are returned)."""
        now = self.clock()
        conn = self.conn
        meta = dict(alert_meta or {})
        alert_group = meta.get("product_group")  # before a storm ticket's own routing
        d = decision
        if d.close_correlation:  # first: a stale ticket is closed before its successor opens
            conn.execute("UPDATE correlations SET state='closed', closed_at=? WHERE"
                         " correlation_id=? AND state='open'", (arrived_at, d.close_correlation))
        if d.open_correlation:
            key = d.open_key or d.alert_key
            if d.open_key:  # a storm ticket: its routing comes from its own OPEN payload
                p = next((i.payload for i in d.outbox if i.correlation_id == d.open_correlation),
                         {})
                meta |= {"product_group": p.get("product_group"),
                         "alert_type": p.get("alert_type"), "title": p.get("title")}
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
                         " joined_at, product_group) VALUES (?,?,?,'open',?,?) ON CONFLICT"
                         " (storm_id, alert_key) DO UPDATE SET state='open',"
                         " joined_at=excluded.joined_at",
                         (d.storm_join, d.alert_key, meta.get("account_id"), arrived_at,
                          alert_group))
        if d.storm_leave:
            conn.execute("UPDATE storm_members SET state='resolved' WHERE storm_id=? AND"
                         " alert_key=?", (d.storm_leave, d.alert_key))
        if d.absorb:
            self._absorb(d, message_ref, meta.get("account_id"))
        if d.damp:
            self._damp(d.damp, message_ref)
        if d.fold_into is not None:
            self._fold(d.fold_into, arrived_at, d.fold_note, d.fold_section, d.fold_title)
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

    def _fold(self, row_id: int, arrived_at: float, note: str | None,
              section: str | None = None, title: str | None = None) -> None:
        conn = self.conn
        conn.execute("UPDATE outbox SET occurrences=occurrences+1,"
                     " last_arrived_at=max(coalesce(last_arrived_at, ?), ?),"
                     " first_arrived_at=min(coalesce(first_arrived_at, ?), ?), updated_at=?"
                     " WHERE id=?", (arrived_at, arrived_at, arrived_at, arrived_at,
                                     self.clock(), row_id))
        if note:
            payload = json.loads(self.scalar("SELECT payload FROM outbox WHERE id=?",
                                             (row_id,)) or "{}")
            summary = str(payload.get("summary", ""))
            payload["summary"] = add_storm_line(summary, section, note) if section \
                else f"{summary}\n{note}"
            if title:
                payload["title"] = title
            conn.execute("UPDATE outbox SET payload=? WHERE id=?", (json.dumps(payload), row_id))

    def _settle_unsent(self, cid: str, outcome: str, reason: str, by_message: int | None,
                       event: str) -> None:
        """The unsent calls of a correlation (PSA and webhook mirrors) are dropped and their
        waiting messages end with `outcome`: the ticket is never created."""
        conn = self.conn
        rows = conn.execute("SELECT id, message_ref, ordering_key FROM outbox WHERE"
                            " correlation_id=? AND state='pending'", (cid,)).fetchall()
        now = self.clock()
        for row_id, message, okey in rows:
            conn.execute("UPDATE outbox SET state='done', result=?, updated_at=? WHERE id=?",
                         (json.dumps({event: reason}), now, row_id))
            if message is not None and message != by_message:
                conn.execute("UPDATE messages SET state='done', outcome=?, reason=?,"
                             " updated_at=? WHERE id=? AND state='pending'",
                             (outcome, reason, now, message))
            self._event(conn, event, message, okey, outcome,
                        {"outbox": row_id, "by_message": by_message, "reason": reason})

    def _damp(self, cid: str, by_message: int | None) -> None:
        """A problem healed before its held OPEN went out: no ticket, both mails `damped`."""
        self._settle_unsent(cid, "damped", f"the problem healed (message {by_message}) before"
                            " its ticket was due: no ticket", by_message, "damped")
        self.conn.execute("UPDATE correlations SET state='damped', closed_at=opened_at WHERE"
                          " correlation_id=?", (cid,))

    def _absorb(self, d: Decision, by_message: int | None, account_id: str | None) -> None:
        """A storm ticket takes over the burst's held OPENs: each key is listed on it (a
        storm member since its own arrival) instead of getting a ticket of its own."""
        storm = d.open_correlation or d.storm_join
        for h in d.absorb:
            self._settle_unsent(h.correlation_id, "coalesced",
                                f"a burst: listed on storm ticket {storm} instead of a ticket"
                                " of its own", by_message, "grouped")
            self.conn.execute("DELETE FROM correlations WHERE correlation_id=?",
                              (h.correlation_id,))
            self.conn.execute(
                "INSERT INTO storm_members (storm_id, alert_key, account_id, state, joined_at,"
                " product_group) VALUES (?,?,?,'open',?,?) ON CONFLICT (storm_id, alert_key)"
                " DO UPDATE SET state='open'",
                (storm, h.alert_key, account_id, h.arrived_at, h.product_group))

    def _cancel(self, row_id: int, by_message: int | None) -> None:
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
        # Its webhook mirrors wait as it did: they are cancelled with it.
        conn.execute("UPDATE outbox SET state='done', result=?, updated_at=? WHERE"
                     " kind='webhook' AND action='RESOLVED' AND state='pending' AND"
                     " correlation_id=(SELECT correlation_id FROM outbox WHERE id=?)",
                     (json.dumps({"cancelled": reason}), self.clock(), row_id))
        conn.execute("UPDATE messages SET state='done', outcome='coalesced', reason=?,"
                     " updated_at=? WHERE id=? AND state='pending'",
                     (reason, self.clock(), row[0]))
        # Keyed, so `mailbridge events --key` shows what became of the cancelled resolve.
        self._event(conn, "cancelled", row[0], row[1], "coalesced",
                    {"outbox": row_id, "by_message": by_message, "reason": reason})

    def close_correlation(self, correlation_id: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE correlations SET state='closed', closed_at=? WHERE"
                         " correlation_id=? AND state='open'", (self.clock(), correlation_id))

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
                         call: TicketCall, arrived_at: float) -> None:
        """An UPDATE whose ticket does not exist becomes the OPEN of a new ticket."""
        with self.write() as conn:
            current = self.open_correlation(alert_key)
            if current is None:
                conn.execute(
                    "INSERT INTO correlations (correlation_id, alert_key, state, account_id,"
                    " product_group, alert_type, title, opened_at, last_seen_at)"
                    " VALUES (?,?,'open',?,?,?,?,?,?)",
                    (new_cid, alert_key, call.account_id, call.product_group,
                     call.alert_type, call.title[:255], arrived_at, arrived_at))
                cid = new_cid
            else:  # a later alert already opened one: append to it instead
                cid = current.correlation_id
            conn.execute("UPDATE outbox SET action=?, correlation_id=?, updated_at=? WHERE id=?",
                         ("OPEN" if current is None else "UPDATE", cid, self.clock(), row_id))
