"""The store: durable staging with de-duplication, atomic claims, ordered outbox."""

import threading

from bridge.decide.core import decide
from bridge.models import Alert, Decision, OutboxItem, Outcome, RawMessage
from bridge.store import Store
from bridge.store.db import message_id_of

RAW = b"Message-ID: <m1@example.org>\r\nSubject: x\r\n\r\nbody\r\n"


def test_message_id_read_from_the_header_block_only():
    assert message_id_of(RAW) == "<m1@example.org>"
    assert message_id_of(b"Subject: a\n\nMessage-ID: <body@x>\n") is None
    assert message_id_of(b"Message-ID:\n <folded@x>\n\nb") == "<folded@x>"


def test_same_message_twice_is_staged_once(tmp_path):
    s = Store(tmp_path / "db")
    first = s.stage(RawMessage(RAW, "pipe", None, 1.0))
    again = s.stage(RawMessage(RAW, "pipe", None, 2.0))
    other_source = s.stage(RawMessage(RAW, "imap:a", "7:1", 3.0))  # UIDVALIDITY reset etc.
    assert not first.duplicate and again.duplicate and other_source.duplicate
    assert again.id == first.id == other_source.id
    assert s.scalar("SELECT count(*) FROM messages") == 1


def test_same_source_identity_is_a_duplicate_even_if_bytes_differ(tmp_path):
    s = Store(tmp_path / "db")
    s.stage(RawMessage(RAW, "imap:a", "7:1", 1.0))
    assert s.stage(RawMessage(RAW + b"x", "imap:a", "7:1", 1.0)).duplicate


def test_claims_are_exclusive_across_connections(tmp_path):
    path = tmp_path / "db"
    s = Store(path)
    for i in range(50):
        s.stage(RawMessage(RAW.replace(b"m1", b"m%d" % i), "pipe", None, float(i)))
    got: dict[str, list[int]] = {}

    def worker(name):
        store = Store(path)
        ids = []
        while rows := store.claim_staged(name, limit=3):
            ids += [r.id for r in rows]
        got[name] = ids

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    all_ids = sorted(i for ids in got.values() for i in ids)
    assert all_ids == list(range(1, 51))


def _alert(status):
    return Alert("k1", status, "ACME-001", "servers", "Host Down", "t", "s")


def test_outbox_hands_out_only_the_head_of_each_key(tmp_path):
    s = Store(tmp_path / "db")
    ids = [s.stage(RawMessage(RAW.replace(b"m1", b"m%d" % i), "pipe", None, float(i))).id
           for i in range(3)]
    for mid, status in zip(ids, ["open", "open", "resolved"]):
        with s.write():
            d = decide(_alert(status), s.open_correlation("k1"), new_id=lambda: "c1")
            s.apply_decision(mid, d, arrived_at=float(mid))
    s.enqueue(OutboxItem("psa", "k2", {}, "OPEN", "c2"), None)
    rows = s.claim_outbox(now=1e12, limit=10)
    assert sorted((r.ordering_key, r.action) for r in rows) == [("k1", "OPEN"), ("k2", "OPEN")]
    assert s.claim_outbox(now=1e12, limit=10) == []  # the UPDATE waits for its OPEN
    k1_open = next(r for r in rows if r.ordering_key == "k1")
    s.outbox_retry(k1_open.id, next_at=0.0, error="503")
    again = s.claim_outbox(now=1e12, limit=10)
    assert [(r.ordering_key, r.action) for r in again] == [("k1", "OPEN")]  # retried first
    s.outbox_done(again[0].id, {})
    assert [r.action for r in s.claim_outbox(now=1e12, limit=10)] == ["UPDATE"]


def test_in_flight_rows_are_reclaimed_after_a_crash(tmp_path):
    s = Store(tmp_path / "db")
    s.enqueue(OutboxItem("psa", "k", {}, "OPEN", "c"), None)
    [row] = s.claim_outbox(now=1e12, limit=5)
    crashed_and_restarted = Store(tmp_path / "db")
    assert crashed_and_restarted.claim_outbox(now=1e12, limit=5) == []
    assert crashed_and_restarted.reclaim_in_flight() == 1
    [again] = crashed_and_restarted.claim_outbox(now=1e12, limit=5)
    assert again.id == row.id and again.correlation_id == "c" and again.attempts == 2


def test_decision_and_outbox_commit_together(tmp_path):
    s = Store(tmp_path / "db")
    mid = s.stage(RawMessage(RAW, "pipe", None, 1.0)).id
    try:
        with s.write():
            s.apply_decision(mid, decide(_alert("open"), None, new_id=lambda: "c"),
                             arrived_at=1.0)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert s.scalar("SELECT count(*) FROM outbox") == 0
    assert s.scalar("SELECT count(*) FROM correlations") == 0


def test_final_outcome_recorded(tmp_path):
    s = Store(tmp_path / "db")
    mid = s.stage(RawMessage(RAW, "pipe", None, 1.0)).id
    with s.write():
        s.apply_decision(mid, Decision(reason="not automated", outcome=Outcome.REGULAR),
                         arrived_at=1.0)
    row = s.query("SELECT state, outcome, reason FROM messages")[0]
    assert row == {"state": "done", "outcome": "regular", "reason": "not automated"}


def test_backup_is_a_usable_copy(tmp_path):
    s = Store(tmp_path / "db")
    s.stage(RawMessage(RAW, "pipe", None, 1.0))
    s.backup(tmp_path / "copy.db")
    assert Store(tmp_path / "copy.db").scalar("SELECT count(*) FROM messages") == 1


def test_big_messages_round_trip_through_blob_io(tmp_path):
    s = Store(tmp_path / "db")
    big = b"Message-ID: <big@x>\r\n\r\n" + bytes(range(256)) * 20_000  # ~5 MB, every byte value
    small = RAW
    ids = [s.stage(RawMessage(big, "pipe", None, 1.0)).id,
           s.stage(RawMessage(small, "pipe", None, 2.0)).id]
    rows = s.claim_staged("w", limit=5)
    assert [r.raw for r in rows] == [big, small]
    assert s.message_raw(ids[0]) == big
