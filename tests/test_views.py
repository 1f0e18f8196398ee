"""The audit views over a real store filled through the Store API (stage, decide, deliver)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.models import Decision, OutboxItem, Outcome, RawMessage
from bridge.operator import views
from bridge.operator.audit import Redactor, prune
from bridge.operator.status import RuntimeStatus, health
from bridge.store import Store

SECRET = "Tr0ub4dor&3-test-secret"  # as if it were the PSA clientSecret in the config
ATES_PW = "zzZ3zZ/2Z1ZzzZZZ0zoZ9z=="  # not in the config: hidden by its shape
XML_PW = "xml-api-hunter2"


def leaks(text: str) -> list[str]:
    """Which test secrets (or a telling piece of one) appear in `text`."""
    pieces = (SECRET, "Tr0ub4dor", "3-test-secret", ATES_PW, "zzZ3zZ", XML_PW, "hunter2")
    return [p for p in pieces if p in text]


def raw_mail(subject: str, body: str = "body", sender: str = "monitor@rmm.example",
             mid: str | None = None) -> bytes:
    mid = mid or f"<{abs(hash((subject, body)))}@rmm.example>"
    return (f"From: RMM <{sender}>\r\nTo: alerts@msp.example\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


@dataclass
class Filled:
    store: Store
    redactor: Redactor
    ids: dict[str, int]


def fill(path: Path, now: float | None = None) -> Filled:
    """A store holding one message for most outcomes, with the events the pipeline writes.

    The test secret is planted in a subject, a raw body, an event detail and an outbox error."""
    now = time.time() if now is None else now
    red = Redactor([SECRET])
    store = Store(path)
    store.redact = red.redact  # type: ignore[assignment]  # what the daemon does
    ids: dict[str, int] = {}

    def stage(name: str, raw: bytes, arrived: float) -> int:
        ids[name] = store.stage(RawMessage(raw, "imap:inbox", f"1:{len(ids) + 1}", arrived)).id
        return ids[name]

    def decide(mid: int, decision: Decision, arrived: float, rule: str | None) -> None:
        with store.write():
            store.apply_decision(mid, decision, arrived_at=arrived, rule=rule,
                                 alert_meta={"account_id": "ACME-001", "title": "Backup failed"})

    def deliver(mid: int, outcome: str, reason: str, **sent: object) -> None:
        row = store.query("SELECT id, ordering_key FROM outbox WHERE message_ref=?", (mid,))[0]
        store.event("sent", mid, row["ordering_key"], outcome, outbox=row["id"], **sent)
        store.outbox_done(row["id"], {"outcome": outcome})
        store.set_outcome(mid, outcome, reason)

    key = "ates:Veeam:8932"
    payload = {"title": "Backup failed on SRV01", "account_id": "ACME-001",
               "summary": "job failed", "alert_type": "Backup Failed", "product_group": "backup"}
    # created: a new ticket; the PSA call is recorded with its (redacted) request summary.
    mid = stage("created", raw_mail("Backup failed on SRV01"), now - 7200)
    decide(mid, Decision("new alert", alert_key=key, open_correlation="corr-1",
                         outbox=(OutboxItem("psa", key, payload, "OPEN", "corr-1"),)),
           now - 7200, "veeam.toml:backup-failed")
    deliver(mid, "created", "ticket corr-1 created", duration=0.12, attempt=1,
            request={"clientSecret": SECRET, "organizationOemToken": "oem-tok-123"})
    # appended: the same alert again, the secret in its subject.
    mid = stage("appended", raw_mail(f"Backup failed on SRV01 (password {SECRET})"), now - 600)
    decide(mid, Decision("open ticket exists", alert_key=key,
                         outbox=(OutboxItem("psa", key, {**payload, "incidentStatus": "UPDATE"},
                                            "UPDATE", "corr-1"),)), now - 600,
           "veeam.toml:backup-failed")
    deliver(mid, "appended", "ticket corr-1 updated", duration=0.08, attempt=1)
    # skipped: final at once, a forward queued.
    mid = stage("skipped", raw_mail("Weekly report", sender="reports@rmm.example"), now - 300)
    decide(mid, Decision("skip rule 'weekly report'", outcome=Outcome.SKIPPED,
                         outbox=(OutboxItem("smtp", f"msg:{mid}", {"to": "support@msp.example"},
                                            "forward"),)), now - 300, "skip.toml:weekly")
    # quarantined: the raw body holds an ATES PW, an XML password and the config secret.
    body = (f"<Autotask>\n<ID name=\"acmemsp.com\"/>\n<PW name=\"{ATES_PW}\"/>\n</Autotask>\n"
            f"<Transaction><Password>{XML_PW}</Password></Transaction>\nsecret {SECRET}")
    mid = stage("quarantined", raw_mail("Broken alert", body), now - 200)
    store.finish_message(mid, "quarantined", "could not be parsed: bad MIME")
    # failed: a 404 from the PSA, the outbox row dead with an error naming the secret.
    mid = stage("failed", raw_mail("Disk full on SRV02"), now - 100)
    decide(mid, Decision("new alert", alert_key="ates:Veeam:9000", open_correlation="corr-2",
                         outbox=(OutboxItem("psa", "ates:Veeam:9000", payload, "OPEN",
                                            "corr-2"),)), now - 100, "veeam.toml:disk")
    row = store.scalar("SELECT id FROM outbox WHERE message_ref=?", (mid,))
    store.outbox_dead(row, f"404 OemNotFoundException (sent clientSecret={SECRET})")
    store.set_outcome(mid, "failed", "404 from the PSA: account not mapped")
    # pending: queued, waiting for the PSA.
    mid = stage("pending", raw_mail("CPU high on SRV03"), now - 50)
    decide(mid, Decision("new alert", alert_key="ates:Veeam:9100", open_correlation="corr-3",
                         outbox=(OutboxItem("psa", "ates:Veeam:9100", payload, "OPEN",
                                            "corr-3"),)), now - 50, "veeam.toml:cpu")
    # staged: not processed yet.
    stage("staged", raw_mail("Just arrived"), now - 10)
    return Filled(store, red, ids)


def test_status_view_counts_backlog_outbox_failures_and_outcomes(tmp_path):
    f = fill(tmp_path / "db")
    rt = RuntimeStatus(ruleset_version="r-42")
    rt.source_connected("imap:inbox", idle=True)
    rt.source_polled("imap:inbox", 1234.0)
    st = views.status_view(f.store, rt)
    assert st["backlog"] == 1
    assert st["messages_by_state"]["pending"] == 1
    # pending: the skipped message's forward and the waiting OPEN.
    assert st["outbox"] == {"pending": 2, "in_flight": 0, "dead": 1, "acknowledged": 0,
                            "dropped": 0, "done": 2}
    assert st["failures_last_hour"] == 2  # the failed message and its dead row
    assert st["outcomes_24h"] == {"created": 1, "appended": 1, "skipped": 1, "quarantined": 1,
                                  "failed": 1}
    assert st["open_tickets"] == 3
    assert st["ruleset_version"] == "r-42" and st["psa_auth"] == "unknown"
    assert st["connected_sources"] == 1 and st["last_poll"] == 1234.0
    assert not st["healthy"] and any("dead outbox" in r for r in st["reasons"])
    text = views.format_status(st)
    assert "DEGRADED" in text and "1 dead" in text and "source imap:inbox: connected" in text
    json.dumps(st)  # --json must work


def test_events_view_filters(tmp_path):
    f = fill(tmp_path / "db")
    created = f.ids["created"]
    mine = views.events_view(f.store, message=created)
    assert [e["kind"] for e in mine] == ["staged", "decided", "queued", "sent", "outcome"]
    assert all(e["message_ref"] == created for e in mine)
    by_key = views.events_view(f.store, key="ates:Veeam:8932")
    assert {e["message_ref"] for e in by_key} == {created, f.ids["appended"]}
    failed = views.events_view(f.store, outcome="failed")
    assert {e["message_ref"] for e in failed} == {f.ids["failed"]}
    assert len(failed) > 1  # every event of the failed message, not only those marked failed
    assert views.events_view(f.store, since=time.time() + 60) == []
    assert len(views.events_view(f.store, since="1h")) == len(views.events_view(f.store))
    assert len(views.events_view(f.store, limit=3)) == 3
    sent = [e for e in mine if e["kind"] == "sent"][0]
    assert sent["detail"]["duration"] == 0.12
    assert sent["detail"]["request"]["clientSecret"] == "[redacted]"
    assert sent["detail"]["request"]["organizationOemToken"] == "[redacted]"
    assert leaks(json.dumps(views.events_view(f.store))) == []
    failures = views.failures_view(f.store, redactor=f.redactor)
    assert failures["dead_outbox"][0]["last_error"] == \
        "404 OemNotFoundException (sent clientSecret=[redacted])"


def test_parse_since():
    assert views.parse_since("90s", now=1000.0) == 910.0
    assert views.parse_since("2h", now=10000.0) == 2800.0
    assert views.parse_since("3600", now=10000.0) == 6400.0
    assert views.parse_since(1700000000.0) == 1700000000.0
    assert views.parse_since("2026-11-23T10:00:00+00:00") == 1795428000.0
    assert views.parse_since(None) is None


def test_tickets_view_lists_open_correlations_with_age_and_occurrences(tmp_path):
    f = fill(tmp_path / "db")
    tickets = {t["correlation_id"]: t for t in views.tickets_view(f.store)}
    assert set(tickets) == {"corr-1", "corr-2", "corr-3"}
    assert tickets["corr-1"]["occurrences"] == 2
    assert 7100 < tickets["corr-1"]["age"] < 7300
    assert tickets["corr-1"]["account_id"] == "ACME-001"
    assert len(views.tickets_view(f.store, limit=1)) == 1


def test_messages_view_reads_subject_and_sender_and_redacts(tmp_path):
    f = fill(tmp_path / "db")
    rows = views.messages_view(f.store, limit=50, redactor=f.redactor)
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == sorted(by_id, reverse=True)
    created = by_id[f.ids["created"]]
    assert created["subject"] == "Backup failed on SRV01"
    assert created["sender"] == "RMM <monitor@rmm.example>"
    assert created["outcome"] == "created" and created["rule"] == "veeam.toml:backup-failed"
    assert by_id[f.ids["staged"]]["state"] == "staged"
    assert leaks(json.dumps(rows)) == []
    assert "[redacted]" in by_id[f.ids["appended"]]["subject"]


def test_headers_are_decoded_and_never_raise():
    raw = (b"Subject: =?utf-8?q?Sauvegarde_=C3=A9chou=C3=A9e?=\r\nFrom: =?bogus?q?x?= <a@b>\r\n"
           b"X-Raw: caf\xc3\xa9\r\n\r\nbody")
    assert views.subject_and_sender(raw) == ("Sauvegarde échouée", "=?bogus?q?x?= <a@b>")
    assert ("X-Raw", "café") in views.read_headers(raw)
    assert views.subject_and_sender(None) == ("", "")
    assert views.subject_and_sender(b"\xff\xfe garbage without headers") == ("", "")


def test_quarantine_list_and_show_never_reveal_passwords(tmp_path):
    f = fill(tmp_path / "db")
    listed = views.quarantine_list(f.store, redactor=f.redactor)
    assert [m["id"] for m in listed] == [f.ids["quarantined"]]
    shown = views.quarantine_show(f.store, f.ids["quarantined"], redactor=f.redactor)
    assert shown["reason"] == "could not be parsed: bad MIME"
    assert ("Subject", "Broken alert") in shown["headers"]
    text = shown["parts"][0]["text"]
    assert "<Autotask>" in text and 'PW name="[redacted]"' in text
    assert "<Password>[redacted]</Password>" in text
    assert leaks(json.dumps(shown)) == []
    assert [e["kind"] for e in shown["events"]] == ["staged", "outcome"]
    assert views.quarantine_show(f.store, 9999) is None


def test_quarantine_show_decodes_base64_parts_before_redacting(tmp_path):
    import base64

    store = Store(tmp_path / "db")
    body = base64.encodebytes(f'<PW name="{ATES_PW}"/>'.encode()).decode()
    raw = (f"Subject: b64\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"
           f"\r\n{body}").encode()
    mid = store.stage(RawMessage(raw, "pipe", None, time.time())).id
    shown = views.quarantine_show(store, mid)
    assert shown["parts"][0]["text"] == '<PW name="[redacted]"/>'
    assert body.strip() not in json.dumps(shown)  # the encoded form is not shown either


def test_alerts_per_hour_buckets_by_outcome(tmp_path):
    f = fill(tmp_path / "db")
    now = time.time()
    chart = views.alerts_per_hour(f.store, hours=24, now=now)
    assert len(chart["hours"]) == 24 and chart["hours"][-1] <= now < chart["hours"][-1] + 3600
    assert set(chart["series"]) == {"created", "appended", "skipped", "quarantined", "failed"}
    assert all(sum(v) == 1 for v in chart["series"].values())
    # Outcomes were recorded just now, so they fall in the last bucket.
    assert chart["series"]["created"][-1] == 1
    old = views.alerts_per_hour(f.store, hours=2, now=now + 3 * 3600)
    assert old["series"] == {}


def test_format_table():
    text = views.format_table([{"id": 1, "name": "a\nb", "x": None},
                               {"id": 22, "name": "y" * 80}], ["id", ("name", "NAME"), "x"],
                              max_width=10)
    lines = text.splitlines()
    assert lines[0].split() == ["id", "NAME", "x"]
    assert lines[2].split() == ["1", "a", "b", "-"]
    assert "yyyyyyyyy…" in lines[3] and len(lines) == 4
    when = time.mktime((2026, 11, 23, 10, 0, 0, 0, 0, -1))
    text = views.format_table([{"at": when, "age": 7200.0, "detail": {"a": 1}}],
                              ["at", "age", "detail"])
    assert re.split(r"\s{2,}", text.splitlines()[2]) == ["2026-11-23 10:00:00", "2h", '{"a": 1}']


def test_prune_drops_old_raw_and_events_and_keeps_outcomes(tmp_path):
    f = fill(tmp_path / "db")
    store = f.store
    store.close_correlation("corr-1")
    later = time.time() + 31 * 86400
    counts = prune(store, retention_days=30, correlation_retention_days=30, now=later)
    # Raw bytes go only for finished messages; the staged and pending ones keep theirs.
    assert counts["raw_cleared"] == 5
    kept = {r["id"] for r in store.query("SELECT message_ref AS id FROM raw_messages")}
    assert kept == {f.ids["staged"], f.ids["pending"]}
    assert store.scalar("SELECT count(*) FROM messages") == 7
    assert store.scalar("SELECT outcome FROM messages WHERE id=?", (f.ids["created"],)) == "created"
    assert counts["events_deleted"] > 0
    assert [e["kind"] for e in views.events_view(store)] == ["pruned"]
    assert counts["outbox_deleted"] == 2  # done rows only; pending and dead stay
    assert store.scalar("SELECT count(*) FROM outbox") == 3
    assert counts["correlations_deleted"] == 1
    assert {t["correlation_id"] for t in views.tickets_view(store)} == {"corr-2", "corr-3"}
    # Views cope with pruned messages.
    row = [m for m in views.messages_view(store) if m["id"] == f.ids["created"]][0]
    assert row["pruned"] and row["subject"] == "" and row["outcome"] == "created"
    again = prune(store, 30, now=later)  # nothing left to do (but the "pruned" event itself)
    assert again["raw_cleared"] == again["outbox_deleted"] == again["correlations_deleted"] == 0


def test_prune_keeps_recent_material(tmp_path):
    f = fill(tmp_path / "db")
    counts = prune(f.store, retention_days=30)
    assert counts == {"raw_cleared": 0, "events_deleted": 0, "outbox_deleted": 0,
                      "correlations_deleted": 0}


def test_runtime_status_reasons_and_health(tmp_path):
    from bridge.operator import metrics
    from bridge.operator.status import CONNECT_GRACE

    store = Store(tmp_path / "db")
    rt = RuntimeStatus()
    rt.source("imap:inbox")  # configured, still connecting
    assert health(rt, store) == (True, [])
    ok, reasons = health(rt, store, now=rt.started_at + CONNECT_GRACE + 1)
    assert not ok and reasons == ["source imap:inbox not connected"]
    rt.source_connected("imap:inbox")
    before = metrics.RULE_RELOAD_FAILURES._value.get()
    rt.rules_reload_failed("rules/a.toml:3: unknown key 'sender'")
    assert metrics.RULE_RELOAD_FAILURES._value.get() == before + 1
    rt.raise_alert("disk", "store at 95% of its disk limit")
    first = rt.raise_alert("disk", "store at 97% of its disk limit")  # same kind: updated
    rt.set_degraded("smtp", "SMTP server refuses mail")
    ok, reasons = health(rt, store)
    assert not ok and reasons == [
        "rule reload failed, previous rule set in force: rules/a.toml:3: unknown key 'sender'",
        "disk: store at 97% of its disk limit", "SMTP server refuses mail"]
    assert len(rt.admin_alerts) == 1 and rt.admin_alerts[0] is first
    rt.rules_reloaded("v2")
    rt.clear_alert("disk")
    rt.set_degraded("smtp", None)
    assert health(rt, store) == (True, [])
    st = views.status_view(store, rt)
    assert st["ruleset_version"] == "v2" and st["healthy"]
    json.dumps(rt.to_dict())


def test_stuck_staging_and_old_outbox_rows_degrade(tmp_path):
    store = Store(tmp_path / "db")
    mid = store.stage(RawMessage(raw_mail("x"), "pipe", None, 1.0)).id
    store.enqueue(OutboxItem("psa", "k", {"title": "t"}, "OPEN", "c"), mid)
    ok, reasons = health(None, store, now=time.time() + 3600)
    assert not ok
    assert reasons == ["1 message(s) staged for over 10 min and not processed",
                       "1 outbox row(s) waiting, the oldest for 60 min"]


def test_source_events_drive_the_runtime_status():
    rt = RuntimeStatus()
    rt.on_source_event("imap:inbox", "error", {"error": "AUTHENTICATE failed", "auth": True})
    ok, reasons = health(rt, None)
    assert not ok and "source imap:inbox not connected" in reasons[0]
    assert "imap-login:imap:inbox: login to imap:inbox fails: AUTHENTICATE failed" in reasons
    rt.on_source_event("imap:inbox", "connected", {"host": "mail.example"})
    rt.on_source_event("imap:inbox", "idle", {"seconds": 1500})
    src = rt.sources["imap:inbox"]
    assert src.connected and src.idle and src.last_poll and src.last_error is None
    assert health(rt, None) == (True, [])
    rt.on_source_event("imap:inbox", "disconnected", {"graceful": False})
    assert not rt.sources["imap:inbox"].connected and not rt.sources["imap:inbox"].idle


def test_cli_status_reads_what_the_daemon_saved(tmp_path):
    from bridge.operator.status import load_runtime, save_runtime

    store = Store(tmp_path / "db")
    assert "sources" not in views.status_view(store)  # no daemon ever ran
    assert views.status_view(store)["psa_auth"] == "unknown"  # and no PSA call either
    rt = RuntimeStatus(ruleset_version="v9")
    rt.on_source_event("imap:inbox", "idle", {})
    rt.psa_auth_refused("HTTP 401: invalid client")
    rt.raise_alert("psa-auth", "PSA refuses the credentials")
    save_runtime(store, rt)
    st = views.status_view(store)  # as `mailbridge status` sees it, from another process
    assert st["ruleset_version"] == "v9" and st["psa_auth"] == "refused"
    assert st["sources"][0]["name"] == "imap:inbox" and st["sources"][0]["idle"]
    assert st["admin_alerts"][0]["kind"] == "psa-auth"
    assert any("PSA refused the credentials" in r for r in st["reasons"])
    stale = load_runtime(store, now=time.time() + 600)
    assert stale is not None and stale.sources == {} and stale.ruleset_version == "v9"
    assert health(stale, None)[1] == ["the daemon is not running (last seen 10 min ago)"]


def test_quarantine_show_cuts_long_text_after_redacting(tmp_path):
    store = Store(tmp_path / "db")
    raw = raw_mail("long", "x" * 95 + SECRET + "y" * 500)
    mid = store.stage(RawMessage(raw, "pipe", None, time.time())).id
    part = views.quarantine_show(store, mid, Redactor([SECRET]), max_chars=100)["parts"][0]
    assert part["truncated"] and len(part["text"]) == 100
    assert part["text"] == "x" * 95 + "[reda"  # not the first characters of the secret
