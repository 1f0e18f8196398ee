"""Property: arbitrary v2 rule sets over arbitrary messages never raise, and a set `check`
accepts never fails at run time on a missing field, an unknown template name or an unmapped
status value (docs/rules-v2-format.md: unknown names are load errors, a missing field renders
"", an unmapped status value falls through to the phrases and then `default`, a map has a
required default)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.classify import RuleSetError, check_ruleset, classify, load_ruleset
from bridge.classify.explain import explain
from bridge.classify.fields import V2_BUILTINS, is_builtin
from bridge.classify.model import DetectRule
from bridge.classify.ruleset import RuleSet
from bridge.models import Kind, ParsedMessage
from tests.test_rules_property import contexts, messages
from tests.test_rules_support import ACCOUNTS_CSV, CATALOGUE

q = json.dumps  # a TOML basic string (JSON's escapes are TOML's)


def rare(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """Mostly valid choices, sometimes a mistake `check` must refuse."""
    return st.sampled_from(valid * 6 + invalid)


# Every generated detect rule starts with these optional captures, so most names resolve.
BASE = ("{ in = \"subject\", regex = '(?P<cust>\\w*)/?(?P<host>\\w*)/?(?P<service>\\S*)', "
        "optional = true }, { in = \"body\", regex = 'State: (?P<state>OK|WARNING|CRITICAL)', "
        "optional = true }, { in = \"subject\", regex = '(?P<kind>port|device)', optional = true }")
REGEXES = rare(["(?P<host>\\w+)/(?P<service>\\S+)", "x(?P<host>\\d*)", ".*", "(?P<cust>[^/]+)/",
                "(a+)+$", "State: (?P<state>\\w+)"], ["(", "(?P<subject>x)"])
FIELDS = rare(["subject", "body", "header.X-Host", "host", "state", "sender", "to",
               "token.customer_id", "subject_key"], ["nowhere", "account"])
TEMPLATES = rare(["{host}", "{host}:{service}", "{subject_key}", "{header.X-Host}", "{state}",
                  "{token_alert_id}", "x", "{tool}/{rule}", "{kind}"],
                 ["{unknown}", "{status}"])
LATE = rare(["{account}:{alert_type}", "{device}", "{status}", "{host}"], ["{unknown}"])
OPS = rare(["equals", "contains", "regex", "starts_with", "not_contains"], ["bogus"])
MODES = rare(["word", "substring", "starts_with", "ends_with"], ["regex"])
PHRASES = ["OK", "PROBLEM", "Cleared:", "is UP", "RECOVERY", "-> CRIT", "Résolu"]
SENDERS = rare(["nagios@monitor.msp.example", "*@*.msp.example"],
               ["@msp.example", "zabbix@zabbix.msp.example"])

capture = st.builds(lambda f, rx, opt, cs: "{ in = %s, regex = '%s', optional = %s, "
                    "case_sensitive = %s }" % (q(f), rx, str(opt).lower(), str(cs).lower()),
                    rare(["subject", "body", "header.X-Host"], ["host"]), REGEXES,
                    st.integers(0, 3).map(bool), st.booleans())
leaf = st.builds(lambda f, op, v, cs: "{ field = %s, op = %s, value = %s, case_sensitive = %s }"
                 % (q(f), q(op), q(v), str(cs).lower()), FIELDS,
                 OPS, st.sampled_from(PHRASES + ["^a", "acme"]), st.booleans())
conditions = st.recursive(leaf, lambda inner: st.builds(
    lambda kind, items: "{ %s = [%s] }" % (kind, ", ".join(items)),
    st.sampled_from(["all", "any"]), st.lists(inner, min_size=1, max_size=3)), max_leaves=6
).map(lambda c: c if c.startswith(("{ all", "{ any")) else f"[{c}]")
phrase = st.one_of(st.sampled_from(PHRASES).map(q), st.builds(
    lambda p, m, f, cs: "{ phrase = %s, mode = %s, in = %s, case_sensitive = %s }"
    % (q(p), q(m), q(f), str(cs).lower()), st.sampled_from(PHRASES), MODES,
    st.sampled_from(["subject", "body", "both", "state", "header.X-State"]), st.booleans()))
status_map = st.dictionaries(st.sampled_from(["OK", "CRITICAL", "up", "down"]),
                             rare(["open", "resolved", "update"], ["closed"]),
                             max_size=3).map(lambda d: "{ " + ", ".join(
                                 f"{k} = {q(v)}" for k, v in d.items()) + " }")


@st.composite
def status_table(draw: st.DrawFn) -> str:
    lines = ["[detect.status]"]
    if draw(st.booleans()):
        order = draw(st.permutations(["open", "resolved", "update"]))
        lines.append("order = [" + ", ".join(map(q, order)) + "]")
    if draw(st.booleans()):
        lines.append(f"from = {q(draw(TEMPLATES))}")
        if draw(st.booleans()):
            lines.append(f"map = {draw(status_map)}")
    for name in ("open", "resolved", "update"):
        if draw(st.booleans()):
            lines.append(f"{name} = [" + ", ".join(draw(st.lists(phrase, max_size=3))) + "]")
    if draw(st.booleans()):
        lines.append(f"in = {q(draw(st.sampled_from(['subject', 'body', 'both', 'state'])))}")
    if draw(st.booleans()):
        lines.append(f"default = {q(draw(st.sampled_from(['open', 'resolved', 'update'])))}")
    return "\n".join(lines) + "\n"


def routed(draw: st.DrawFn, key: str, values: list[str]) -> str:
    if draw(st.booleans()):
        return f"{key} = {q(draw(st.sampled_from(values)))}"
    mapping = ", ".join(f"{k} = {q(draw(st.sampled_from(values)))}"
                        for k in draw(st.lists(st.sampled_from(["port", "device", "ok"]),
                                               max_size=2, unique=True)))
    return (f"{key} = {{ from = {q(draw(TEMPLATES))}, map = {{ {mapping} }}, "
            f"default = {q(draw(st.sampled_from(values)))} }}")


@st.composite
def rule_sets(draw: st.DrawFn) -> str:
    out = ["format = 2"]
    tool = draw(st.booleans())
    if tool:
        out += ["[[tool]]", 'name = "t"', f"sender = {q(draw(SENDERS))}",
                'product_group = "servers"', 'alert_type = "Service Critical"']
        if draw(st.booleans()):
            out.append("capture = [" + ", ".join(draw(st.lists(capture, max_size=2))) + "]")
        if draw(st.booleans()):
            out.append('account = { from = "subject", regex = \'(\\w+)/\' }')
    for i in range(draw(st.integers(1, 3))):
        out += ["[[detect]]", f'name = "d{i}"']
        if tool and draw(st.booleans()):
            out.append('tool = "t"')
        if draw(st.booleans()):
            out.append(f"sender = {q(draw(SENDERS))}")
        if draw(st.integers(0, 3)) == 0:
            out.append(f"subject = {q(draw(st.sampled_from(PHRASES)))}")
        out.append("capture = [" + ", ".join([BASE, *draw(st.lists(capture, max_size=2))]) + "]")
        if draw(st.integers(0, 3)) == 0:
            out.append(f"conditions = {draw(conditions)}")
        if draw(st.integers(0, 9)) == 0:
            out.append(routed(draw, "product_group", ["servers", "network"]))
            out.append(routed(draw, "alert_type", ["Service Critical", "Interface Down"]))
        else:
            out.append('product_group = "servers"')
            out.append(routed(draw, "alert_type", ["Service Critical", "Host Down"]))
        if draw(st.booleans()):
            out.append("key = [" + ", ".join(map(q, draw(st.lists(
                st.one_of(TEMPLATES, LATE), min_size=1, max_size=3)))) + "]")
        for k in ("title", "summary", "device"):
            if draw(st.booleans()):
                out.append(f"{k} = {q(draw(st.one_of(TEMPLATES, LATE)))}")
        if draw(st.booleans()):
            out.append(f"body = {q(draw(st.sampled_from(['auto', 'text', 'html'])))}")
        if draw(st.booleans()):
            out.append(draw(status_table()))
    if draw(st.booleans()):
        out += ["[[skip]]", 'name = "s"', f"subject = {q(draw(st.sampled_from(PHRASES)))}"]
        if tool and draw(st.booleans()):
            out.append('tool = "t"')
    source = draw(st.sampled_from(["subject", "header.X-Host", "cust"]))
    out += ["[[account]]", 'name = "a"', f"from = {q(source)}"]
    if source == "subject":
        out.append("regex = '(\\w+)/'")
    return "\n".join(out) + "\n"


def _load(text: str) -> tuple[RuleSet | None, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "10-gen.toml").write_text(text, encoding="utf-8")
        (Path(tmp) / "accounts.csv").write_text(ACCOUNTS_CSV, encoding="utf-8")
        problems = check_ruleset(rules, Path(tmp) / "accounts.csv", CATALOGUE)
        errors = [str(p) for p in problems if p.is_error]
        try:
            ruleset = load_ruleset(rules, Path(tmp) / "accounts.csv", CATALOGUE)
        except RuleSetError:
            assert errors, "load refused a set that check accepted"
            return None, errors
        assert not errors
        return ruleset, errors


def _fields_are_known(rule: DetectRule) -> None:
    """Everything a loaded rule can render is built in or captured: no unknown name."""
    known = V2_BUILTINS | rule.capture_names
    templates = [*rule.keys, rule.title, rule.summary, rule.device]
    templates += [m.source for m in (rule.alert_type_map, rule.product_group_map) if m]
    if rule.spec is not None and rule.spec.source is not None:
        templates.append(rule.spec.source)
    for t in templates:
        if t is not None:
            assert all(f in known or is_builtin(f) for f in t.fields), (rule.name, t.source)


SUBJECTS = ["acme/web01/HTTP PROBLEM is CRITICAL", "acme/web01/HTTP RECOVERY is OK",
            "acme/port down", "acme/device Cleared: x", "1002/x OK -> CRIT", "umb-9/db Résolu"]
targeted = st.builds(
    lambda subject, sender, body, host: ParsedMessage(
        subject=subject, sender=sender, body=body,
        headers={"x-host": (host,), "x-state": ("up",)}),
    st.sampled_from(SUBJECTS), st.sampled_from(["nagios@monitor.msp.example",
                                                "zabbix@zabbix.msp.example", "a@b.example"]),
    st.sampled_from(["State: OK", "State: CRITICAL", "", "x" * 50]),
    st.sampled_from(["Acme Corp", "web01", ""]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), st.lists(st.one_of(messages, targeted), min_size=1, max_size=4), contexts)
def test_v2_rule_sets_never_raise_and_accepted_sets_never_fail(
        text: str, msgs: list[ParsedMessage], ctx) -> None:
    ruleset, _ = _load(text)
    if ruleset is None:
        return
    for rule in ruleset.detect.rules:
        _fields_are_known(rule)
    for m in msgs:
        c = classify(m, ruleset, ctx)
        explain(m, ruleset, ctx)
        if c.kind is Kind.ALERT:
            assert c.alert is not None
            assert c.alert.status in ("open", "resolved", "update")
            assert c.alert.alert_type in CATALOGUE[c.alert.product_group]
            assert c.alert.alert_key
