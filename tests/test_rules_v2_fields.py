"""Rule language v2: captures (optional, require), one field namespace everywhere
(header.<Name>, captures in conditions, templates and account lookup), key fallbacks and
subject_key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import RuleSetError, check_ruleset, classify
from bridge.models import Kind
from tests.test_rules_support import CATALOGUE, CTX, make_rules, msg, write_rules

HEAD = """\
format = 2
[[detect]]
name = "r"
sender = "@mon.example"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]
"""
S = "nagios@mon.example"
ACCOUNT = '\n[[account]]\nname = "acc"\nfrom = "subject"\nregex = \'(\\w+)/\'\n'


def run(tmp_path: Path, extra: str, subject: str, body: str = "", headers: dict | None = None,
        more: str = ACCOUNT):
    rules = make_rules(tmp_path, HEAD + extra + more)
    return classify(msg(subject, S, body, headers), rules, CTX)


def test_required_capture_that_does_not_match_fails_the_rule(tmp_path: Path) -> None:
    extra = "capture = [{ in = \"subject\", regex = 'host=(?P<host>\\w+)' }]\n"
    assert run(tmp_path, extra, "acme/ no host here").kind is Kind.REGULAR
    c = run(tmp_path, extra + 'device = "{host}"\n', "acme/ host=web1")
    assert c.kind is Kind.ALERT and c.alert is not None and c.alert.device == "web1"


def test_optional_capture_may_miss(tmp_path: Path) -> None:
    extra = ("capture = [{ in = \"body\", regex = 'Info: (?P<info>.+)', optional = true }]\n"
             'summary = "[{info}]"\n')
    c = run(tmp_path, extra, "acme/ x", body="nothing")
    assert c.kind is Kind.ALERT and c.alert is not None and c.alert.summary == "[]"
    c = run(tmp_path, extra, "acme/ x", body="Info: disk full")
    assert c.alert is not None and c.alert.summary == "[disk full]"


def test_case_sensitive_capture(tmp_path: Path) -> None:
    extra = "capture = [{ in = \"subject\", regex = 'CRIT', case_sensitive = true }]\n"
    assert run(tmp_path, extra, "acme/ crit").kind is Kind.REGULAR
    assert run(tmp_path, extra, "acme/ CRIT").kind is Kind.ALERT


def test_v1_regex_keys_are_required_in_v2(tmp_path: Path) -> None:
    extra = "body_regex = 'Host: (?P<host>\\S+)'\n"
    assert run(tmp_path, extra, "acme/ x", body="no host").kind is Kind.REGULAR
    assert run(tmp_path, extra, "acme/ x", body="Host: db1").kind is Kind.ALERT


def test_key_fallbacks_and_default_require(tmp_path: Path) -> None:
    extra = ("capture = [{ in = \"subject\", regex = 'h=(?P<host>\\w+)( s=(?P<service>\\w+))?' }]\n"
             'key = ["k:{host}:{service}", "k:{host}"]\n')
    both = run(tmp_path, extra, "acme/ h=web1 s=http")
    assert both.alert is not None and both.alert.alert_key == "k:web1:http"
    host = run(tmp_path, extra, "acme/ h=web1")
    assert host.alert is not None and host.alert.alert_key == "k:web1"
    assert any("trying the next" in s for s in host.steps)


def test_require_makes_the_rule_not_match_and_empty_require_turns_it_off(tmp_path: Path) -> None:
    cap = "capture = [{ in = \"subject\", regex = 'h=(?P<host>\\w*)' }]\n"
    assert run(tmp_path, cap + 'key = "k:{host}"\n', "acme/ h=").kind is Kind.REGULAR
    off = run(tmp_path, cap + 'key = "k:{host}"\nrequire = []\n', "acme/ h= disk")
    assert off.kind is Kind.ALERT and off.alert is not None
    assert off.alert.alert_key.startswith("ACME-001:Service Critical:")  # the default key
    explicit = cap.replace("\\w*", "[a-x]*)(?P<x>y?") + 'require = ["x"]\n'
    assert run(tmp_path, explicit, "acme/ h=a").kind is Kind.REGULAR
    assert run(tmp_path, explicit, "acme/ h=ay").kind is Kind.ALERT


def test_headers_in_templates_conditions_and_captures(tmp_path: Path) -> None:
    extra = ("capture = [{ in = \"header.X-Netdata-Host\", regex = '(?P<host>[\\w.]+)' }]\n"
             'conditions = [{ field = "header.X-Netdata-Severity", op = "equals", value = "critical" }]\n'
             'key = "netdata:{host}:{header.X-Netdata-Alarm}"\n'
             'title = "{header.X-Netdata-Alarm} on {host}"\n')
    headers = {"X-Netdata-Host": "db1.acme", "X-Netdata-Severity": "CRITICAL",
               "X-Netdata-Alarm": "disk_space"}
    c = run(tmp_path, extra, "acme/ alarm", headers=headers)
    assert c.kind is Kind.ALERT and c.alert is not None
    assert c.alert.alert_key == "netdata:db1.acme:disk_space"
    assert c.alert.title == "disk_space on db1.acme"
    headers["X-Netdata-Severity"] = "warning"
    assert run(tmp_path, extra, "acme/ alarm", headers=headers).kind is Kind.REGULAR


def test_captures_in_conditions(tmp_path: Path) -> None:
    extra = ("capture = [{ in = \"subject\", regex = 'state=(?P<state>\\w+)' }]\n"
             'conditions = [{ field = "state", op = "equals", value = "down" }]\n')
    assert run(tmp_path, extra, "acme/ state=DOWN").kind is Kind.ALERT
    assert run(tmp_path, extra, "acme/ state=up").kind is Kind.REGULAR


def test_subject_key_and_tool_fields(tmp_path: Path) -> None:
    c = run(tmp_path, 'key = "x:{subject_key}"\ntitle = "{tool}|{rule}"\n',
            "RE: RECOVERY acme/ Disk -- full!")
    assert c.alert is not None and c.alert.alert_key == "x:acme disk full"
    assert c.alert.title == "|r" and c.alert.status == "resolved"


def test_account_from_a_header_field(tmp_path: Path) -> None:
    more = '\n[[account]]\nname = "by-header"\nfrom = "header.X-Customer"\n'
    c = run(tmp_path, "", "something", headers={"X-Customer": "Globex Corporation"}, more=more)
    assert c.kind is Kind.ALERT and c.alert is not None and c.alert.account_id == "GLOBEX-002"


def test_account_from_a_capture(tmp_path: Path) -> None:
    extra = "capture = [{ in = \"body\", regex = 'Customer: (?P<cust>.+)$' }]\n"
    more = '\n[[account]]\nname = "by-capture"\nfrom = "cust"\nsearch = ["foreign-id"]\n'
    c = run(tmp_path, extra, "disk", body="Customer: umb-9", more=more)
    assert c.alert is not None and c.alert.account_id == "UMBRELLA-004"


@pytest.mark.parametrize("extra, expected", [
    ('title = "{nope}"\n', "unknown or not-yet-decided field(s) nope"),
    ('key = ["{host}", "x"]\n', "unknown or not-yet-decided field(s) host"),
    ('conditions = [{ field = "account", op = "equals", value = "x" }]\n', "unknown field"),
    ('conditions = [{ field = "state", op = "equals", value = "x" }]\n', "unknown field"),
    ("capture = [{ in = \"nowhere\", regex = 'x' }]\n", "is not a field"),
    ("capture = [{ in = \"subject\", regex = '(?P<subject>x)' }]\n", "would hide"),
    ("capture = [{ in = \"subject\", regex = '(' }]\n", "bad regex"),
    ("capture = [{ in = \"subject\", regex = 'x', optional = \"yes\" }]\n", "capture 1 must be"),
    ('require = ["ghost"]\n', "require names no capture"),
])
def test_field_errors_at_load(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, HEAD + extra)
    assert expected in str(err.value)


def test_account_field_nobody_captures_is_an_error(tmp_path: Path) -> None:
    rules, acc = write_rules(tmp_path, {"10-test.toml": HEAD + '\n[[account]]\nname = "a"\n'
                                        'from = "ghost"\n'})
    found = [str(p) for p in check_ruleset(rules, acc, CATALOGUE) if p.is_error]
    assert any("can never match: from = 'ghost'" in p for p in found), found
