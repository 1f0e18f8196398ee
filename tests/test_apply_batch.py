"""A batch is recorded as its messages would be one by one (issue 21: fewer statements a batch).

`Pipeline.apply_batch` asks for the batch's claims once, records the batch under one savepoint
and, when a message fails, records the batch again with a savepoint per message; `stage_many`
looks up a batch's duplicates once. These tests hold each to the one-at-a-time behaviour: the
same decisions whether a key's mails share a batch or not, a failing message parked alone, a
released claim left alone, a copy later in the same batch still a duplicate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bridge.assembly import load_rules
from bridge.config import StormSettings, load_settings
from bridge.decide.decider import Decider
from bridge.models import Alert, Decision, RawMessage
from bridge.process.batches import APPLY_SLICE, process_staged
from bridge.process.pipeline import Pipeline, Result, classify_context
from bridge.seams import StateStore
from bridge.store.db import AsyncStore, StagedRow, Store
from tests.helpers import SAMPLES, write_config

T0 = 1_750_000_000.0
PROBLEM = (SAMPLES / "05-zabbix-problem.eml").read_bytes()
RESOLVED = (SAMPLES / "06-zabbix-resolved.eml").read_bytes()


def zabbix(event: int, n: int, resolved: bool = False) -> bytes:
    """Zabbix problem (or its recovery) `event`; `n` makes the Message-ID unique."""
    raw = (RESOLVED if resolved else PROBLEM).replace(b"48213", str(event).encode())
    return raw.replace(b"Message-ID: <", f"Message-ID: <{n}.".encode())


@dataclass(frozen=True)
class FailingDecider(Decider):
    """Raises for one alert key, as a bug would."""

    bad_key: str = ""

    def decide(self, store: StateStore, alert: Alert, arrived_at: float, *,
               override: dict[str, float] | None = None) -> Decision:
        if alert.alert_key == self.bad_key:
            raise RuntimeError("boom")
        return super().decide(store, alert, arrived_at, override=override)


def parts(tmp_path: Path, bad_event: int | None = None) -> tuple[Pipeline, Store]:
    settings = load_settings(write_config(tmp_path, SimpleNamespace(url="http://127.0.0.1:9")))
    ids = itertools.count(1)
    decider = Decider.from_settings(settings, lambda: f"cid-{next(ids)}")
    pipeline = Pipeline(settings, load_rules(settings), classify_context(settings), decider)
    if bad_event is not None:
        c = pipeline.evaluate(zabbix(bad_event, 0)).classification
        assert c is not None and c.alert is not None
        key = c.alert.alert_key
        pipeline = Pipeline(settings, pipeline.ruleset, pipeline.context, FailingDecider(
            settings.storm, decider.webhooks, decider.new_id, bad_key=key))
    return pipeline, Store(tmp_path / "mailbridge.db", clock=lambda: T0)


def record(pipeline: Pipeline, store: Store, mails: list[bytes], batch: int) -> None:
    store.stage_many([RawMessage(raw, "pipe", None, T0 - 100 + i) for i, raw in enumerate(mails)])
    while rows := store.claim_staged("w", limit=batch):
        pipeline.apply_batch(store, rows, [pipeline.evaluate(r.raw, message_ref=r.id)
                                           for r in rows], "w")


def snapshot(store: Store) -> dict[str, list[Any]]:
    return {
        "messages": store.conn.execute("SELECT id, state, outcome, reason, alert_key FROM"
                                       " messages ORDER BY id").fetchall(),
        "outbox": store.conn.execute("SELECT id, kind, ordering_key, message_ref, action,"
                                     " correlation_id, payload, occurrences, next_attempt_at"
                                     " FROM outbox ORDER BY id").fetchall(),
        "correlations": store.conn.execute("SELECT * FROM correlations ORDER BY"
                                           " correlation_id").fetchall(),
        "events": store.conn.execute("SELECT kind, message_ref, alert_key, outcome, detail"
                                     " FROM events ORDER BY id").fetchall(),
    }


def test_one_keys_mails_in_one_batch_are_decided_as_one_by_one(tmp_path: Path) -> None:
    """A problem, its repeats (the second appends, the third folds into that append while it
    waits) and its recovery: the same records in one batch as in a batch each."""
    mails = [zabbix(7, 1), zabbix(7, 2), zabbix(7, 3), zabbix(8, 4), zabbix(7, 5, True),
             zabbix(8, 6, True), zabbix(9, 7)]
    got = {}
    for batch in (1, len(mails)):
        (tmp_path / str(batch)).mkdir()
        pipeline, store = parts(tmp_path / str(batch))
        record(pipeline, store, mails, batch)
        got[batch] = snapshot(store)
        store.close()
    assert got[1] == got[len(mails)]
    outbox = got[1]["outbox"]
    assert [r[4] for r in outbox] == ["OPEN", "UPDATE", "OPEN", "RESOLVED", "RESOLVED", "OPEN"]
    assert outbox[1][7] == 2  # the third mail folded into the waiting append
    assert [m[2] for m in got[1]["messages"]].count("coalesced") == 1


def test_a_failing_message_is_parked_and_the_rest_recorded_once(tmp_path: Path) -> None:
    pipeline, store = parts(tmp_path, bad_event=2)
    record(pipeline, store, [zabbix(1, 1), zabbix(2, 2), zabbix(3, 3)], batch=3)
    got = snapshot(store)
    store.close()
    states = [(m[1], m[2]) for m in got["messages"]]
    assert states == [("pending", None), ("done", "quarantined"), ("pending", None)]
    assert got["messages"][1][3] == "internal error while deciding: RuntimeError: boom"
    assert [r[3] for r in got["outbox"]] == [1, 3]  # one OPEN each, none for the bad one
    kinds = [(e[0], e[1]) for e in got["events"] if e[0] != "staged"]
    # The first try's records are undone: each event once, the bad message's classification
    # with it.
    assert kinds == [("classified", 1), ("decided", 1), ("queued", 1), ("decided", 2),
                     ("classified", 3), ("decided", 3), ("queued", 3)]


def test_a_claim_released_meanwhile_is_left_alone(tmp_path: Path) -> None:
    pipeline, store = parts(tmp_path)
    store.stage_many([RawMessage(zabbix(i, i), "pipe", None, T0 + i) for i in range(3)])
    rows = store.claim_staged("w", limit=3)
    store.conn.execute("UPDATE messages SET state='staged', claimed_by=NULL WHERE id=?",
                       (rows[1].id,))
    pipeline.apply_batch(store, rows, [pipeline.evaluate(r.raw) for r in rows], "w")
    states = [r[0] for r in store.conn.execute("SELECT state FROM messages ORDER BY id")]
    store.close()
    assert states == ["pending", "staged", "pending"]


def test_copies_within_one_staged_batch_are_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path / "mailbridge.db")
    a, b = zabbix(1, 1), zabbix(2, 2)
    results = store.stage_many([
        RawMessage(a, "imap:x", "1:1", 1.0),
        RawMessage(b, "imap:x", "1:1", 2.0),     # the same source identity, other bytes
        RawMessage(a, "imap:y", "1:9", 3.0),     # the same bytes and Message-ID elsewhere
        RawMessage(b, "pipe", None, 4.0),        # b is known only by identity so far
        RawMessage(b, "pipe", None, 5.0),        # ... and now by its hash
        RawMessage(a + b"\n", "pipe", None, 6.0),  # same Message-ID, other bytes: new
    ])
    store.close()
    assert [(r.id, r.duplicate) for r in results] == [
        (1, False), (1, True), (1, True), (2, False), (2, True), (3, False)]


def test_the_count_over_all_accounts_is_read_only_in_a_burst(tmp_path: Path) -> None:
    """decide() reads `new_alerts_global` only when the account bursts; the context leaves it
    0 otherwise (it was a walk over every correlation) and counts it in a burst."""
    pipeline, store = parts(tmp_path)
    record(pipeline, store, [zabbix(i, i) for i in range(1, 4)], batch=3)
    c = pipeline.evaluate(zabbix(4, 4)).classification
    assert c is not None and c.alert is not None
    alert = c.alert
    windows = {"account_window": 3600.0, "burst_window": 3600.0}
    quiet = store.alert_context(alert, T0, StormSettings(burst_threshold=10, **windows))
    burst = store.alert_context(alert, T0, StormSettings(burst_threshold=3, **windows))
    store.close()
    assert (quiet.burst_alerts, quiet.new_alerts_global) == (3, 0)
    assert (burst.burst_alerts, burst.new_alerts_global) == (3, 3)


async def test_a_claimed_batch_is_recorded_in_slices_that_delivery_can_overtake(
        tmp_path: Path) -> None:
    """`process_staged` records a claimed batch APPLY_SLICE messages per transaction, telling
    delivery after each one, so a settlement waits for one slice, not for the whole batch."""
    pipeline, store = parts(tmp_path)
    n = APPLY_SLICE * 2 + 7
    store.stage_many([RawMessage(zabbix(100 + i, i), "pipe", None, T0 - 100 + i)
                      for i in range(n)])
    astore = AsyncStore(store)

    class InProcess:
        def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
            return [pipeline.evaluate(r.raw, message_ref=r.id) for r in rows]

    recorded: list[int] = []  # messages decided each time delivery is told

    def applied() -> None:  # on the loop, between two store calls of process_staged
        recorded.append(store.scalar("SELECT count(*) FROM messages WHERE state != 'staged'"
                                     " AND state != 'processing'"))

    try:
        current = SimpleNamespace(pipeline=pipeline, evaluator=InProcess())
        done = await process_staged(astore, lambda: current,  # type: ignore[arg-type, return-value]
                                    "w",
                                    applied=applied)
    finally:
        astore.close()
    assert done == n
    assert recorded == [APPLY_SLICE, 2 * APPLY_SLICE, n]
