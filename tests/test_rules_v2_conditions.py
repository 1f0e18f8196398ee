"""Rule language v2: nested any/all condition groups and case-sensitive conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import RuleSetError, classify
from bridge.classify.conditions import Condition, ConditionGroup
from bridge.classify.view import MessageView
from bridge.models import Kind
from tests.test_rules_support import CTX, make_rules, msg

HEAD = """\
format = 2
[[detect]]
name = "kuma"
sender = "@kuma.example"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["up"]
capture = [{ in = "subject", regex = '\\[(?P<state>\\w+)\\]', optional = true }]
"""
ACCOUNT = '\n[[account]]\nname = "acc"\nregex = \'(\\w+)/\'\n'
KUMA = """conditions = { any = [
  { field = "header.X-Kuma-Monitor", op = "equals", value = "web" },
  { all = [ { field = "subject", op = "starts_with", value = "[" },
            { field = "state", op = "regex", value = '^(down|up)$' } ] },
] }
"""


def kind(tmp_path: Path, extra: str, subject: str, headers: dict | None = None) -> Kind:
    rules = make_rules(tmp_path, HEAD + extra + ACCOUNT)
    return classify(msg(subject, "k@kuma.example", headers=headers), rules, CTX).kind


@pytest.mark.parametrize("subject, headers, expected", [
    ("acme/ anything", {"X-Kuma-Monitor": "WEB"}, Kind.ALERT),
    ("[DOWN] acme/ site", None, Kind.ALERT),
    ("[pending] acme/ site", None, Kind.REGULAR),
    ("acme/ [down] site", None, Kind.REGULAR),
    ("acme/ site", {"X-Kuma-Monitor": "db"}, Kind.REGULAR),
])
def test_nested_groups(tmp_path: Path, subject: str, headers: dict | None,
                       expected: Kind) -> None:
    assert kind(tmp_path, KUMA, subject, headers) is expected


def test_case_sensitive_condition(tmp_path: Path) -> None:
    extra = ('conditions = [{ field = "subject", op = "contains", value = "CRIT", '
             'case_sensitive = true }]\n')
    assert kind(tmp_path, extra, "acme/ CRIT") is Kind.ALERT
    assert kind(tmp_path, extra, "acme/ crit") is Kind.REGULAR
    regex = extra.replace('op = "contains"', 'op = "regex"').replace('"CRIT"', "'^acme/ C'")
    assert kind(tmp_path, regex, "acme/ Crit") is Kind.ALERT
    assert kind(tmp_path, regex, "acme/ crit") is Kind.REGULAR


def test_v1_list_with_match_any_still_works(tmp_path: Path) -> None:
    extra = ('match = "any"\nconditions = [{ field = "subject", op = "contains", value = "a1" },'
             ' { field = "subject", op = "contains", value = "b2" }]\n')
    assert kind(tmp_path, extra, "acme/ b2") is Kind.ALERT
    assert kind(tmp_path, extra, "acme/ c3") is Kind.REGULAR


@pytest.mark.parametrize("conditions, expected", [
    ("conditions = { any = [] }\n", "must not be empty"),
    ("conditions = { none = [] }\n", "conditions must be a list"),
    ('match = "any"\nconditions = { all = [{ field = "subject", op = "equals", value = "x" }] }\n',
     "match does not apply"),
    ("conditions = " + "{ all = [" * 10 + '{ field = "subject", op = "equals", value = "x" }'
     + "] }" * 10 + "\n", "deeper than 8"),
    ('conditions = [{ field = "subject", op = "equals", value = "x", case_sensitive = 1 }]\n',
     "a condition is"),
])
def test_condition_errors(tmp_path: Path, conditions: str, expected: str) -> None:
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, HEAD + conditions)
    assert expected in str(err.value)


def test_group_first_failure_and_depth() -> None:
    view = MessageView(msg("hello world", "a@b.example"))
    yes = Condition.compile("subject", "contains", "hello")
    no = Condition.compile("subject", "contains", "bye")
    group = ConditionGroup((yes, ConditionGroup((no, yes), match_any=True), no))
    assert group.test(view) is None
    assert group.first_failure(view) == "subject contains 'bye'"
    assert ConditionGroup((no, no), match_any=True).first_failure(view) == \
        "none of: subject contains 'bye'; subject contains 'bye'"
    assert group.depth == 2 and not group.has_regex
