"""Regex senders: `{ regex = "…" }` beside exact, domain and wildcard senders."""

from __future__ import annotations

from pathlib import Path

from bridge.classify import classify
from bridge.classify.matchers import SenderPattern
from bridge.classify.regex import compile_regex
from bridge.classify.view import MessageView
from bridge.models import Kind
from tests.test_rules_loader import errors, warnings
from tests.test_rules_support import CTX, make_rules, msg

RULES = """\
[[detect]]
name = "nagios"
sender = ["nagios@mon.msp.example", { regex = '^(nagios|icinga)@mon\\d+\\.msp\\.example$' }]
subject = "PROBLEM"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]

[[detect]]
name = "backup"
sender = "@backup.msp.example"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["OK"]

[[account]]
name = "everyone-is-acme"
from = "subject"
after = "for"
"""


def test_regex_sender_matches_the_whole_lower_cased_address() -> None:
    rx = SenderPattern.of_regex(compile_regex(r"^(nagios|icinga)@mon\d+\.msp\.example$"))
    assert rx.kind == "regex" and rx.text.startswith("regex ")
    for sender, hit in (("Icinga@MON2.msp.example", True), ("nagios@mon17.msp.example", True),
                        ("nagios@mon.msp.example", False), ("xnagios@mon1.msp.example", False),
                        ("nagios@mon1.msp.example.evil", False), ("", False)):
        assert rx.matches(MessageView(msg(sender=sender))) is hit, sender


def test_a_list_mixing_strings_and_regex_tables_and_the_index(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, RULES)
    found = classify(msg(subject="PROBLEM for Acme Corp", sender="icinga@mon3.msp.example"),
                     rules, CTX)
    assert found.rule == "10-test.toml:nagios" and found.kind is Kind.ALERT, found.steps
    assert any("sender regex '^(nagios|icinga)" in step for step in found.steps)
    exact = classify(msg(subject="PROBLEM for Acme Corp", sender="nagios@mon.msp.example"),
                     rules, CTX)
    assert exact.rule == "10-test.toml:nagios"
    other = classify(msg(subject="PROBLEM for Acme Corp", sender="nagios@mon.other.example"),
                     rules, CTX)
    assert other.rule is None
    # A regex sender makes the rule un-indexed (tried on every mail); exact/domain stay indexed.
    by_name = {r.name: r for r in rules.detect.rules}
    assert by_name["nagios"].index_keys() == ("word", ("problem",))
    assert by_name["backup"].index_keys() == ("sender", ("@backup.msp.example",))


def test_bad_sender_entries_are_reported(tmp_path: Path) -> None:
    bad = RULES.replace("{ regex = '^(nagios|icinga)@mon\\d+\\.msp\\.example$' }",
                        "{ regex = '(unclosed' }, { regexp = 'x' }, 3")
    found = "\n".join(errors(tmp_path, bad))
    assert ":3: nagios: bad regex in sender" in found
    assert found.count("sender must be a string or a list") == 2
    lax = RULES.replace("'^(nagios|icinga)@mon\\d+\\.msp\\.example$'", "'(a)\\1|.*'")
    said = "\n".join(warnings(tmp_path, lax))
    assert "runs on Python's re" in said and "matches the empty string" in said


def test_a_regex_sender_open_at_the_end_is_warned_about(tmp_path: Path) -> None:
    open_end = RULES.replace("\\.msp\\.example$'", "\\.msp\\.example'")
    said = [w for w in warnings(tmp_path, open_end) if "not anchored" in w]
    assert len(said) == 1 and ":3: nagios: sender regex '^(nagios|icinga)" in said[0]
    assert not [w for w in warnings(tmp_path, RULES) if "not anchored" in w]
