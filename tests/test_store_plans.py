"""The store's hot reads go through an index, not a walk over a table (migration 12).

Each test captures the SQL a store method runs (sqlite3's trace callback gives every statement
with its values filled in) and asks SQLite how it would run each: no `SCAN` of the table the
method reads by key. A walk over every staged message at each outbox claim of `run --once` was
a cost that grew with the backlog (docs/performance.md, round 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bridge.models import OutboxItem, RawMessage
from bridge.store.db import Store

T0 = 1_750_000_000.0


def plans(store: Store, call: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        store.conn.set_trace_callback(None)
    out: list[str] = []
    for sql in seen:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            out += [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert out, "the call ran no query"
    return out


def busy_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.db", clock=lambda: T0)
    store.stage_many([RawMessage(f"Message-ID: <{i}@x>\r\n\r\nbody {i}".encode(), "pipe", None,
                                 T0 - 1000 + i) for i in range(300)])
    store.claim_staged("w", limit=50)
    store.enqueue(OutboxItem("psa", "k1", {"title": "t"}, "OPEN", "c1"), 1, now=T0)
    return store


def test_an_outbox_claim_behind_a_backlog_reads_the_oldest_arrival_by_index(tmp_path: Path
                                                                          ) -> None:
    store = busy_store(tmp_path)
    got = plans(store, lambda: store.claim_outbox(T0, 10, behind_backlog=0))
    # The oldest arrival per state straight from the index (by state alone the index had to
    # visit every staged message's row for its arrival time).
    reads = [p for p in got if " messages " in f"{p} "]
    assert reads and all("COVERING INDEX messages_state" in p for p in reads), got


def test_counts_by_outcome_and_events_by_key_use_their_indexes(tmp_path: Path) -> None:
    store = busy_store(tmp_path)
    got = plans(store, lambda: store.outcome_counts(since=T0 - 3600))
    assert any("messages_outcome" in p for p in got), got
    got = plans(store, lambda: store.event_rows(alert_key="k1"))
    assert any("events_key" in p for p in got), got
