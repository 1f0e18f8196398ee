"""Every message ends in exactly one recorded outcome with a reason, whatever it is.

The 116 real-world messages of ../shared/corpus go through the whole pipeline (parse,
classify, decide, deliver to the simulator); the bundled samples are checked for the events of
each outcome; a secret from the config never shows in events, logs or the dashboard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.daemon import Bridge
from bridge.models import Outcome, RawMessage
from tests.helpers import ROOT, SAMPLES, write_config

CORPUS = ROOT.parent / "shared" / "corpus" / "zammad-mail"
OUTCOMES = {o.value for o in Outcome}


async def run_all(config: Path, raws: list[bytes]) -> Bridge:
    bridge = Bridge(load_settings(config))
    await bridge.stage([RawMessage(raw, "pipe", None, 1_700_000_000.0 + i)
                        for i, raw in enumerate(raws)])
    await bridge.run_once()
    return bridge


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not beside the checkout")
async def test_every_corpus_message_gets_exactly_one_outcome(tmp_path, psa_sim, smtp_sink):
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)
    files = sorted(CORPUS.glob("*.box"))
    assert len(files) >= 100
    bridge = await run_all(config, [f.read_bytes() for f in files])
    try:
        rows = bridge.sync_store.query("SELECT id, state, outcome, reason FROM messages")
        distinct = {r["id"] for r in rows}
        assert len(rows) == len(distinct) >= len(files) - 2  # byte-identical files dedupe
        for r in rows:
            assert r["state"] == "done", r
            assert r["outcome"] in OUTCOMES and r["reason"], r
        internal = [r for r in rows if "internal error" in (r["reason"] or "")]
        assert internal == []  # bad input has its own outcome; an exception is a bug
    finally:
        await bridge.close()


async def test_each_sample_outcome_has_its_events(tmp_path, psa_sim, smtp_sink):
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)
    bridge = await run_all(config, [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))])
    try:
        s = bridge.sync_store
        rows = s.query("SELECT id, outcome FROM messages ORDER BY id")
        seen = {r["outcome"] for r in rows}
        assert {"created", "appended", "resolved", "skipped", "unmatched", "regular",
                "rejected", "failed"} <= seen
        for r in rows:
            kinds = [e["kind"] for e in s.query(
                "SELECT kind FROM events WHERE message_ref=? ORDER BY id", [r["id"]])]
            assert kinds[:3] == ["staged", "classified", "decided"], (r, kinds)
            if r["outcome"] in ("created", "appended", "resolved", "failed"):
                assert "queued" in kinds and "sent" in kinds and "outcome" in kinds, kinds
            if r["outcome"] in ("skipped", "unmatched"):
                assert "queued" in kinds and "mailed" in kinds, kinds
    finally:
        await bridge.close()


async def test_a_config_secret_never_reaches_events_logs_or_pages(tmp_path, psa_sim, caplog):
    secret = "s3cr3t-ATES-pw-4711"
    config = write_config(tmp_path, psa_sim, extra=f'\n[ates.password]\nenv = "MB_TEST_PW"\n')
    import os

    os.environ["MB_TEST_PW"] = secret
    try:
        raw = (SAMPLES / "12-datto-ates-alert.eml").read_bytes()
        leaky = raw.replace(b"Disk usage", f"PW name={secret} Disk usage".encode(), 1)
        caplog.set_level(logging.DEBUG)
        bridge = await run_all(config, [leaky, raw.replace(b"Message-ID: <", b"Message-ID: <x")])
        try:
            from bridge.operator import views

            events = bridge.sync_store.query("SELECT detail FROM events")
            assert events and all(secret not in (e["detail"] or "") for e in events)
            assert secret not in caplog.text
            shown = views.quarantine_show(bridge.sync_store, 1, redactor=bridge.redactor)
            assert secret not in repr(shown)
        finally:
            await bridge.close()
    finally:
        del os.environ["MB_TEST_PW"]


async def test_refused_credentials_mail_the_admin_once(tmp_path, psa_sim, smtp_sink):
    from bridge.operator.admin import check_and_alert

    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)
    text = config.read_text().replace(
        'internal_address = "support@msp.example"',
        'internal_address = "support@msp.example"\nadmin_address = "noc@msp.example"')
    config.write_text(text)
    bridge = await run_all(config, [])
    try:
        s = bridge.sync_store
        first = check_and_alert(bridge.settings, bridge.runtime, s, "HTTP 401: bad secret")
        again = check_and_alert(bridge.settings, bridge.runtime, s, "HTTP 401: bad secret")
        assert first == ["psa-auth"] and again == []  # rate-limited
        assert any(a.kind == "psa-auth" for a in bridge.runtime.admin_alerts)
        await bridge.delivery.drain()
        [mail] = smtp_sink.wait_for(1)
        assert list(mail.rcpt_tos) == ["noc@msp.example"] and b"credentials" in mail.content
        check_and_alert(bridge.settings, bridge.runtime, s, None)
        assert not any(a.kind == "psa-auth" for a in bridge.runtime.admin_alerts)
    finally:
        await bridge.close()
