"""The safety stage, the loop checks on outgoing mail, and the pure parts of streamed forwards.

Unit tests on pure functions; the classification cases use the shipped rules, so "a detect
rule would match this" is the real rule set's answer, and the classify context comes from
`classify_context(settings)`, as the pipeline builds it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from bridge.classify.engine import classify
from bridge.classify.loader import load_ruleset
from bridge.classify.safety import own_addresses, unsafe_reason
from bridge.config import ConfigError, load_settings, settings_from_dict
from bridge.deliver.smtpdata import data_chunks, wire_size
from bridge.models import Kind
from bridge.parse.mime import parse
from bridge.parse.secret_spans import secret_spans
from bridge.process.pipeline import classify_context
from tests.helpers import SAMPLES, write_config

ZABBIX = (SAMPLES / "05-zabbix-problem.eml").read_bytes()
HUMAN = (SAMPLES / "20-regular-human.eml").read_bytes()


class _Psa:
    url = "http://127.0.0.1:9"


@pytest.fixture
def setup(tmp_path: Path):
    imap = ('\n[[imap]]\nname = "alerts"\nhost = "127.0.0.1"\nusername = "watch@msp.example"\n'
            'password = "x"\n[[imap]]\nname = "other"\nhost = "127.0.0.1"\n'
            'username = "plainlogin"\npassword = "x"\n')
    config = write_config(tmp_path, _Psa(), smtp_port=2525, imap=imap)
    settings = load_settings(config)
    rules = load_ruleset(settings.rules.directory, settings.rules.accounts,
                         settings.catalogue_map())
    return settings, rules, classify_context(settings)


def _on_top(raw: bytes, *headers: str) -> bytes:
    return "".join(h + "\n" for h in headers).encode() + raw


def test_own_addresses_include_the_watched_mailboxes(setup) -> None:
    settings, _, ctx = setup
    assert own_addresses(settings) == {"alerts@msp.example", "watch@msp.example"}
    assert ctx.own_addresses == own_addresses(settings)


LOOP_SIGNS = [
    (("X-Mailbridge: forward",), "mailbridge itself"),
    (("Return-Path: <>",), "empty Return-Path"),
    (("Return-Path: <MAILER-DAEMON@mx.example.org>",), "bounce"),
    (("Return-Path: <postmaster@mx.example.org>",), "bounce"),
    (("Return-Path: <alerts@msp.example>",), "own addresses"),
    (("Auto-Submitted: auto-replied",), "auto-reply"),
    (("Auto-Submitted: Auto-Replied; owner-email=x@y.example",), "auto-reply"),
    (("X-Autoreply: yes",), "auto-reply"),
    (("X-Autorespond: yes",), "auto-reply"),
]


@pytest.mark.parametrize(("headers", "expected"), LOOP_SIGNS)
def test_a_loop_sign_rejects_even_what_a_detect_rule_matches(setup, headers, expected) -> None:
    _, rules, ctx = setup
    assert classify(parse(ZABBIX), rules, ctx).kind is Kind.ALERT
    c = classify(parse(_on_top(ZABBIX, *headers)), rules, ctx)
    assert c.kind is Kind.REJECTED and expected in c.reason
    assert c.steps[0].startswith("safety:") and len(c.steps) == 1


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@zabbix.msp.example", "alerts@msp.example",
                                    "WATCH@msp.example", "postmaster@zabbix.msp.example"])
def test_a_sender_that_is_ours_or_a_mailer_daemon_is_rejected(setup, sender) -> None:
    _, rules, ctx = setup
    raw = ZABBIX.replace(b"From: Zabbix <zabbix@zabbix.msp.example>",
                         f"From: Zabbix <{sender}>".encode())
    assert raw != ZABBIX
    assert classify(parse(raw), rules, ctx).kind is Kind.REJECTED


def test_a_delivery_report_is_rejected(setup) -> None:
    _, rules, ctx = setup
    raw = re.sub(rb"(?m)^Subject: ", b"Content-Type: multipart/report; report-type="
                 b"delivery-status; boundary=x\nSubject: ", HUMAN.replace(
                     b"Content-Type: text/plain; charset=utf-8\n", b""))
    c = classify(parse(raw), rules, ctx)
    assert c.kind is Kind.REJECTED and "multipart/report" in c.reason


@pytest.mark.parametrize("header", ["Auto-Submitted: auto-generated", "Precedence: bulk",
                                    "Precedence: list", "Auto-Submitted: no"])
def test_monitoring_headers_are_not_loop_signs(setup, header) -> None:
    _, rules, ctx = setup
    assert unsafe_reason(parse(_on_top(ZABBIX, header)), ctx.own_addresses) is None
    assert classify(parse(_on_top(ZABBIX, header)), rules, ctx).kind is Kind.ALERT
    assert classify(parse(_on_top(HUMAN, header)), rules, ctx).kind is Kind.REGULAR


@pytest.mark.parametrize("key", ["regular_forward_to", "internal_address", "admin_address"])
@pytest.mark.parametrize("address", ["watch@msp.example", "Bridge <ALERTS@msp.example>",
                                     "listed@msp.example"])
def test_a_forward_to_one_of_our_addresses_is_refused_by_the_config(key, address) -> None:
    data = {"smtp": {"from_address": "alerts@msp.example", "security": "none"},
            "imap": [{"host": "h", "username": "watch@msp.example", "password": "x"}],
            "routing": {"own_addresses": ["listed@msp.example"], key: address,
                        "regular_mail": "forward"}}
    with pytest.raises(ConfigError, match=f"routing.{key}: .*loop"):
        settings_from_dict(data)
    data["routing"][key] = "helpdesk@msp.example"
    settings_from_dict(data)


# -- the DATA stream ---------------------------------------------------------------------------

_TEXTS = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x" * 7]),
                  max_size=60).map(b"".join)


@hsettings(max_examples=300, deadline=None)
@given(_TEXTS, st.lists(st.integers(0, 40), max_size=5), st.integers(1, 9))
def test_data_chunks_are_aiosmtplibs_encoding_whatever_the_cuts(text, cuts, chunk) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    segments = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(text)) + b".\r\n"
    assert b"".join(data_chunks(segments, chunk=chunk)) == expected
    if len(segments) == 1:
        assert wire_size(segments) == len(normalize_message_line_endings(text))


def test_secret_spans_find_pw_values_and_xml_passwords() -> None:
    text = ('<PW name="abc"/> &lt;PW name=&quot;d&amp;ef&quot;/&gt; <PW name=”curly”/>'
            " <password>p&amp;w</password> <x:password a='1'>q</x:password> known-value")
    found = [text[a:b] for a, b in secret_spans(text, ["known-value"])]
    assert found == ["abc", "d&amp;ef", "curly", "p&amp;w", "q", "known-value"]
    assert secret_spans("ordinary text about a PW and a password", ["abc"]) == []
