"""Read-only views of one message for previews and the operator (no writes here).

`ReadsMixin` is part of `Store`; it builds on `StoreBase` (`conn` and `db`).
"""

from __future__ import annotations

import json
from typing import Any

from bridge.store.base import StoreBase


class ReadsMixin(StoreBase):

    def preview_of(self, message_ref: int) -> dict[str, Any]:
        """A message's outcome, what classified it and its outbox rows (`simulate`)."""
        row = self.conn.execute("SELECT state, outcome, reason, alert_key, rule FROM messages"
                                " WHERE id=?", (message_ref,)).fetchone()
        ev = self.conn.execute("SELECT detail FROM events WHERE message_ref=? AND"
                               " kind='classified' ORDER BY id DESC LIMIT 1",
                               (message_ref,)).fetchone()
        detail: dict[str, Any] = json.loads(ev[0]) if ev and ev[0] else {}
        outbox = []
        for r in self.conn.execute("SELECT id, kind, action, ordering_key, correlation_id,"
                                   " state, next_attempt_at, payload FROM outbox WHERE"
                                   " message_ref=? ORDER BY id", (message_ref,)):
            outbox.append({"id": r[0], "kind": r[1], "action": r[2], "ordering_key": r[3],
                           "correlation_id": r[4], "state": r[5], "next_attempt_at": r[6],
                           "payload": json.loads(r[7]) if r[7] else {}})
        return {
            "state": row[0] if row else None, "outcome": row[1] if row else None,
            "reason": row[2] if row else None, "alert_key": row[3] if row else None,
            "rule": row[4] if row else detail.get("rule"),
            "kind": detail.get("kind"), "subject": detail.get("subject", ""),
            "account": detail.get("account"), "how": detail.get("how"), "outbox": outbox,
        }

    def waiting_reasons(self, limit: int = 5) -> list[dict[str, Any]]:
        """Why unsent rows wait (a refused credential, a removed webhook target, a peer down),
        most common first, for `status`."""
        return list(self.db.query(
            "SELECT last_error AS reason, count(*) AS rows FROM outbox WHERE state='pending'"
            " AND last_error IS NOT NULL GROUP BY last_error ORDER BY count(*) DESC LIMIT ?",
            [limit]))
