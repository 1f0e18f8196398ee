"""Rule language v2: `format = 2`, `[[tool]]` defaults and inheritance, the tool's sender as a
detection rule (then skip, then unmatched), tool account rules, `tool =` on rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import RuleSetError, check_ruleset, classify
from bridge.models import Kind
from tests.test_rules_support import CATALOGUE, CTX, make_rules, msg, write_rules

NAGIOS = """\
format = 2

[[tool]]
name = "nagios"
sender = "nagios@monitor.msp.example"
product_group = "servers"
alert_type = "Service Critical"
capture = [{ in = "subject", regex = '(?P<cust>\\w+)/(?P<host>[\\w.-]+)/(?P<service>[^ ]+)', optional = true }]
key = "nagios:{account}:{host}:{service}"
title = "{service} on {host}"
account = { from = "subject", regex = '(?P<account>\\w+)/', search = ["foreign-id"] }

[tool.status]
resolved = ["RECOVERY"]
open = ["PROBLEM"]

[[detect]]
name = "nagios-service"
tool = "nagios"
subject = "Service Alert"

[[detect]]
name = "nagios-host"
tool = "nagios"
subject = "Host Alert"
alert_type = "Host Down"
key = "nagios-host:{account}:{subject_key}"

[[skip]]
name = "nagios-notes"
tool = "nagios"
subject = "weekly report"
"""

SENDER = "nagios@monitor.msp.example"


def test_rules_inherit_the_tools_defaults_and_override_them(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS)
    c = classify(msg("** PROBLEM Service Alert: acme/web01/HTTP is CRITICAL **", SENDER), rules,
                 CTX)
    assert c.kind is Kind.ALERT and c.rule == "10-test.toml:nagios-service"
    assert c.alert is not None
    assert (c.alert.product_group, c.alert.alert_type) == ("servers", "Service Critical")
    assert c.alert.account_id == "ACME-001" and c.alert.status == "open"
    assert c.alert.alert_key == "nagios:ACME-001:web01:HTTP"
    assert c.alert.title == "HTTP on web01"
    assert any("nagios/account-1" in s for s in c.steps)
    host = classify(msg("** RECOVERY Host Alert: acme/web01/x is UP **", SENDER), rules, CTX)
    assert host.alert is not None and host.alert.alert_type == "Host Down"
    assert host.alert.status == "resolved"
    assert host.alert.alert_key.startswith("nagios-host:ACME-001:")


def test_detect_rule_of_a_tool_matches_only_the_tools_senders(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS)
    c = classify(msg("PROBLEM Service Alert: acme/web01/HTTP", "someone@else.example"), rules,
                 CTX)
    assert c.kind is Kind.REGULAR


def test_tool_sender_detects_then_skip_then_unmatched(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS)
    skipped = classify(msg("Your weekly report", SENDER), rules, CTX)
    assert skipped.kind is Kind.SKIPPED and skipped.rule == "10-test.toml:nagios-notes"
    other = classify(msg("Nagios package updates available", SENDER), rules, CTX)
    assert other.kind is Kind.UNMATCHED
    assert other.reason == "mail from tool nagios matched none of its detect rules"
    assert other.forward_to == "support@msp.example"
    assert any("mail from tool 10-test.toml:nagios" in s for s in other.steps)


def test_skip_rule_with_tool_needs_the_tools_sender(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS + """
[[detect]]
name = "other"
sender = "@other.example"
product_group = "servers"
alert_type = "Host Down"
resolved = ["OK"]
""")
    c = classify(msg("weekly report", "x@other.example"), rules, CTX)
    assert c.kind is not Kind.SKIPPED


def test_skip_rule_with_its_own_sender_and_a_tool_needs_both(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS + """
[[skip]]
name = "both"
tool = "nagios"
sender = "@monitor.msp.example"
subject = "digest"
""")
    assert classify(msg("digest", SENDER), rules, CTX).kind is Kind.SKIPPED
    assert classify(msg("digest", "other@monitor.msp.example"), rules, CTX).kind \
        is Kind.REGULAR


def test_tool_account_rules_apply_only_to_the_tools_mail(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS + """
[[detect]]
name = "other"
sender = "@other.example"
subject = "Service Alert"
product_group = "servers"
alert_type = "Host Down"
resolved = ["OK"]
""")
    c = classify(msg("Service Alert: acme/web01/HTTP", "x@other.example"), rules, CTX)
    assert c.kind is Kind.UNMATCHED  # nagios/account-1 is not tried for another tool's mail
    assert not any("nagios/account" in s for s in c.steps)


def test_v1_file_is_unchanged_and_a_directory_may_mix(tmp_path: Path) -> None:
    v1 = """\
