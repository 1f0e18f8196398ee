"""The store methods that replaced SQL in views, metrics, status, reconcile, admin and audit
(bridge/store/operator.py, bridge/store/maintenance.py): their results, and that each write
commits together with its event or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.decide.core import decide
from bridge.models import Alert, OutboxItem, RawMessage
from bridge.store import Store
from bridge.store.readonly import RawReader, schema_version_at

RAW = b"Message-ID: <m1@x>\r\nSubject: disk full\r\nFrom: a@b\r\n\r\nbody\r\n"


def _stage(s: Store, n: int, arrived: float) -> int:
    result = s.stage(RawMessage(RAW.replace(b"m1", b"m%d" % n), "pipe", None, arrived))
    return int(result.id)


def _open_confirmed(s: Store, key: str, cid: str) -> None:
    mid = _stage(s, abs(hash(key)) % 1000, 1.0)
    with s.write():
        d = decide(Alert(key, "open", "ACME-001", "servers", "Host Down", "t", "s"),
                   s.open_correlation(key), new_id=lambda: cid)
        s.apply_decision(mid, d, arrived_at=1.0)
    s.confirm_correlation(cid, None)


def _kinds(s: Store) -> list[str]:
    return [e["kind"] for e in s.event_rows(limit=1000)]


def test_counts_and_rows_for_the_operator(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", clock=lambda: 5000.0)
    ids = [_stage(s, i, float(i)) for i in range(1, 5)]
    s.finish_message(ids[0], "failed", "boom")
    s.finish_message(ids[1], "quarantined", "odd")
    s.finish_message(ids[2], "regular", "fine")
    assert s.outcome_counts() == {"failed": 1, "quarantined": 1, "regular": 1}
    assert s.outcome_counts(since=6000.0) == {}
    assert s.unfinished_message_counts() == {"staged": 1}
    assert s.failures_since(4000.0) == 1 and s.failures_since(6000.0) == 0
    assert s.stuck_staged_count(6000.0) == 1 and s.stuck_staged_count(4000.0) == 0
    assert s.oldest_unsent_at() is None and s.dead_outbox_count() == 0
    assert [r["id"] for r in s.message_rows(10)] == ids[::-1]
    bad = s.message_rows(10, outcomes=("failed", "quarantined", "rejected"))
    assert [r["id"] for r in bad] == [ids[1], ids[0]]
    [one] = s.message_rows(1, message_ref=ids[2], head_bytes=9)
    assert one["head"] == RAW[:9].replace(b"m1", b"m3") and one["pruned"] == 0
    assert [r["id"] for r in s.messages_in_arrival_order()] == ids
    assert s.message_id_header(ids[3]) == "<m4@x>" and s.message_id_header(999) is None
    assert s.outcomes_by_hour(3600.0) == [("failed", 0, 1), ("quarantined", 0, 1),
                                          ("regular", 0, 1)]
    events = s.event_rows(message_ref=ids[0], outcome="failed", limit=10)
    assert events and all(e["message_ref"] == ids[0] for e in events)
    assert events == sorted(events, key=lambda e: -e["id"])  # newest first


def test_reconciled_close_and_its_event_commit_together(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "db")
    _open_confirmed(s, "k1", "c1")
    assert [r["correlation_id"] for r in s.confirmed_open_correlations()] == ["c1"]
    assert s.correlation_ids() == {"c1"} and s.open_ticket_count() == 1

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(s, "_event", broken)
        with pytest.raises(OSError):
            s.close_reconciled("c1", "k1", "gone at the PSA")
    assert s.open_ticket_count() == 1  # no close without its event
    s.close_reconciled("c1", "k1", "gone at the PSA")
    assert s.open_ticket_count() == 0 and s.correlation_ids() == {"c1"}
    [event] = s.event_rows(alert_key="k1", limit=1)
    assert event["kind"] == "reconciled" and "gone at the PSA" in event["detail"]


def test_admin_alert_marker_event_and_mail_commit_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "db")
    mail = OutboxItem("smtp", "admin:disk", {"type": "admin", "to": "a@b"}, "admin")

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(s, "enqueue", broken)
        with pytest.raises(OSError):
            s.record_admin_alert("disk", "low", 100.0, mail)
    # Not marked as mailed, so the next check tries again.
    assert s.get_meta("admin_alert:disk") is None and "admin-alert" not in _kinds(s)
    s.record_admin_alert("disk", "low", 100.0, mail)
    assert s.get_meta("admin_alert:disk") == "100.0"
    assert s.outbox_state_counts() == {"pending": 1}
    assert _kinds(s)[:2] == ["queued", "admin-alert"]


def test_savepoint_undoes_only_its_block(tmp_path: Path) -> None:
    s = Store(tmp_path / "db")
    with s.write():
        s.set_meta("kept", "1")
        with pytest.raises(RuntimeError):
            with s.savepoint():
                s.set_meta("undone", "1")
                raise RuntimeError("bug")
        with s.savepoint():
            s.set_meta("after", "1")
    assert (s.get_meta("kept"), s.get_meta("undone"), s.get_meta("after")) == ("1", None, "1")


def test_prune_in_batches_records_one_event(tmp_path: Path) -> None:
    now = [0.0]
    s = Store(tmp_path / "db", clock=lambda: now[0])
    for i in range(5):
        s.event("old", None, None, None, n=i)
    now[0] = 1000.0
    assert s.prune_before(500.0, 500.0, batch=2, retention_days=1) == {
        "raw_cleared": 0, "events_deleted": 5, "outbox_deleted": 0, "correlations_deleted": 0}
    [event] = s.event_rows(limit=10)
    assert event["kind"] == "pruned" and '"events_deleted": 5' in event["detail"]
    assert s.prune_before(500.0, 500.0) == dict.fromkeys(
        ["raw_cleared", "events_deleted", "outbox_deleted", "correlations_deleted"], 0)
    assert _kinds(s) == ["pruned"]  # nothing went: no second event


def test_read_only_probes(tmp_path: Path) -> None:
    s = Store(tmp_path / "db")
    mid = _stage(s, 1, 1.0)
    version = s.schema_version()
    s.close()
    assert schema_version_at(tmp_path / "db") == version > 0
    reader = RawReader()
    assert reader.read(str(tmp_path / "db"), mid) == RAW
    assert reader.read(str(tmp_path / "db"), 999) == b""
