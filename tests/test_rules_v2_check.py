"""Rule language v2: `check` on the new constructs, and `simulate --explain`."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.classify import check_ruleset
from bridge.classify.explain import explain
from tests.helpers import SAMPLES, cli, write_config
from tests.test_rules_support import CATALOGUE, CTX, make_rules, msg, write_rules

HEAD = """\
format = 2
[[detect]]
name = "first"
sender = "@mon.example"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]
"""
LATER = """
[[detect]]
name = "later"
sender = "x@mon.example"
product_group = "servers"
alert_type = "Host Down"
resolved = ["RECOVERY"]
"""


def found(tmp_path: Path, text: str) -> tuple[list[str], list[str]]:
    rules, acc = write_rules(tmp_path, {"10-test.toml": text})
    problems = check_ruleset(rules, acc, CATALOGUE)
    return ([str(p) for p in problems if p.is_error],
            [str(p) for p in problems if not p.is_error])


def test_a_rule_whose_capture_can_fail_hides_nothing(tmp_path: Path) -> None:
    errors, _ = found(tmp_path, HEAD + LATER)
    assert any("later: unreachable" in e for e in errors)
    capture = "capture = [{ in = \"subject\", regex = '(?P<h>h\\d)' }]\ndevice = \"{h}\"\n"
    errors, _ = found(tmp_path, HEAD + capture + LATER)
    assert not any("unreachable" in e for e in errors), errors
    optional = capture.replace("}]", ", optional = true }]")
    errors, _ = found(tmp_path, HEAD + optional + LATER)
    assert any("later: unreachable" in e for e in errors)


def test_unused_captures_warn(tmp_path: Path) -> None:
    capture = "capture = [{ in = \"subject\", regex = '(?P<h>h\\d) (?P<unused>\\w+)' }]\n"
    _, warnings = found(tmp_path, HEAD + capture + 'device = "{h}"\n')
    assert any("capture(s) unused used nowhere" in w for w in warnings), warnings
    assert not any("capture(s) h " in w for w in warnings)


def test_unmapped_status_values_and_from_without_map_warn(tmp_path: Path) -> None:
    capture = "capture = [{ in = \"subject\", regex = 'is (?P<state>OK|WARNING|CRITICAL)' }]\n"
    status = '[detect.status]\nfrom = "{state}"\nmap = { ok = "resolved", CRITICAL = "open" }\n'
    _, warnings = found(tmp_path, HEAD.replace('resolved = ["RECOVERY"]\n', "") + capture
                        + status)
    assert any("does not name 'WARNING'" in w for w in warnings), warnings
    bare = '[detect.status]\nfrom = "{state}"\n'
    _, warnings = found(tmp_path, HEAD.replace('resolved = ["RECOVERY"]\n', "") + capture
                        + bare)
    assert any("has no map" in w for w in warnings), warnings


def test_skip_for_a_tool_that_nothing_detects_warns(tmp_path: Path) -> None:
    text = ('format = 2\n[[tool]]\nname = "quiet"\nproduct_group = "servers"\n'
            '[[skip]]\nname = "s"\ntool = "quiet"\nsubject = "digest"\n')
    _, warnings = found(tmp_path, text)
    assert any("tool 'quiet' has no sender and no detect rule" in w for w in warnings)


def test_explain_names_the_first_failure_of_every_rule_tried(tmp_path: Path) -> None:
    text = HEAD.replace('name = "first"', 'name = "first"\nsubject = "disk"') + """
[[detect]]
name = "cap"
sender = "@mon.example"
capture = [{ in = "subject", regex = 'host=(?P<host>\\w+)' }]
key = "k:{host}"
product_group = "servers"
alert_type = "Host Down"
resolved = ["RECOVERY"]

[[detect]]
name = "cond"
sender = "@mon.example"
conditions = [{ field = "header.X-Env", op = "equals", value = "prod" }]
product_group = "servers"
alert_type = "Host Down"
resolved = ["RECOVERY"]

[[detect]]
name = "hit"
sender = "@mon.example"
product_group = "servers"
alert_type = "Host Down"
resolved = ["RECOVERY"]

[[detect]]
name = "elsewhere"
sender = "@else.example"
product_group = "servers"
alert_type = "Host Down"
resolved = ["RECOVERY"]

[[account]]
name = "acc"
regex = '(\\w+)/'
"""
    rules = make_rules(tmp_path, text)
    lines = explain(msg("acme/ cpu", "a@mon.example", headers={"X-Env": "test"}), rules, CTX)
    assert lines[0] == "detect 10-test.toml:first: subject has none of 'disk'"
    assert lines[1].startswith("detect 10-test.toml:cap: capture ") and "did not match" in lines[1]
    assert lines[2] == "detect 10-test.toml:cond: condition header:X-Env equals 'prod' failed"
    assert lines[3].startswith("detect 10-test.toml:hit: matched (sender @mon.example")
    assert not lines[4].startswith("detect")  # first match wins: nothing after it is tried
    missed = explain(msg("acme/ cpu", "a@nowhere.example"), rules, CTX)
    assert missed == ["detect: 5 rule(s) not tried (the index: none of their senders, "
                      "domains or subject words is in the message)",
                      "skip and account rules are not tried: not automated"]
    assert lines[-1].startswith("account 10-test.toml:acc: found ACME-001 from subject regex")
    regular = explain(msg("hello", "someone@nowhere.example"), rules, CTX)
    assert regular[-1] == "skip and account rules are not tried: not automated"


def test_simulate_explain_prints_the_lines(tmp_path: Path, psa_sim, smtp_sink) -> None:
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)
    result = cli("simulate", "--config", str(config), "--json", "--explain",
                 str(SAMPLES / "20-regular-human.eml"))
    assert result.returncode == 0, result.stderr.decode()
    [first] = json.loads(result.stdout)
    assert first["explain"] and first["explain"][-1].endswith("not automated")
    table = cli("simulate", "--config", str(config), "--explain",
                str(SAMPLES / "01-nagios-problem.eml"))
    assert b"explain : detect 10-nagios.toml:" in table.stdout
