"""Decisions: what the pipeline decided about an alert, and the correlations it maintains.

`DecisionsMixin` is the part of `Store` that records a decision in the deciding transaction
(correlation opens and closes, storm membership, folded or cancelled pending calls, new outbox
rows), reads the context `decide()` needs about an alert key, and keeps correlations as
delivery sees them (confirmed, void, reopened as a create). It builds on `OutboxMixin`
(`enqueue`) and `StoreBase`.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.decide.stormgroup import add_storm_line, storm_key
from bridge.models import AlertContext, CorrelationView, Decision, HeldOpen, ListedAlert, \
    PendingCall, TicketCall
from bridge.store.outbox import OutboxMixin


class DecisionsMixin(OutboxMixin):
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

    def alert_context(self, alert: Any, arrived_at: float, policy: Any) -> AlertContext:
        """What decide() needs to know about an alert key, read in the deciding transaction.
        Unsent calls are those of the key's open correlation only: a heal never folds into
        the pending resolve of an earlier ticket of the same key."""
        key = alert.alert_key
        corr = self.open_correlation(key)
        cid = corr.correlation_id if corr else None
        ctx: dict[str, Any] = {"arrived_at": arrived_at, "open_correlation": corr}
        if cid is not None:
            ctx["pending_update"] = self._pending(key, ("UPDATE",), cid)
            ctx["pending_resolve"] = self._pending(key, ("RESOLVED",), cid)
            ctx["held_open"] = self._pending(key, ("OPEN",), cid, unsent=True)
        sid = self.scalar("SELECT m.storm_id FROM storm_members m JOIN correlations c ON"
                          " c.correlation_id=m.storm_id WHERE m.alert_key=? AND m.state='open'"
                          " AND c.state='open' LIMIT 1", (key,))
        if sid:
            storm_of_key = self._correlation_view(sid)
            ctx["storm_of_key"] = storm_of_key
            ctx["storm_members_open"] = int(self.scalar(
                "SELECT count(*) FROM storm_members WHERE storm_id=? AND state='open'", (sid,)))
            ctx |= self._storm_state(storm_of_key)
        elif corr is None and alert.status != "resolved":
            ctx |= self._new_alert_context(alert, arrived_at, policy)
        return AlertContext(**ctx)

    def _new_alert_context(self, alert: Any, t: float, policy: Any) -> dict[str, Any]:
        """Counts of new alert keys before this one, and the storm state of its account."""
        key, account = alert.alert_key, alert.account_id
        group = alert.product_group if policy.storm_group == "product_group" else None
        ctx: dict[str, Any] = {"last_closed": self._last_closed(key)}
        # Windows end at this alert's arrival: alerts that arrived later but were processed
        # first (live mail before another mailbox's backlog) do not count.
        ctx["new_alerts_account"] = self._new_keys(account, t - policy.account_window, t, group)
        ctx["new_alerts_global"] = self._new_keys(None, t - policy.account_window, t)
        ctx["burst_alerts"] = self._new_keys(account, t - policy.burst_window, t, group)
        storm = self.open_correlation(storm_key(account, group))
        ctx["open_storm"] = storm
        if storm is not None:
            ctx |= self._storm_state(storm)
        elif ctx["burst_alerts"] >= policy.burst_threshold or \
                ctx["new_alerts_account"] >= policy.account_cap:
            # A storm ticket may open now: it takes over the burst's held OPENs and names
            # the tickets the burst already got.
            rows = self.conn.execute(
                "SELECT o.id, o.ordering_key, o.correlation_id,"
                " json_extract(o.payload, '$.title'), json_extract(o.payload, '$.alert_type'),"
                " json_extract(o.payload, '$.product_group'), o.first_arrived_at, o.held_until"
                " FROM outbox o JOIN correlations c ON c.correlation_id=o.correlation_id"
                " WHERE o.kind='psa' AND o.action='OPEN' AND o.state='pending'"
                " AND o.attempts=0 AND o.held_until>? AND c.account_id=? AND c.state='open'"
                " AND coalesce(?, c.product_group) IS c.product_group"
                " AND o.ordering_key NOT LIKE 'storm:%' ORDER BY o.first_arrived_at, o.id",
                (t, account, group)).fetchall()
            ctx["held_opens"] = tuple(HeldOpen(r[0], r[1], r[2], r[3] or "", r[4] or "",
                                               r[5] or "", r[6] or t, r[7]) for r in rows)
            held = {r[2] for r in rows}
            ctx["own_tickets"] = tuple(
                ListedAlert(r[0], r[1] or "", r[2] or "", r[3]) for r in self.conn.execute(
                    "SELECT alert_key, title, alert_type, correlation_id FROM correlations"
                    " WHERE account_id=? AND opened_at>? AND opened_at<=? AND state='open'"
                    " AND coalesce(?, product_group) IS product_group"
                    " AND alert_key NOT LIKE 'storm:%' ORDER BY opened_at",
                    (account, t - policy.account_window, t, group)).fetchall()
                if r[3] not in held)
        return ctx

    def _new_keys(self, account: str | None, since: float, until: float,
                  group: str | None = None) -> int:
        """New alert keys (own tickets and keys grouped into a storm) in (since, until], of an
        account (and product group) or of all."""
        where = "account_id=? AND " if account is not None else ""
        args: list[Any] = [account] if account is not None else []
        if group is not None:
            where += "product_group=? AND "
            args.append(group)
        return int(self.scalar(
            f"SELECT (SELECT count(*) FROM correlations WHERE {where}opened_at>? AND"
            f" opened_at<=? AND alert_key NOT LIKE 'storm:%') + (SELECT count(*) FROM"
            f" storm_members WHERE {where}joined_at>? AND joined_at<=?)",
            (*args, since, until, *args, since, until)))

    def _storm_state(self, storm: CorrelationView | None) -> dict[str, Any]:
        if storm is None:
            return {}
        r = self.conn.execute("SELECT product_group, alert_type FROM correlations WHERE"
                              " correlation_id=?", (storm.correlation_id,)).fetchone()
        return {
            "storm_pending_update": self._pending(storm.alert_key, ("OPEN", "UPDATE"),
                                                  storm.correlation_id),
            "storm_size": int(self.scalar("SELECT count(*) FROM storm_members WHERE"
                                          " storm_id=?", (storm.correlation_id,))),
            "storm_routing": (r[0], r[1]) if r and r[0] and r[1] else None,
        }

    def _pending(self, key: str, actions: tuple[str, ...], cid: str,
                 unsent: bool = False) -> PendingCall | None:
        marks = ",".join("?" * len(actions))
        r = self.conn.execute(
            "SELECT id, action, first_arrived_at, occurrences, next_attempt_at, message_ref,"
            " length(json_extract(payload, '$.summary')), correlation_id, held_until"
            f" FROM outbox WHERE kind='psa' AND ordering_key=? AND action IN ({marks})"
            " AND correlation_id=? AND state='pending'"
            + (" AND attempts=0" if unsent else "") + " ORDER BY id DESC LIMIT 1",
            (key, *actions, cid)).fetchone()
        if r is None:
            return None
        return PendingCall(r[0], r[1], r[2] if r[2] is not None else 0.0, r[3], r[4], r[5],
                           r[6] or 0, r[7], r[8])

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
