"""Past mail replayed into a scratch store: what `rules diff` reads from the live store and how
it seeds a scratch store as of the start of the period.

`HistoryMixin` is part of `Store`. The live store is only read (attached read-only); the
scratch store gets the messages of the period back in `staged`, under their own ids, with
their raw bytes, and the correlations that were open when the period began (rebuilt from their
opened/closed times). No outbox rows are copied: what was pending at that time is not known
(docs/rules.md, "Changing rules safely", names the approximation).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from bridge.store.base import StoreBase

# Live outcomes whose message is not replayed: its processing broke a budget or killed its
# worker, so it would only do so again (it stays quarantined on both sides of a diff).
BUDGET_REASONS = ("over the time budget%", "over the memory budget%",
                  "processing crashed or was killed%")

# Staged by `until` too: both sides of a diff seed their stores at slightly different times, and
# mail staged meanwhile (with an earlier arrival time) must be in both or in neither.
_PERIOD = ("m.arrived_at >= :since AND m.arrived_at <= :until AND m.staged_at <= :until"
           " AND m.oversize IS NULL"
           " AND EXISTS (SELECT 1 FROM live.raw_messages r WHERE r.message_ref = m.id)"
           " AND NOT (coalesce(m.outcome, '') = 'quarantined' AND ("
           + " OR ".join(f"coalesce(m.reason, '') LIKE '{r}'" for r in BUDGET_REASONS) + "))")


class HistoryMixin(StoreBase):

    @contextlib.contextmanager
    def _live(self, live_path: Path) -> Iterator[None]:
        uri = f"file:{Path(live_path).resolve()}?mode=ro"
        self.conn.execute("ATTACH DATABASE ? AS live", (uri,))
        try:
            yield
        finally:
            self.conn.execute("DETACH DATABASE live")

    def history_counts(self, live_path: Path, since: float, until: float) -> dict[str, int]:
        """Messages that arrived in the period: replayable, and left out (raw bytes pruned,
        over the size limit, or quarantined for breaking a processing budget)."""
        with self._live(live_path):
            args = {"since": since, "until": until}
            total = self.conn.execute("SELECT count(*) FROM live.messages WHERE arrived_at >="
                                      " :since AND arrived_at <= :until AND staged_at <= :until",
                                      args).fetchone()[0]
            kept = self.conn.execute(f"SELECT count(*) FROM live.messages m WHERE {_PERIOD}",
                                     args).fetchone()[0]
        return {"replayed": int(kept), "left_out": int(total) - int(kept)}

    def seed_history(self, live_path: Path, since: float, until: float) -> int:
        """Fill this (scratch) store: the correlations open at `since` and the messages that
        arrived in [since, until], staged again under their own ids with their raw bytes.
        Returns how many messages were staged."""
        args = {"since": since, "until": until}
        with self._live(live_path), self.write() as conn:
            # Open at `since`: opened before it and not closed by then. Void and damped ones
            # never were tickets. The newest per alert key wins (one open per key).
            conn.execute(
                "INSERT OR IGNORE INTO correlations (correlation_id, alert_key, state,"
                " account_id, product_group, alert_type, title, opened_at, last_seen_at,"
                " closed_at, occurrences, confirmed, previous_id)"
                " SELECT correlation_id, alert_key, 'open', account_id, product_group,"
                " alert_type, title, opened_at, min(last_seen_at, :since), NULL, occurrences,"
                " confirmed, previous_id FROM live.correlations WHERE state IN ('open','closed')"
                " AND opened_at < :since AND (closed_at IS NULL OR closed_at >= :since)"
                " ORDER BY opened_at DESC", args)
            conn.execute(
                "INSERT INTO storm_members SELECT s.storm_id, s.alert_key, s.account_id, 'open',"
                " s.joined_at, s.product_group FROM live.storm_members s JOIN correlations c"
                " ON c.correlation_id = s.storm_id WHERE s.joined_at < :since", args)
            n = conn.execute(
                "INSERT INTO messages (id, source, source_uid, arrived_at, staged_at, message_id,"
                " sha256, size, state, updated_at, oversize)"
                " SELECT m.id, m.source, m.source_uid, m.arrived_at, m.staged_at, m.message_id,"
                f" m.sha256, m.size, 'staged', m.staged_at, NULL FROM live.messages m"
                f" WHERE {_PERIOD}", args).rowcount
            conn.execute("INSERT INTO raw_messages (message_ref, raw) SELECT r.message_ref,"
                         " r.raw FROM live.raw_messages r JOIN messages m ON m.id ="
                         " r.message_ref")
        return int(n)

    def staged_ids(self) -> list[int]:
        """The staged messages, in arrival order (the order `claim_staged` hands them out)."""
        return [r[0] for r in self.conn.execute("SELECT id FROM messages WHERE state='staged'"
                                                " ORDER BY arrived_at, id")]

    def replay_results(self) -> dict[int, dict[str, Any]]:
        """Per message of a replay: arrival, state, outcome, rule and alert key, and for a
        message that waits, the earliest hold of its unsent rows."""
        out: dict[int, dict[str, Any]] = {}
        for mid, arrived, state, outcome, reason, rule, key in self.conn.execute(
                "SELECT id, arrived_at, state, outcome, reason, rule, alert_key FROM messages"):
            out[mid] = {"arrived_at": arrived, "state": state, "outcome": outcome,
                        "reason": reason, "rule": rule, "alert_key": key, "held_until": None}
        for ref, due in self.conn.execute(
                "SELECT message_ref, min(next_attempt_at) FROM outbox WHERE state='pending'"
                " AND message_ref IS NOT NULL GROUP BY message_ref"):
            if ref in out:
                out[ref]["held_until"] = due
        return out

    def scratch_mode(self) -> None:
        """A throwaway replay store: commits need not survive a crash (the replay is run
        again), and no audit trail is written (nothing reads it; `simulate`, whose preview
        does, keeps it)."""
        self.record_events = False
        with contextlib.suppress(sqlite3.OperationalError):
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("PRAGMA journal_mode=MEMORY")
