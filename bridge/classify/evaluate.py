"""Does one detect or skip rule match one message — and if not, what failed first?

v1 rules are their matcher. A v2 rule runs its matcher's cheap parts (ATES source, senders,
subject phrases), then its captures (a required one that does not match fails the rule), the
captures it requires, and last its conditions, which may read the captures. The RuleFields
made here travel on to the alert, so no capture runs twice. Pure; every step bounded.
"""

from __future__ import annotations

from bridge.classify.captures import run_captures
from bridge.classify.fields import RuleFields
from bridge.classify.model import DetectRule, SkipRule
from bridge.classify.view import MessageView

Outcome = tuple[str | None, RuleFields | None, str]  # (why, fields, first failure)


def rule_fields(rule: DetectRule | SkipRule, view: MessageView) -> RuleFields:
    strip = None
    if isinstance(rule, DetectRule):
        strip = rule.spec.strip if rule.spec is not None else rule.status.strip
    return RuleFields(view, rule.name, rule.tool, rule.body, strip)


def evaluate(rule: DetectRule | SkipRule, view: MessageView,
             detected_tool: str | None = None) -> Outcome:
    """(why, fields, "") when the rule matches; (None, None, what failed first) otherwise."""
    if rule.version == 1:
        why, failed = rule.matcher.check(view)
        return why, None, failed
    if isinstance(rule, SkipRule) and rule.only_tool is not None \
            and rule.only_tool != detected_tool:
        return None, None, f"mail not detected by tool {rule.only_tool!r}"
    why, failed = rule.matcher.check(view, conditions=False)
    if why is None:
        return None, None, failed
    fields = rule_fields(rule, view)
    failed = run_captures(rule.captures, fields) or ""
    if failed:
        return None, None, failed
    if isinstance(rule, DetectRule):
        missing = sorted(n for n in rule.require if not fields.captures.get(n))
        if missing:
            return None, None, f"required capture(s) {', '.join(missing)} empty"
    parts = [why] if why else []
    if rule.captures:
        parts.append(f"{len(rule.captures)} capture(s)")
    group = rule.matcher.conditions
    if group is not None:
        desc = group.test(fields)
        if desc is None:
            return None, None, f"condition {group.first_failure(fields)} failed"
        parts.append(desc)
    return " AND ".join(parts) or "its tool's mail", fields, ""
