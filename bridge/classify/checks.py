"""Whole-set checks that no single rule can make about itself.

Run after every rule compiled: duplicate names, routes outside the catalogue, template fields
that do not exist, detection rules that an earlier rule makes unreachable, account rules that
the accounts directory makes impossible, and warnings for likely mistakes (a rule without
status phrases of its own, a sender wildcard that accepts half the internet). Errors stop a
load; warnings are reported by `mailbridge check` and kept on the RuleSet.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from bridge.classify.account_rule import AccountRule
from bridge.classify.accounts import AccountsDirectory
from bridge.classify.checks_v2 import can_fail_after_matcher
from bridge.classify.fieldmap import pairs
from bridge.classify.fields import DECIDED, is_builtin
from bridge.classify.matchers import INDEXED
from bridge.classify.model import DetectRule, Rule, SkipRule
from bridge.classify.problems import Severity
from bridge.classify.reader import TableReader
from bridge.classify.templates import BUILTIN_FIELDS

Loaded = tuple[Rule, TableReader]


def check_names(loaded: Sequence[Loaded]) -> None:
    seen: dict[str, TableReader] = {}
    for rule, r in loaded:
        if r.name is None:
            continue
        first = seen.get(r.name)
        if first is not None:
            r.problem(f"duplicate rule name (first defined at {first.file}:{first.line()})",
                      "name")
        else:
            seen[r.name] = r


def check_catalogue(product_group: str, alert_type: str, r: TableReader,
                    catalogue: Mapping[str, frozenset[str]], mapped: bool = False) -> None:
    """A product group and alert type the PSA knows (both are routing, SPEC §3.6);
    `mapped`: one pair a v2 rule's maps can produce."""
    if not product_group:
        return
    via = " (a value of its map)" if mapped else ""
    if product_group not in catalogue:
        known = ", ".join(sorted(catalogue)) or "(the catalogue is empty)"
        r.problem(f"product group {product_group!r}{via} is not in the catalogue; "
                  f"known: {known}", "product_group")
    elif alert_type and alert_type not in catalogue[product_group]:
        known = ", ".join(sorted(catalogue[product_group]))
        r.problem(f"alert type {alert_type!r}{via} is not in product group "
                  f"{product_group!r}; known: {known}", "alert_type")


def check_detect(rule: DetectRule, r: TableReader,
                 catalogue: Mapping[str, frozenset[str]]) -> None:
    mapped = rule.product_group_map is not None or rule.alert_type_map is not None
    for pg, at in sorted(pairs(rule.product_group, rule.product_group_map, rule.alert_type,
                               rule.alert_type_map)):
        if pg:
            check_catalogue(pg, at, r, catalogue, mapped)
    if rule.version == 1:  # v2 checks its fields while reading (bridge/classify/v2read.py)
        captures = rule.capture_names
        for clash in sorted(captures & BUILTIN_FIELDS):
            r.problem(f"regex group {clash!r} would hide the built-in field of that name")
        allowed = BUILTIN_FIELDS | captures
        for key in ("title", "summary", "device", "key"):
            template = getattr(rule, key)
            unknown = sorted(template.fields - allowed) if template is not None else []
            if unknown:
                r.problem(f"{key} uses unknown field(s) {', '.join(unknown)}; fields are "
                          f"{', '.join(sorted(allowed))}", key)
    if not rule.own_status:
        r.problem("no status phrases of its own (open/resolved/update): the global "
                  "[status] phrases decide", severity="warning")
    if not rule.can_resolve:
        r.problem("no resolved phrases: its alerts can never resolve", severity="warning")


def check_matcher(rule: DetectRule | SkipRule, r: TableReader) -> None:
    for s in rule.matcher.senders:
        if s.kind == "wildcard" and s.literal_labels < 2:
            r.problem(f"sender wildcard {s.text!r} is very broad: anyone can send from a "
                      "matching address", "sender", "warning")
        if s.kind == "regex" and not s.value.endswith(("$", "\\Z", "\\z")):
            r.problem(f"sender {s.text} is not anchored at the end ($): it also matches "
                      "addresses that merely contain it, such as …@its.domain.evil.example",
                      "sender", "warning")
    for p in rule.matcher.subject.phrases:
        if len(p.folded) < 3:
            r.problem(f"subject phrase {p.text!r} is very short and may match by accident",
                      "subject", "warning")


def _sender_sig(rule: DetectRule | SkipRule) -> frozenset[str] | None:
    """Domains a rule's senders are confined to (None: unconfined), to skip hopeless pairs."""
    senders = rule.matcher.senders
    if not senders or any(s.kind not in INDEXED for s in senders):
        return None
    return frozenset(s.value.rpartition("@")[2] for s in senders)


def check_shadowed(rules: Sequence[tuple[DetectRule | SkipRule, TableReader]],
                   severity: Severity) -> None:
    sigs = [_sender_sig(rule) for rule, _ in rules]
    for j, (later, r) in enumerate(rules):
        for i in range(j):
            a, b = sigs[i], sigs[j]
            if a is not None and (b is None or not b <= a):
                continue
            earlier, er = rules[i]
            if earlier.matcher.covers(later.matcher) and not can_fail_after_matcher(earlier):
                r.problem(f"unreachable: every message it matches is matched first by "
                          f"{earlier.label} ({er.file}:{er.line()})",
                          severity=severity)
                break


def check_account_rule(rule: AccountRule, r: TableReader, accounts: AccountsDirectory | None,
                       detect_names: frozenset[str]) -> None:
    if rule.for_rules is not None:
        unknown = sorted(rule.for_rules - detect_names)
        if unknown and not rule.for_rules & detect_names:
            r.problem(f"can never match: for_rules names no [[detect]] rule "
                      f"{', '.join(map(repr, unknown))}", "for_rules")
        elif unknown:
            r.problem(f"for_rules names unknown [[detect]] rule(s) "
                      f"{', '.join(map(repr, unknown))}", "for_rules")
    if accounts is None:
        return
    if rule.source == "sender":
        if not accounts.has("sender"):
            r.problem("can never match: no account in the accounts directory lists a sender "
                      "address or domain", "from")
        return
    if not any(accounts.has(by) for by in rule.search):
        r.problem(f"can never match: no account has a {' or '.join(rule.search)} to find",
                  "search")


def check_account_field(rule: AccountRule, r: TableReader, captured: frozenset[str]) -> None:
    """A v2 account rule reading a field: a built-in one, or a capture some rule makes."""
    if rule.field is None or is_builtin(rule.field) and rule.field not in DECIDED | {
            "account", "account_name"}:
        return
    if rule.field not in captured:
        r.problem(f"can never match: from = {rule.field!r} is neither a field known before "
                  "the account nor a capture of any detect rule", "from")
