"""`check` for the v2 constructs: what a rule can never use, reach or map.

Loading already refuses unknown and not-yet-decided fields; these are the warnings: captures no
part of the rule reads, status values a capture can take that the status map does not name
(they fall through to the phrases), a status `from` without a map, and skip rules of a tool
that nothing can detect. Shadowing (checks.check_shadowed) asks `can_fail_after_matcher`: a
rule whose captures or `require` can fail does not hide the rules after it.
"""

from __future__ import annotations

from typing import Sequence

from bridge.classify.account_rule import AccountRule
from bridge.classify.captures import group_alternatives
from bridge.classify.model import DetectRule, SkipRule
from bridge.classify.reader import TableReader
from bridge.classify.text import fold
from bridge.classify.tool import Tool


def can_fail_after_matcher(rule: DetectRule | SkipRule) -> bool:
    """True when the rule may not match a message its matcher accepts."""
    if rule.version == 1:
        return False
    if any(not c.optional for c in rule.captures):
        return True
    if isinstance(rule, SkipRule):
        return rule.only_tool is not None
    return bool(rule.require)


def used_fields(rule: DetectRule, account_rules: Sequence[AccountRule]) -> frozenset[str]:
    used: set[str] = set(rule.require)
    for t in (*rule.keys, rule.title, rule.summary, rule.device):
        if t is not None:
            used |= t.fields
    for m in (rule.alert_type_map, rule.product_group_map):
        if m is not None:
            used |= m.source.fields
    if rule.matcher.conditions is not None:
        used |= rule.matcher.conditions.fields
    spec = rule.spec
    if spec is not None:
        used.add(spec.where)
        used |= {tp.field for _, tp in spec.tables if tp.field}
        if spec.source is not None:
            used |= spec.source.fields
    used |= {c.field for c in rule.captures}
    used |= {a.field for a in account_rules if a.field is not None}
    return frozenset(used)


def check_detect_v2(rule: DetectRule, r: TableReader, tools: dict[str, Tool],
                    account_rules: Sequence[AccountRule]) -> None:
    tool = tools.get(rule.tool)
    inherited = tool.capture_names if tool is not None else frozenset()
    if rule.key_regex is not None:  # its groups make the key when no template does
        inherited |= frozenset(rule.key_regex.groupindex)
    unused = sorted(rule.capture_names - inherited - used_fields(rule, account_rules))
    if unused:
        r.problem(f"capture(s) {', '.join(unused)} used nowhere (key, title, summary, device, "
                  "conditions, status, maps, require or an account rule)", "capture", "warning")
    spec = rule.spec
    if spec is None or spec.source is None:
        return
    if spec.mapping is None:
        r.problem(f"status from = {spec.source.source!r} has no map: only the values open, "
                  "resolved and update are understood", "status", "warning")
        return
    names = spec.source.fields
    if len(names) != 1 or spec.source.source.strip() != "{" + next(iter(names)) + "}":
        return
    name = next(iter(names))
    for c in rule.captures:
        values = group_alternatives(c.regex.pattern, name)
        missing = sorted(v for v in values or () if fold(v) not in spec.mapping)
        if missing:
            r.problem(f"status map does not name {', '.join(map(repr, missing))}, which "
                      f"capture {name!r} can take: those fall through to the phrases "
                      f"(then default {spec.default!r})", "status", "warning")


def check_tool_skips(skips: Sequence[tuple[SkipRule, TableReader]],
                     detect: Sequence[DetectRule]) -> None:
    detected = {rule.tool for rule in detect}
    for rule, r in skips:
        if rule.only_tool is not None and rule.only_tool not in detected:
            r.problem(f"can never match: tool {rule.only_tool!r} has no sender and no detect "
                      "rule names it", "tool", "warning")
