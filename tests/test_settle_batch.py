"""Settlements written together (`apply_settlements`) leave the store as row by row would.

Real stores (SQLite files), real decisions; the settlements are the PSA target's kinds: a
create confirmed, an update, a retry, a dead row, a suppressed create that voids its
correlation. A row whose writes fail is undone alone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.config import settings_from_dict
from bridge.decide.core import decide
from bridge.deliver.settle import apply_settlement, apply_settlements, failed, retry, settled
from bridge.models import Alert, Outcome, RawMessage
from bridge.seams import CorrelationChange, CorrelationOp, Event, Settlement
from bridge.store import Store
from bridge.store.db import OutboxRow

NOW = 1_000_000.0


def store_with_rows(path: Path, n: int = 5) -> tuple[Store, list[OutboxRow]]:
    store = Store(path, clock=lambda: NOW)
    settings = settings_from_dict({})
    with store.write():
        for i in range(n):
            key = f"acme:web{i}:Host Down"
            mid = store.stage(RawMessage(b"Message-ID: <m%d@t>\r\n\r\nx" % i, "pipe", None,
                                         NOW)).id
            alert = Alert(key, "open", f"ACME-{i}", "servers", "Host Down", f"{key} open", "x")
            ctx = store.alert_context(alert, NOW, settings.storm)
            store.apply_decision(mid, decide(alert, ctx, policy=settings.storm), arrived_at=NOW)
    rows = store.claim_outbox(NOW + 1, 100)
    assert len(rows) == n
    return store, rows


def sent(row: OutboxRow, verdict: str) -> Event:
    return Event("sent", row.message_ref, row.ordering_key, verdict,
                 {"outbox": row.id, "correlation_id": row.correlation_id, "http_status": 201})


def settlements(rows: list[OutboxRow]) -> list[tuple[OutboxRow, Settlement]]:
    a, b, c, d, e = rows
    return [
        (a, settled(Outcome.CREATED, "created", sent(a, "created"),
                    CorrelationChange(CorrelationOp.CONFIRM, a.correlation_id,
                                      a.correlation_id))),
        (b, retry(b, NOW, 30.0, "temporary: 503", sent(b, "transient"))),
        (c, failed("the PSA rejected the call", sent(c, "rejected"))),
        (d, settled(Outcome.SUPPRESSED, "suppressed", sent(d, "suppressed"),
                    CorrelationChange(CorrelationOp.VOID, d.correlation_id, "suppressed"))),
        (e, settled(Outcome.APPENDED, "appended", sent(e, "updated"))),
    ]


def contents(store: Store) -> dict[str, list[tuple[object, ...]]]:
    """The store's state, correlation ids (random) named by their alert key."""
    names = dict(store.conn.execute("SELECT correlation_id, alert_key FROM correlations"))

    def named(value: object) -> object:
        if isinstance(value, str):
            for cid, key in names.items():
                value = value.replace(cid, f"<{key}>")
        return value

    def rows(sql: str) -> list[tuple[object, ...]]:
        return [tuple(named(v) for v in r) for r in store.conn.execute(sql).fetchall()]
    return {
        "events": rows("SELECT kind, message_ref, alert_key, outcome, detail FROM events"
                       " ORDER BY id"),
        "outbox": rows("SELECT id, state, result, last_error, next_attempt_at, attempts,"
                       " crashes FROM outbox ORDER BY id"),
        "messages": rows("SELECT id, state, outcome, reason FROM messages ORDER BY id"),
        "correlations": rows("SELECT correlation_id, state, confirmed, closed_at FROM"
                             " correlations ORDER BY alert_key"),
    }


def test_together_is_the_same_as_one_by_one(tmp_path: Path) -> None:
    together, rows = store_with_rows(tmp_path / "a.db")
    one_by_one, same_rows = store_with_rows(tmp_path / "b.db")
    assert apply_settlements(together, settlements(rows)) == [None] * 5
    for row, s in settlements(same_rows):
        apply_settlement(one_by_one, row, s)
    assert contents(together) == contents(one_by_one)
    assert [o for _, _, o, _ in contents(together)["messages"]] == [
        "created", None, "failed", "suppressed", "appended"]


def test_a_row_whose_writes_fail_is_undone_alone(tmp_path: Path) -> None:
    store, rows = store_with_rows(tmp_path / "a.db", 5)
    batch = settlements(rows)
    # The PSA names row c's ticket with an id another correlation has: the rename fails.
    c, s = batch[2]
    clash = CorrelationChange(CorrelationOp.CONFIRM, c.correlation_id, rows[0].correlation_id)
    batch[2] = (c, settled(Outcome.CREATED, "created", sent(c, "created"), clash))
    errors = apply_settlements(store, batch)
    assert [e is None for e in errors] == [True, True, False, True, True]
    assert isinstance(errors[2], sqlite3.IntegrityError)
    state = contents(store)
    assert not any(str(c.id) in (d or "") and k == "sent" and f'"outbox": {c.id},' in (d or "")
                   for k, _, _, _, d in state["events"])
    by_id = {r[0]: r for r in state["outbox"]}
    assert by_id[c.id][1] == "in_flight"  # untouched: handed back and sent again later
    assert [o for _, _, o, _ in state["messages"]] == [
        "created", None, None, "suppressed", "appended"]
    assert len([e for e in state["events"] if e[0] == "sent"]) == 4


@pytest.mark.parametrize("size", [1, 3])
def test_empty_effects_and_no_message(tmp_path: Path, size: int) -> None:
    store, rows = store_with_rows(tmp_path / "a.db", 5)
    batch = [(r, settled(Outcome.CREATED, "created")) for r in rows[:size]]
    assert apply_settlements(store, batch) == [None] * size
    assert [s for _, s, *_ in contents(store)["outbox"]][:size] == ["done"] * size
