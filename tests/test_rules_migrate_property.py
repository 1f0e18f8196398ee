"""`rules migrate` keeps outcomes for arbitrary v1 rule sets, not only the shipped ones.

Hypothesis writes v1 files from small pools of senders, phrases, regexes, key templates and
status lists — so rules overlap, share senders (and become tools), capture or fail to — and
classifies arbitrary messages from the same pools with the v1 set and its migration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bridge.classify import RuleSetError, classify, load_ruleset
from bridge.classify import tomlwrite
from bridge.classify.migrate import migrate_files
from bridge.models import Classification
from tests.test_rules_support import ACCOUNTS_CSV, CATALOGUE, CTX, msg, token
from tests.test_rules_v2_outcomes import outcome

SENDERS = ["mon@a.example", "@b.example", "x@b.example", "*@*.c.example"]
ADDRESSES = ["mon@a.example", "x@b.example", "y@b.example", "z@q.c.example", "o@d.example"]
PHRASES = ["PROBLEM", "RECOVERY", "Alert", "is Down", "OK", "[Failed]", "Service Alert:"]
SUBJECT_REGEXES = [r"is (?P<state>\w+)\W*$", r"(?P<host>\w+)/(?P<svc>\w+)",
                   r"Alert: (?P<host>\S+)", r"on (?P<tool>\w+)"]   # `tool`: a v2 field
BODY_REGEXES = [r"Host:\s*(?P<host>\S+)", r"ID:\s*(?P<id>\d+)"]
KEY_REGEXES = [r"(?P<host>\w+)/(?P<svc>\w+)", r"Alert: (\S+)"]
TEMPLATES = ["k:{host}", "k:{host}:{svc}", "k:{id}", "k:{account}:{state}", "{subject}",
             "k:{tool}"]
WORDS = [*PHRASES, "[acme]", "[1002]", "web01/HTTP", "is CRITICAL", "Alert: db1", "Re:",
         "disk", "Cleared", "on zabbix"]
BODY_LINES = ["Host: h1", "ID: 42", "nothing here", "Host: web01"]
GROUPS = {"state", "host", "svc", "id", "tool"}
CONDITIONS = [{"field": "header:X-Mailer", "op": "starts_with", "value": "Forti"},
              {"field": "body", "op": "contains", "value": "host"},
              {"field": "subject", "op": "regex", "value": r"^\[\w+\]"}]
ROUTES = [("servers", "Host Down"), ("servers", "Service Critical"), ("backup", "Backup Failed")]


@st.composite
def detect_rule(draw: st.DrawFn, index: int, family: str | None) -> dict[str, object]:
    """`family`: a sender every rule of the file shares (so they become a tool)."""
    rule: dict[str, object] = {"name": f"r{index}"}
    if family or draw(st.booleans()):
        rule["sender"] = family or draw(st.sampled_from(SENDERS))
    if draw(st.integers(0, 3)) == 0:
        rule["ates_source"] = draw(st.sampled_from(["Datto RMM", "*"]))
    if draw(st.integers(0, 3)) == 0:
        rule["conditions"] = draw(st.lists(st.sampled_from(CONDITIONS), min_size=1,
                                           max_size=2, unique_by=lambda c: c["value"]))
        rule["match"] = draw(st.sampled_from(["all", "any"]))
    if draw(st.booleans()) and (len(rule) == 1 or not family or index < 2) or len(rule) == 1:
        rule["subject"] = draw(st.lists(st.sampled_from(PHRASES), min_size=1, max_size=2))
    rule["product_group"], rule["alert_type"] = ROUTES[0] if family else draw(
        st.sampled_from(ROUTES))
    captured: set[str] = set()
    for key, pool in (("subject_regex", SUBJECT_REGEXES), ("body_regex", BODY_REGEXES)):
        regexes = draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))
        if regexes:
            rule[key] = regexes
            captured |= {g for r in regexes for g in GROUPS if f"<{g}>" in r}
    if draw(st.booleans()):
        rule["key_regex"] = draw(st.sampled_from(KEY_REGEXES))
        captured |= {g for g in GROUPS if f"<{g}>" in str(rule["key_regex"])}
    usable = [t for t in TEMPLATES
              if all(f in captured | {"account", "subject"} for f in
                     (*GROUPS, "account", "subject") if f"{{{f}}}" in t)]
    if usable and draw(st.booleans()):
        rule["key"] = draw(st.sampled_from(usable))
    for status in ("open", "resolved", "update"):
        if draw(st.integers(0, 3)) == 0:
            rule[status] = draw(st.lists(st.sampled_from(PHRASES), max_size=2))
    if draw(st.booleans()):
        rule["status_in"] = draw(st.sampled_from(["subject", "body", "both"]))
    if draw(st.booleans()):
        rule["title"] = "T {subject}"
    if draw(st.booleans()):
        rule["device"] = draw(st.sampled_from(["{sender}", "dev-{rule}"]))
    if draw(st.integers(0, 3)) == 0:
        rule["summary"] = "S {body}"
    if draw(st.integers(0, 3)) == 0:
        rule["min_duration"] = draw(st.sampled_from([0, 60]))
    if draw(st.integers(0, 3)) == 0:
        rule["coalesce_window"] = 30
    if draw(st.integers(0, 3)) == 0:
        rule["require_authentication"] = True
    return rule


@st.composite
def rule_file(draw: st.DrawFn) -> str:
    count = draw(st.integers(1, 5))
    family = draw(st.sampled_from([None, None, "mon@a.example", "@b.example"]))
    lines = ["# generated"]
    if draw(st.booleans()):
        lines += ["[status]", *tomlwrite.assignment("open", draw(
            st.lists(st.sampled_from(PHRASES), max_size=2)))]
    for i in range(count):
        lines += ["", "[[detect]]"] + [
            line for k, v in draw(detect_rule(i, family)).items() for line in tomlwrite.assignment(k, v)]
    if draw(st.booleans()):
        skip = {"name": "s", "subject": draw(st.sampled_from(PHRASES))}
        if draw(st.booleans()):
            skip["sender"] = draw(st.sampled_from(SENDERS))
        lines += ["", "[[skip]]"] + [l for k, v in skip.items() for l in tomlwrite.assignment(k, v)]
    lines += ["", "[[account]]", 'name = "acc"', r"regex = '\[(?P<account>\w+)\]'",
              "", "[[account]]", 'name = "by-sender"', 'from = "sender"']
    return "\n".join(lines) + "\n"


MESSAGE = st.builds(
    lambda words, sender, body, mailer, tokens: msg(
        " ".join(words), sender, "\n".join(body),
        headers={"X-Mailer": mailer} if mailer else None, ates=tokens),
    st.lists(st.sampled_from(WORDS), max_size=6), st.sampled_from(ADDRESSES),
    st.lists(st.sampled_from(BODY_LINES), max_size=3),
    st.sampled_from(["", "FortiGate 7", "Outlook"]),
    st.sampled_from([(), (token(),), (token(alert=None),)]))


def full(c: Classification) -> tuple[object, ...]:
    a = c.alert
    extra = (a.device, a.summary, a.coalesce_window, a.min_duration, a.ticket_ref) if a else ()
    return (*outcome(c), *extra, c.reason if c.alert is None else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_file(), st.lists(MESSAGE, min_size=1, max_size=8))
def test_migrated_sets_classify_like_their_v1_originals(text: str, messages: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = Path(tmp) / "v1", Path(tmp) / "v2"
        v1.mkdir()
        v2.mkdir()
        accounts = Path(tmp) / "accounts.csv"
        accounts.write_text(ACCOUNTS_CSV.replace("@acme.example", "@b.example"),
                            encoding="utf-8")
        (v1 / "10-x.toml").write_text(text, encoding="utf-8")
        migrated = migrate_files([("10-x.toml", text)])[0].text
        (v2 / "10-x.toml").write_text(migrated, encoding="utf-8")
        try:
            old = load_ruleset(v1, accounts, CATALOGUE)
        except RuleSetError:
            event("not a valid v1 set")
            return                      # e.g. an unreachable rule
        new = load_ruleset(v2, accounts, CATALOGUE)
        if "[[tool]]" in migrated:
            event("with a tool" + (" and its sender" if "\nsender" in migrated.split(
                "[[detect]]")[0] else ""))
        for m in messages:
            a, b = classify(m, old, CTX), classify(m, new, CTX)
            event(f"outcome {a.kind.value}")
            assert full(a) == full(b), (m.subject, m.sender, m.body, a.steps, b.steps,
                                              (v2 / "10-x.toml").read_text())