[[detect]]
name = "v1-nagios"
sender = "nagios@old.example"
subject = "Service Alert"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]
"""
    rules = make_rules(tmp_path, NAGIOS, **{"20-v1.toml": v1})
    assert classify(msg("Service Alert: acme/x/y", "nagios@old.example"), rules, CTX).rule \
        == "20-v1.toml:v1-nagios"
    assert classify(msg("Service Alert: acme/x/y", SENDER), rules, CTX).rule \
        == "10-test.toml:nagios-service"


@pytest.mark.parametrize("text, expected", [
    ("format = 3\n", "format must be 1 or 2"),
    ('[[tool]]\nname = "t"\nsender = "a@b.example"\n', "[[tool]] needs format = 2"),
    ('format = 2\n[[detect]]\nname = "d"\ntool = "nope"\nsubject = "x"\n'
     'product_group = "servers"\nalert_type = "Host Down"\n', "tool 'nope' is not defined"),
    ('format = 2\n[[detect]]\nname = "d"\ntool = "t"\nsubject = "x"\n'
     'product_group = "servers"\nalert_type = "Host Down"\n'
     '[[tool]]\nname = "t"\nsender = "a@b.example"\n', "defined after this rule"),
    ('format = 2\n[[tool]]\nname = "t"\n[[tool]]\nname = "t"\n', "duplicate tool name"),
    ('format = 2\n[[tool]]\nname = "t"\nsendr = "a@b.example"\n', "unknown key 'sendr'"),
    ('format = 2\n[[tool]]\nname = "t"\naccount = { name = "x", from = "sender" }\n',
     "take no name"),
])
def test_format_and_tool_errors(tmp_path: Path, text: str, expected: str) -> None:
    rules, acc = write_rules(tmp_path, {"10-test.toml": text})
    found = [str(p) for p in check_ruleset(rules, acc, CATALOGUE) if p.is_error]
    assert any(expected in p for p in found), found


def test_problem_in_an_inherited_key_names_the_tool(tmp_path: Path) -> None:
    text = NAGIOS.replace('title = "{service} on {host}"', 'title = "{service} on {hots}"')
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, text)
    assert "inherited from tool 'nagios'" in str(err.value)
    assert "hots" in str(err.value)


def test_skip_rule_with_only_a_tool_warns(tmp_path: Path) -> None:
    rules, acc = write_rules(tmp_path, {"10-test.toml": NAGIOS + """
[[skip]]
name = "all-of-it"
tool = "nagios"
"""})
    warnings = [str(p) for p in check_ruleset(rules, acc, CATALOGUE) if not p.is_error]
    assert any("skips all mail of tool 'nagios'" in w for w in warnings)


def test_tool_from_an_earlier_file(tmp_path: Path) -> None:
    later = """\
format = 2
[[detect]]
name = "later"
tool = "nagios"
subject = "Disk"
alert_type = "Disk Space"
"""
    rules = make_rules(tmp_path, NAGIOS, **{"20-later.toml": later})
    c = classify(msg("Disk acme/db1/disk full", SENDER), rules, CTX)
    assert c.rule == "20-later.toml:later" and c.alert is not None
    assert c.alert.alert_type == "Disk Space"


def test_a_v2_rule_set_pickles_for_the_worker_pool(tmp_path: Path) -> None:
    import pickle

    rules = pickle.loads(pickle.dumps(make_rules(tmp_path, NAGIOS)))
    c = classify(msg("** PROBLEM Service Alert: acme/web01/HTTP is CRITICAL **", SENDER), rules,
                 CTX)
    assert c.alert is not None and c.alert.alert_key == "nagios:ACME-001:web01:HTTP"
    assert classify(msg("weekly report", SENDER), rules, CTX).kind is Kind.SKIPPED


def test_expect_rules_work_in_a_v2_file(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, NAGIOS + """
[[expect]]
name = "nagios-alive"
rule = "nagios-service"
every = "1d"
product_group = "servers"
alert_type = "Service Critical"
""")
    c = classify(msg("** PROBLEM Service Alert: acme/web01/HTTP is CRITICAL **", SENDER), rules,
                 CTX)
    assert [h.expectation for h in c.expected] == ["nagios-alive"]
