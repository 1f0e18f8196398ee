"""The state a `rules diff` replay starts from (Store.seed_history): the correlations open at
the start of the period, rebuilt from their opened/closed times, and the period's messages
staged again under their own ids — without the ones it cannot or must not replay."""

from __future__ import annotations

import sqlite3

from bridge.models import RawMessage
from bridge.store import Store

SINCE, UNTIL = 10_000.0, 20_000.0


def corr(conn: sqlite3.Connection, cid: str, key: str, state: str, opened: float,
         closed: float | None) -> None:
    conn.execute("INSERT INTO correlations (correlation_id, alert_key, state, opened_at,"
                 " last_seen_at, closed_at) VALUES (?,?,?,?,?,?)",
                 (cid, key, state, opened, max(opened, closed or opened), closed))


def test_seed_rebuilds_the_state_at_the_start_of_the_period(tmp_path):
    live_path = tmp_path / "live.db"
    live = Store(live_path, clock=lambda: 15_000.0)
    ids = [r.id for r in live.stage_many([
        RawMessage(b"Subject: a\n\nx", "pipe", None, 12_000.0),   # replayed
        RawMessage(b"Subject: b\n\nx", "pipe", None, 13_000.0),   # raw pruned
        RawMessage(b"Subject: c\n\nx", "pipe", None, 14_000.0),   # broke a budget
        RawMessage(b"Subject: d\n\nx", "pipe", None, 5_000.0),    # before the period
    ])]
    live.close()
    conn = sqlite3.connect(live_path)
    with conn:
        corr(conn, "c-open", "k1", "open", 1_000.0, None)             # open then and now
        corr(conn, "c-closed-later", "k2", "closed", 2_000.0, 12_000.0)  # open then
        corr(conn, "c-closed-before", "k3", "closed", 2_000.0, 9_000.0)
        corr(conn, "c-opened-later", "k4", "open", 11_000.0, None)
        corr(conn, "c-void", "k5", "void", 3_000.0, None)
        conn.execute("DELETE FROM raw_messages WHERE message_ref=?", (ids[1],))
        conn.execute("UPDATE messages SET state='done', outcome='quarantined', reason=? WHERE"
                     " id=?", ("over the time budget of 5 s while reading the message", ids[2]))
    conn.close()
    late = Store(live_path, clock=lambda: UNTIL + 60)  # staged after the diff began
    late.stage(RawMessage(b"Subject: e\n\nx", "pipe", None, 16_000.0))
    late.close()

    scratch = Store(tmp_path / "scratch.db")
    scratch.scratch_mode()
    assert scratch.history_counts(live_path, SINCE, UNTIL) == {"replayed": 1, "left_out": 2}
    assert scratch.seed_history(live_path, SINCE, UNTIL) == 1
    assert scratch.staged_ids() == [ids[0]]
    assert scratch.message_raw(ids[0]) == b"Subject: a\n\nx"
    rows = {r["correlation_id"]: r for r in scratch.query(
        "SELECT correlation_id, state, closed_at, last_seen_at FROM correlations")}
    assert set(rows) == {"c-open", "c-closed-later"}
    assert all(r["state"] == "open" and r["closed_at"] is None for r in rows.values())
    assert rows["c-closed-later"]["last_seen_at"] <= SINCE  # as of the start of the period
    assert scratch.query("SELECT count(*) AS n FROM outbox")[0]["n"] == 0
    assert scratch.query("SELECT count(*) AS n FROM events")[0]["n"] == 0  # scratch: no trail
    results = scratch.replay_results()
    assert results[ids[0]]["state"] == "staged" and results[ids[0]]["arrived_at"] == 12_000.0
    scratch.close()
