"""Expected mail (issue 20): the deadlines of `[[expect]]` instances, kept in the store so a
restart neither forgets a deadline nor opens a second ticket for one outage.

`ExpectationsMixin` relies on `conn`, `write()`, `query` and `_event` of `Store`. The rules
(what counts, when it is due) live in bridge/classify/expect.py; turning a passed deadline
into a ticket in bridge/decide/expectations.py.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.models import ExpectationRow
from bridge.store.base import StoreBase


_COLUMNS = ("name, scope, account_id, what, last_seen_at, judge_at, state, missing_since,"
            " alert_key, created_at")


class ExpectationsMixin(StoreBase):
    """Rows of the `expectations` table (mixed into `Store`)."""

    def expectation(self, name: str, scope: str) -> ExpectationRow | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM expectations WHERE name=? AND scope=?",
                                (name, scope)).fetchone()
        return ExpectationRow(*row) if row else None

    def expectations(self) -> list[ExpectationRow]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM expectations"
                                 " ORDER BY judge_at, name, scope").fetchall()
        return [ExpectationRow(*r) for r in rows]

    def expectation_seen(self, name: str, scope: str, account_id: str, what: str,
                         seen_at: float, judge_at: float) -> ExpectationRow | None:
        """Record a report; the row as it was before (None: the first report of this scope).
        An older report than the last one (a backlog out of order) moves nothing back."""
        before = self.expectation(name, scope)
        with self.write() as conn:
            if before is None:
                conn.execute(f"INSERT INTO expectations ({_COLUMNS}) VALUES"
                             " (?,?,?,?,?,?,'watching',NULL,NULL,?)",
                             (name, scope, account_id, what, seen_at, judge_at, seen_at))
            elif before.last_seen_at is None or seen_at >= before.last_seen_at:
                conn.execute("UPDATE expectations SET account_id=?, what=?, last_seen_at=?,"
                             " judge_at=?, state='watching', missing_since=NULL, alert_key=NULL"
                             " WHERE name=? AND scope=?",
                             (account_id or before.account_id, what, seen_at, judge_at, name,
                              scope))
            elif before.state == "missing":
                conn.execute("UPDATE expectations SET state='watching', missing_since=NULL,"
                             " alert_key=NULL WHERE name=? AND scope=?", (name, scope))
        return before

    def expectation_start(self, name: str, scope: str, account_id: str, what: str,
                          now: float, judge_at: float) -> None:
        """A fixed expectation (its account is in the rule) is watched from its first judge."""
        with self.write() as conn:
            conn.execute(f"INSERT OR IGNORE INTO expectations ({_COLUMNS}) VALUES"
                         " (?,?,?,?,NULL,?,'watching',NULL,NULL,?)",
                         (name, scope, account_id, what, judge_at, now))

    def expectation_missing(self, name: str, scope: str, alert_key: str, since: float) -> None:
        with self.write() as conn:
            conn.execute("UPDATE expectations SET state='missing', missing_since=?, alert_key=?"
                         " WHERE name=? AND scope=?", (since, alert_key, name, scope))

    def expectation_forget(self, name: str, scope: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM expectations WHERE name=? AND scope=?", (name, scope))

    def report_history(self, since: float, head_bytes: int = 16384
                       ) -> list[tuple[float, str | None, str | None, bytes]]:
        """(arrival, rule, outcome, the head of the raw mail) of every message since `since`
        that was not rejected or quarantined, oldest first: what `expect suggest` reads."""
        rows = self.conn.execute(
            "SELECT m.arrived_at, m.rule, m.outcome, substr(r.raw, 1, ?) FROM messages m"
            " JOIN raw_messages r ON r.message_ref = m.id WHERE m.arrived_at >= ? AND"
            " coalesce(m.outcome, '') NOT IN ('rejected', 'quarantined')"
            " ORDER BY m.arrived_at", (head_bytes, since)).fetchall()
        return [(float(a), rule, outcome, bytes(head)) for a, rule, outcome, head in rows]

    def expectation_events(self) -> list[dict[str, Any]]:
        """The `expectation-missing` events, oldest first, with their detail read out."""
        rows = self.conn.execute("SELECT alert_key, outcome, detail FROM events WHERE"
                                 " kind='expectation-missing' ORDER BY id").fetchall()
        out = []
        for key, outcome, detail in rows:
            d = json.loads(detail or "{}")
            rows_of_key = [r for (r,) in self.conn.execute(
                "SELECT id FROM outbox WHERE ordering_key=? AND message_ref IS NULL ORDER BY id",
                (key,))]
            out.append({"alert_key": key, "outcome": outcome, "expectation": d.get("expectation"),
                        "account": d.get("account"), "reason": d.get("reason"),
                        "last_seen": d.get("last_seen"), "due": d.get("due"),
                        "outbox": rows_of_key})
        return out

