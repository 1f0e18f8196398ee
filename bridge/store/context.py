"""The context `decide()` needs about an alert, read in the deciding transaction.

`ContextMixin` is the part of `Store` that reads an alert key's open correlation, its unsent
calls, its storm ticket and the new-alert counts of its account. It runs once per alert mail,
so each question is asked in as few statements as the answer allows (a statement costs about as
much as the row it finds): the open correlation and the key's storm in one, the key's three
kinds of unsent call in one, the account's two windows in one. The answers are the same as one
query each would give — the reads are the same, made at the same point of the transaction.
"""

from __future__ import annotations

from typing import Any

from bridge.decide.stormgroup import storm_key
from bridge.models import Alert, AlertContext, CorrelationView, HeldOpen, ListedAlert, \
    PendingCall
from bridge.store.base import StoreBase

# The key's open correlation and the open storm ticket it is grouped in, if any.
_KEY_STATE = (
    "SELECT c.correlation_id, c.opened_at, c.occurrences, (SELECT m.storm_id FROM storm_members"
    " m JOIN correlations s ON s.correlation_id=m.storm_id WHERE m.alert_key=?1 AND"
    " m.state='open' AND s.state='open' LIMIT 1) FROM (SELECT 1) LEFT JOIN correlations c"
    " ON c.alert_key=?1 AND c.state='open'")
# Unsent PSA calls of one correlation of a key, newest first. The redundant state IN (...)
# lets the partial index over unfinished rows serve it: a busy key's delivered history is
# never walked. The summary's length (parsing the payload) only for a storm ticket's rows:
# decide() reads it only there, to cap the list a storm append collects.
_PENDING = (
    "SELECT id, action, first_arrived_at, occurrences, next_attempt_at, message_ref,"
    " {chars}, correlation_id, held_until, attempts"
    " FROM outbox WHERE kind='psa' AND ordering_key=? AND correlation_id=? AND state='pending'"
    " AND state IN ('pending', 'in_flight') AND action IN ({marks}) ORDER BY id DESC")
_KEY_PENDING = _PENDING.format(chars="0", marks="'UPDATE','RESOLVED','OPEN'")
_STORM_PENDING = _PENDING.format(chars="length(json_extract(payload, '$.summary'))",
                                 marks="'OPEN','UPDATE'") + " LIMIT 1"
# A storm ticket with its routing and size (and, for the storm a key is grouped in, how many
# of its keys still fire).
_STORM = (
    "SELECT alert_key, correlation_id, opened_at, occurrences, product_group, alert_type,"
    " (SELECT count(*) FROM storm_members WHERE storm_id=?1){open} FROM correlations"
    " WHERE correlation_id=?1")
_STORM_OF_KEY = _STORM.format(open=", (SELECT count(*) FROM storm_members WHERE storm_id=?1"
                                   " AND state='open')")
_STORM = _STORM.format(open="")


def _call(r: tuple[Any, ...]) -> PendingCall:
    return PendingCall(r[0], r[1], r[2] if r[2] is not None else 0.0, r[3], r[4], r[5],
                       r[6] or 0, r[7], r[8])


