"""Rule language v2: status order, from + map, phrase modes and `in`, default."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import RuleSetError, classify
from bridge.models import Kind
from tests.test_rules_support import CTX, make_rules, msg

HEAD = """\
format = 2
[[detect]]
name = "r"
sender = "@mon.example"
product_group = "servers"
alert_type = "Service Critical"
capture = [{ in = "body", regex = 'State: (?P<state>\\w+)', optional = true }]
"""
ACCOUNT = '\n[[account]]\nname = "acc"\nregex = \'(\\w+)/\'\n'


def status(tmp_path: Path, table: str, subject: str, body: str = "",
           headers: dict | None = None) -> tuple[str, tuple[str, ...]]:
    rules = make_rules(tmp_path, HEAD + table + ACCOUNT)
    c = classify(msg(subject, "x@mon.example", body, headers), rules, CTX)
    assert c.kind is Kind.ALERT and c.alert is not None, c.steps
    return c.alert.status, c.steps


def test_v2_order_is_resolved_first_and_order_is_explicit(tmp_path: Path) -> None:
    flat = 'open = ["CRIT"]\nresolved = ["OK"]\n'
    assert status(tmp_path, flat, "acme/ OK -> CRIT")[0] == "resolved"
    ordered = '[detect.status]\norder = ["open", "resolved"]\nopen = ["CRIT"]\nresolved = ["OK"]\n'
    assert status(tmp_path, ordered, "acme/ OK -> CRIT")[0] == "open"


def test_status_from_a_capture_through_a_map(tmp_path: Path) -> None:
    table = ('[detect.status]\nfrom = "{state}"\n'
             'map = { OK = "resolved", CRITICAL = "open", WARNING = "open" }\n'
             'resolved = ["RECOVERY"]\n')
    assert status(tmp_path, table, "acme/ x", "State: ok")[0] == "resolved"
    assert status(tmp_path, table, "acme/ RECOVERY", "State: CRITICAL")[0] == "open"
    found, steps = status(tmp_path, table, "acme/ RECOVERY", "State: UNKNOWN")
    assert found == "resolved" and any("'unknown' is not in the map" in s for s in steps)
    assert status(tmp_path, table, "acme/ nothing", "State: UNKNOWN")[0] == "open"


def test_status_from_a_header(tmp_path: Path) -> None:
    table = '[detect.status]\nfrom = "{header.X-State}"\nmap = { up = "resolved" }\n'
    assert status(tmp_path, table, "acme/ x", headers={"X-State": "UP"})[0] == "resolved"


@pytest.mark.parametrize("phrase, subject, expected", [
    ('{ phrase = "Cleared:", mode = "starts_with" }', "Cleared: acme/ disk", "resolved"),
    ('{ phrase = "Cleared:", mode = "starts_with" }', "acme/ not Cleared: disk", "open"),
    ('{ phrase = "is ok", mode = "ends_with" }', "acme/ disk is OK ", "resolved"),
    ('{ phrase = "is ok", mode = "ends_with" }', "acme/ is OK now", "open"),
    ('{ phrase = "solv", mode = "substring" }', "acme/ Resolved", "resolved"),
    ('{ phrase = "solv" }', "acme/ Resolved", "open"),
    ('{ phrase = "OK", case_sensitive = true }', "acme/ ok", "open"),
    ('{ phrase = "OK", case_sensitive = true }', "acme/ OK", "resolved"),
    ('{ phrase = "back up", in = "body" }', "acme/ x", "open"),
])
def test_phrase_modes(tmp_path: Path, phrase: str, subject: str, expected: str) -> None:
    table = f"[detect.status]\nresolved = [{phrase}]\n"
    assert status(tmp_path, table, subject)[0] == expected


def test_phrase_in_a_field_and_the_status_in(tmp_path: Path) -> None:
    table = ('[detect.status]\nresolved = [{ phrase = "ok", in = "state" }]\n'
             'open = [{ phrase = "down", in = "header.X-Kuma" }]\norder = ["open", "resolved"]\n')
    assert status(tmp_path, table, "acme/ service ok", "State: OK")[0] == "resolved"
    assert status(tmp_path, table, "acme/ ok", "State: OK", {"X-Kuma": "Down"})[0] == "open"
    body = '[detect.status]\nin = "body"\nresolved = ["fine"]\n'
    assert status(tmp_path, body, "acme/ fine", "broken")[0] == "open"
    assert status(tmp_path, body, "acme/ x", "all fine")[0] == "resolved"


def test_default_and_from_without_a_map(tmp_path: Path) -> None:
    assert status(tmp_path, '[detect.status]\ndefault = "update"\n', "acme/ x")[0] == "update"
    bare = '[detect.status]\nfrom = "{state}"\n'
    assert status(tmp_path, bare, "acme/ x", "State: Resolved")[0] == "resolved"
    assert status(tmp_path, bare, "acme/ x", "State: weird")[0] == "open"


def test_a_tools_status_is_replaced_whole(tmp_path: Path) -> None:
    text = """\
format = 2
[[tool]]
name = "t"
sender = "@mon.example"
product_group = "servers"
alert_type = "Service Critical"
[tool.status]
resolved = ["fine"]
update = ["ack"]

[[detect]]
name = "own"
tool = "t"
subject = "own"
[detect.status]
open = ["broken"]

[[detect]]
name = "inherits"
tool = "t"
subject = "inherit"
""" + ACCOUNT
    rules = make_rules(tmp_path, text)

    def st(subject: str) -> str:
        c = classify(msg(subject, "x@mon.example"), rules, CTX)
        assert c.alert is not None, c.steps
        return c.alert.status
    assert st("acme/ inherit fine") == "resolved" and st("acme/ inherit ack") == "update"
    # the rule's own table replaces the tool's: its lists fall back to the global ones
    assert st("acme/ own fine") == "open" and st("acme/ own Acknowledged") == "update"
    assert st("acme/ own RECOVERY") == "resolved"  # a global resolved phrase


@pytest.mark.parametrize("table, expected", [
    ('[detect.status]\norder = ["open", "open"]\n', "status order"),
    ('[detect.status]\nmap = { OK = "fine" }\nfrom = "{state}"\n', "status map values"),
    ('[detect.status]\nmap = { OK = "resolved" }\n', "status map needs from"),
    ('[detect.status]\ndefault = "closed"\n', "status default"),
    ('[detect.status]\nresolved = [{ phrase = "x", mode = "regex" }]\n', "phrases are strings"),
    ('[detect.status]\nresolved = [{ phrase = "x", in = "nowhere" }]\n', "is not subject"),
    ('[detect.status]\nfrom = "{device}"\nmap = { a = "open" }\n', "not-yet-decided"),
    ('[detect.status]\nfrom = "{state}"\nmap = { a = "open" }\nfrm = 1\n', "unknown status key"),
    ('resolved = ["x"]\n[detect.status]\nopen = ["y"]\n', "not both"),
])
def test_status_errors(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(RuleSetError) as err:
        make_rules(tmp_path, HEAD + table)
    assert expected in str(err.value)
