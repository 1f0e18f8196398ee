"""require_authentication: Authentication-Results from a trusted authserv-id, trusted relays."""

from pathlib import Path

import pytest

from bridge.classify import classify
from bridge.classify.authenticity import parse_results
from bridge.models import Kind
from tests.test_rules_support import CTX, make_rules, msg

RULES = """
[[detect]]
name = "nagios"
sender = "nagios@monitor.msp.example"
require_authentication = true
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]

[[detect]]
name = "encoded"
sender = "@example.com"
require_authentication = true
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]

[[account]]
name = "host"
after = "Host:"
"""
SENDER = "nagios@monitor.msp.example"


@pytest.fixture
def rules(tmp_path: Path):
    return make_rules(tmp_path, RULES)


BORDER = "from monitor.msp.example (monitor.msp.example [198.51.100.10]) by mx.msp.example"


def run(rules, headers: dict, sender: str = SENDER):
    # Results count only above our border MTA's Received header (RFC 8601 §5).
    headers = headers if "Received" in headers else {**headers, "Received": BORDER}
    return classify(msg("RECOVERY Host: Acme Corp", sender, headers=headers), rules, CTX)


@pytest.mark.parametrize("value", [
    "mx.msp.example; dkim=pass header.d=monitor.msp.example header.s=s1",
    "MX.MSP.EXAMPLE 1; dkim=pass (2048-bit key; secure) header.i=@monitor.msp.example",
    "mx.msp.example; spf=pass smtp.mailfrom=nagios@monitor.msp.example",
    "mx.msp.example; spf=pass (sender SPF authorized) smtp.mailfrom=monitor.msp.example",
    'mx.msp.example; dkim=fail header.d=monitor.msp.example; spf=pass smtp.mailfrom="nagios@monitor.msp.example"',
])
def test_dkim_or_spf_pass_for_the_sender_domain(rules, value: str) -> None:
    c = run(rules, {"Authentication-Results": value})
    assert c.kind is Kind.ALERT and c.alert is not None and c.alert.status == "resolved"
    assert any(s.startswith("authenticate: ") and "pass" in s for s in c.steps)


@pytest.mark.parametrize("headers,why", [
    ({}, "no Authentication-Results header from a trusted authserv-id"),
    ({"Authentication-Results": "mx.attacker.example; dkim=pass header.d=monitor.msp.example"},
     "no Authentication-Results header from a trusted authserv-id"),
    ({"Authentication-Results": "mx.msp.example; dkim=pass header.d=attacker.example"},
     "no dkim/spf pass for the sender's domain"),
    ({"Authentication-Results": "mx.msp.example; spf=softfail smtp.mailfrom=monitor.msp.example"},
     "spf=softfail"),
    ({"Authentication-Results": "mx.msp.example; dkim=pass header.d=msp.example"},  # parent
     "no dkim/spf pass"),
    ({"Authentication-Results": "mx.msp.example (dkim=pass header.d=monitor.msp.example); none"},
     "reports no dkim or spf result"),  # a pass inside a comment does not count
])
def test_forged_missing_or_wrong_results_are_rejected(rules, headers: dict, why: str) -> None:
    c = run(rules, headers)
    assert c.kind is Kind.REJECTED
    assert c.reason.startswith("sender not authenticated: ") and why in c.reason
    assert c.rule == "10-test.toml:nagios"


def test_trusted_relay_by_ip_network_or_recorded_name(rules) -> None:
    by_ip = {"Received": ("from sender.example (host.example [192.0.2.7]) by mx.msp.example",
                          "from evil by somewhere")}
    assert run(rules, by_ip).kind is Kind.ALERT
    by_name = {"Received": "from helo (relay.msp.example [198.51.100.9]) by mx.msp.example"}
    assert run(rules, by_name).kind is Kind.ALERT
    exchange = {"Received": "from relay.msp.example (192.0.2.1) by mx.msp.example with SMTP"}
    assert run(rules, exchange).kind is Kind.ALERT


def test_relay_helo_and_lower_received_headers_are_not_trusted(rules) -> None:
    helo = {"Received": "from relay.msp.example (unknown [203.0.113.5]) by mx.msp.example"}
    assert run(rules, helo).kind is Kind.REJECTED
    lower = {"Received": ("from a (b [203.0.113.5]) by mx.msp.example",
                          "from relay.msp.example (relay.msp.example [192.0.2.7]) by a")}
    assert run(rules, lower).kind is Kind.REJECTED


def test_encoded_word_sender_is_never_authenticated_or_decoded(rules) -> None:
    results = {"Authentication-Results": "mx.msp.example; dkim=pass header.d=example.com"}
    c = run(rules, results, sender="=?utf-8?q?nagios=40monitor=2emsp=2eexample?=@example.com")
    assert c.rule == "10-test.toml:encoded"  # matched literally by its domain, not as nagios@
    assert c.kind is Kind.REJECTED and "encoded-word" in c.reason
    assert run(rules, results, sender="ops@example.com").kind is Kind.ALERT


def test_rules_without_the_flag_do_not_check(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, RULES.replace("require_authentication = true\n", "", 1))
    assert run(rs, {}).kind is Kind.ALERT


def test_parse_results_handles_comments_quotes_and_versions() -> None:
    authserv, results = parse_results(
        'mx.example 1 (comment; with semicolon); dkim=pass (ok (nested)) header.d=a.example '
        'header.s="sel"; spf=none smtp.mailfrom=b.example')
    assert authserv == "mx.example"
    assert results == [("dkim", "pass", {"header.d": "a.example", "header.s": "sel"}),
                       ("spf", "none", {"smtp.mailfrom": "b.example"})]