class ContextMixin(StoreBase):
    """What decide() reads about an alert (mixed into `Store` through `DecisionsMixin`)."""

    def alert_context(self, alert: Alert, arrived_at: float, policy: Any) -> AlertContext:
        """What decide() needs to know about an alert key, read in the deciding transaction.
        Unsent calls are those of the key's open correlation only: a heal never folds into
        the pending resolve of an earlier ticket of the same key."""
        key = alert.alert_key
        cid, opened_at, occurrences, sid = self.conn.execute(_KEY_STATE, (key,)).fetchone()
        corr = CorrelationView(key, cid, opened_at, occurrences) if cid is not None else None
        ctx: dict[str, Any] = {"arrived_at": arrived_at, "open_correlation": corr}
        if cid is not None:
            ctx |= self._key_pending(key, cid)
        if sid:
            storm_of_key, state = self._storm_state(sid, of_key=True)
            ctx["storm_of_key"] = storm_of_key
            ctx |= state
        elif corr is None and alert.status != "resolved":
            ctx |= self._new_alert_context(alert, arrived_at, policy)
        return AlertContext(**ctx)

    def _key_pending(self, key: str, cid: str) -> dict[str, PendingCall]:
        """The newest unsent append, the newest unsent resolve and the newest OPEN never tried
        of the key's correlation, in one walk over its unfinished rows."""
        found: dict[str, PendingCall] = {}
        cur = self.conn.execute(_KEY_PENDING, (key, cid))
        for r in cur:
            name = "pending_update" if r[1] == "UPDATE" else \
                "pending_resolve" if r[1] == "RESOLVED" else "held_open" if r[9] == 0 else None
            if name is not None and name not in found:
                found[name] = _call(r)
                if len(found) == 3:
                    break
        cur.close()
        return found

    def _new_alert_context(self, alert: Alert, t: float, policy: Any) -> dict[str, Any]:
        """Counts of new alert keys before this one, and the storm state of its account. The
        count over all accounts is read only in a burst of the account: decide() reads it only
        then (the global cap groups only accounts that burst themselves)."""
        key, account = alert.alert_key, alert.account_id
        group = alert.product_group if policy.storm_group == "product_group" else None
        ctx: dict[str, Any] = {"last_closed": self._last_closed(key)}
        # Windows end at this alert's arrival: alerts that arrived later but were processed
        # first (live mail before another mailbox's backlog) do not count.
        ctx["new_alerts_account"], ctx["burst_alerts"] = self._new_keys(
            account, (t - policy.account_window, t - policy.burst_window), t, group)
        if ctx["burst_alerts"] >= policy.burst_threshold:
            ctx["new_alerts_global"] = self._new_keys(None, (t - policy.account_window,), t)[0]
        sid = self.scalar("SELECT correlation_id FROM correlations WHERE alert_key=? AND"
                          " state='open'", (storm_key(account, group),))
        storm, state = self._storm_state(sid) if sid else (None, {})
        ctx["open_storm"] = storm
        if storm is not None:
            ctx |= state
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

    def _new_keys(self, account: str | None, since: tuple[float, ...], until: float,
                  group: str | None = None) -> tuple[int, ...]:
        """New alert keys (own tickets and keys grouped into a storm) in (since, until] for
        each `since`, of an account (and product group) or of all, in one statement."""
        where = "account_id=? AND " if account is not None else ""
        args: list[Any] = [account] if account is not None else []
        if group is not None:
            where += "product_group=? AND "
            args.append(group)
        count = (f"(SELECT count(*) FROM correlations WHERE {where}opened_at>? AND"
                 f" opened_at<=? AND alert_key NOT LIKE 'storm:%') + (SELECT count(*) FROM"
                 f" storm_members WHERE {where}joined_at>? AND joined_at<=?)")
        params: list[Any] = []
        for s in since:
            params += [*args, s, until, *args, s, until]
        row = self.conn.execute(f"SELECT {', '.join([count] * len(since))}", params).fetchone()
        return tuple(int(n) for n in row)

    def _storm_state(self, sid: str, of_key: bool = False
                     ) -> tuple[CorrelationView | None, dict[str, Any]]:
        """A storm ticket and its state: routing, size, its unsent OPEN or append; with
        `of_key` (the storm a key is grouped in) also how many of its keys still fire."""
        r = self.conn.execute(_STORM_OF_KEY if of_key else _STORM, (sid,)).fetchone()
        if r is None:
            return None, {}
        view = CorrelationView(*r[:4])
        state: dict[str, Any] = {
            "storm_pending_update": self._storm_pending(view.alert_key, sid),
            "storm_size": int(r[6]),
            "storm_routing": (r[4], r[5]) if r[4] and r[5] else None,
        }
        if of_key:
            state["storm_members_open"] = int(r[7])
        return view, state

    def _storm_pending(self, key: str, cid: str) -> PendingCall | None:
        """The storm ticket's newest unsent OPEN or append (a new line folds into it)."""
        r = self.conn.execute(_STORM_PENDING, (key, cid)).fetchone()
        return _call(r) if r else None

    def _last_closed(self, key: str) -> CorrelationView | None:
        r = self.conn.execute("SELECT alert_key, correlation_id, opened_at, occurrences FROM"
                              " correlations WHERE alert_key=? AND state='closed'"
                              " ORDER BY closed_at DESC LIMIT 1", (key,)).fetchone()
        return CorrelationView(*r) if r else None
