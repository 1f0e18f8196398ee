"""Redaction of secrets and credential shapes, and the log formats that go through it."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from bridge.config import LogSettings, settings_from_dict
from bridge.models import RawMessage
from bridge.operator.audit import MessageLog, Redactor, setup_logging
from bridge.store import Store
from tests.test_views import ATES_PW, SECRET, XML_PW, leaks

R = Redactor([SECRET, 'q"uo<te>é-secret'])


@pytest.mark.parametrize("text, hidden", [
    (f"login with {SECRET} failed", SECRET),
    (f"clientSecret={SECRET}", "3-test-secret"),  # a shape must not eat half of a secret
    (json.dumps({"clientSecret": "abc123", "title": "x"}), "abc123"),
    (json.dumps({"organizationOemToken": "oem-tok-456"}), "oem-tok-456"),
    (json.dumps(json.dumps({"clientSecret": "nested-999"})), "nested-999"),
    (repr({"client_secret": "py-repr-1"}), "py-repr-1"),
    (f'<Autotask>\n<PW name="{ATES_PW}"/>\n</Autotask>', ATES_PW),
    (f"&lt;PW name=&quot;{ATES_PW}&quot;/&gt;", ATES_PW),            # HTML-escaped body
    ('<PW name=3D"zzZ3zZ/2Z1ZzzZZZ0zoZ9z=3D=3D"/>', "zzZ3zZ/2Z1Zzz"),  # quoted-printable
    (f"<Transaction><Password>{XML_PW}</Password></Transaction>", XML_PW),
    (f"&lt;ns:password&gt;{XML_PW}&lt;/ns:password&gt;", XML_PW),
    ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi"),
    ("{'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
    ("user=bob&password=hunter2&x=1", "hunter2"),
    ("imaps://bob:pa55word@mail.example/", "pa55word"),
    ("AUTHENTICATE XOAUTH2 dXNlcj1ib2IBYXV0aD1CZWFyZXIgeHl6AQE=", "dXNlcj1ib2IB"),
    (json.dumps({"s": 'q"uo<te>é-secret'}), "uo<te"),                 # JSON-escaped secret
    (json.dumps({"s": 'q"uo<te>é-secret'}, ensure_ascii=False), "uo<te"),
    ("q&quot;uo&lt;te&gt;é-secret", "uo&lt;te"),                      # HTML-escaped secret
    (f"{SECRET.upper()}", SECRET.upper()),                             # case does not help
])
def test_redacts(text, hidden):
    out = R.redact(text)
    assert hidden not in out and "[redacted]" in out


def test_keeps_what_is_not_a_secret():
    for text in ("wrong XML password: expected one", "alert for site ACME, device SRV01",
                 '{"reason": "created", "rule": "veeam.toml:backup"}', "",
                 "mail from bob@example.com about http://example.com/"):
        assert R.redact(text) == text
    # What precedes the value stays, so the admin sees *what* was hidden.
    assert R.redact('<PW name="x1y2z3"/>') == '<PW name="[redacted]"/>'
    assert R.redact('{"clientSecret": "abc"}') == '{"clientSecret": "[redacted]"}'


def test_update_adds_secrets_and_keeps_the_old_ones():
    r = Redactor(["old-secret-1"])
    r.update(["new-secret-2"])
    assert r.redact("old-secret-1 new-secret-2") == "[redacted] [redacted]"


def test_redact_obj_walks_json_values():
    assert R.redact_obj({"a": [SECRET, 1, {"b": f"x {SECRET}"}]}) == \
        {"a": ["[redacted]", 1, {"b": "x [redacted]"}]}


def test_config_secrets_feed_the_redactor():
    settings = settings_from_dict({"psa": {"client_secret": SECRET,
                                           "organization_oem_token": "oem-xyz-token"},
                                   "http": {"vendor_api_key": "vendor-key-77"}})
    r = Redactor(settings.secrets())
    assert r.redact(f"{SECRET} oem-xyz-token vendor-key-77").count("[redacted]") == 3


def test_store_events_pass_through_the_redactor(tmp_path):
    store = Store(tmp_path / "db")
    store.redact = R.redact  # type: ignore[assignment]
    mid = store.stage(RawMessage(b"Subject: s\r\n\r\nb", "pipe", None, 1.0)).id
    store.event("sent", mid, "k", "created", request={"clientSecret": "abc", "note": SECRET},
                response=f'<PW name="{ATES_PW}"/>')
    details = "".join(r[0] or "" for r in store.conn.execute("SELECT detail FROM events"))
    assert leaks(details) == [] and '"abc"' not in details
    assert json.loads(store.scalar("SELECT detail FROM events WHERE kind='sent'"))["request"] \
        == {"clientSecret": "[redacted]", "note": "[redacted]"}


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_everything(log: logging.Logger) -> None:
    log.info("connecting with %s", SECRET, extra={"message_ref": 12, "alert_key": "k:1"})
    MessageLog(log, message_ref=13, alert_key="ates:Veeam:1").warning(
        "PSA said no", extra={"request": json.dumps({"clientSecret": SECRET})})
    try:
        raise RuntimeError(f"login failed for password={SECRET}")
    except RuntimeError:
        log.exception("source failed")


def test_json_logs_one_line_per_record_redacted(restore_logging):
    out = io.StringIO()
    setup_logging(LogSettings(format="json"), R, stream=out)
    _log_everything(logging.getLogger("bridge.test"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and leaks(out.getvalue()) == []
    first, second, third = (json.loads(line) for line in lines)
    assert first["msg"] == "connecting with [redacted]"
    assert first["message_ref"] == 12 and first["alert_key"] == "k:1"
    assert first["level"] == "INFO" and first["logger"] == "bridge.test" and "ts" in first
    assert second["message_ref"] == 13 and second["alert_key"] == "ates:Veeam:1"
    assert "[redacted]" in second["request"]
    assert "RuntimeError" in third["exc"] and "password=[redacted]" in third["exc"]


def test_human_logs_one_line_per_record_redacted(restore_logging):
    out = io.StringIO()
    setup_logging(LogSettings(format="human", level="INFO"), R, stream=out)
    _log_everything(logging.getLogger("bridge.test"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and leaks(out.getvalue()) == []
    assert lines[0].endswith("INFO    bridge.test: connecting with [redacted]"
                             " [message_ref=12 alert_key=k:1]")
    assert "Traceback" in lines[2] and "password=[redacted]" in lines[2]


def test_auto_format_is_json_under_the_journal(restore_logging, tmp_path, monkeypatch):
    with open(tmp_path / "log", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        setup_logging(LogSettings(format="auto"), R, stream=stream)
        logging.getLogger("bridge.test").warning("hello %s", SECRET)
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream: not the journal's
        setup_logging(LogSettings(format="auto"), R, stream=stream)
        logging.getLogger("bridge.test").warning("plain")
    first, second = (tmp_path / "log").read_text().splitlines()
    assert json.loads(first)["msg"] == "hello [redacted]"
    assert second.split(" ", 2)[2] == "WARNING bridge.test: plain"
    # Installing again replaced our handler instead of adding a second one.
    assert sum(getattr(h, "_mailbridge_handler", False) for h in logging.getLogger().handlers) == 1


def test_records_of_other_libraries_are_redacted_too(restore_logging):
    out = io.StringIO()
    setup_logging(LogSettings(format="human"), R, stream=out)
    logging.getLogger("uvicorn.error").error("bad request Authorization: Bearer abcdefghijkl")
    assert "abcdefghijkl" not in out.getvalue() and "[redacted]" in out.getvalue()
