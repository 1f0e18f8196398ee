"""Rule language v2: alert type and product group maps, and their catalogue check."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import RuleSetError, check_ruleset, classify
from bridge.classify.fieldmap import FieldMap, pairs
from bridge.classify.templates import Template
from bridge.models import Kind
from tests.test_rules_support import CATALOGUE, CTX, make_rules, msg, write_rules

RULE = """\
format = 2
[[detect]]
name = "librenms"
sender = "librenms@mon.example"
capture = [{ in = "subject", regex = '(?P<cust>\\w+)/(?P<kind>\\w+) (?P<state>\\w+)' }]
product_group = { from = "{kind}", map = { port = "network" }, default = "servers" }
alert_type = { from = "{kind}", map = { port = "Interface Down", device = "Host Down" }, default = "Service Critical" }
resolved = ["recovered"]

[[account]]
name = "acc"
regex = '(\\w+)/'
"""


@pytest.mark.parametrize("subject, routed", [
    ("acme/port down", ("network", "Interface Down")),
    ("acme/PORT down", ("network", "Interface Down")),
    ("acme/device down", ("servers", "Host Down")),
    ("acme/service down", ("servers", "Service Critical")),
])
def test_maps_route_by_value_with_a_default(tmp_path: Path, subject: str,
                                            routed: tuple[str, str]) -> None:
    c = classify(msg(subject, "librenms@mon.example"), make_rules(tmp_path, RULE), CTX)
    assert c.kind is Kind.ALERT and c.alert is not None
    assert (c.alert.product_group, c.alert.alert_type) == routed
    assert c.alert.alert_key.startswith(f"ACME-001:{routed[1]}:")  # the default key uses it


def test_a_map_needs_a_default(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, RULE.replace(', default = "Service Critical"', ""))
    assert "alert_type map needs a default" in str(err.value)


def test_map_values_are_checked_against_the_catalogue(tmp_path: Path) -> None:
    bad = RULE.replace('device = "Host Down"', 'device = "Host Gone"')
    rules, acc = write_rules(tmp_path, {"10-test.toml": bad})
    found = [str(p) for p in check_ruleset(rules, acc, CATALOGUE) if p.is_error]
    assert any("alert type 'Host Gone' (a value of its map)" in p for p in found), found
    # port -> network/Interface Down is fine; network/Host Down would not be, but maps that
    # read the same field move together, so it is not reported.
    assert not any("'Host Down'" in p for p in found)


def test_map_from_may_not_use_fields_decided_later(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, RULE.replace('from = "{kind}", map = { port = "network" }',
                                          'from = "{status}", map = { port = "network" }'))
    assert "product_group.from uses unknown or not-yet-decided field(s) status" in str(err.value)


def test_pairs_of_independent_maps_are_every_combination() -> None:
    a = FieldMap(Template.parse("{a}"), {"x": "p1"}, "p2")
    b = FieldMap(Template.parse("{b}"), {"y": "t1"}, "t2")
    assert pairs("", a, "", b) == {("p1", "t1"), ("p1", "t2"), ("p2", "t1"), ("p2", "t2")}
    assert pairs("pg", None, "", b) == {("pg", "t1"), ("pg", "t2")}
    assert pairs("pg", None, "at", None) == {("pg", "at")}
