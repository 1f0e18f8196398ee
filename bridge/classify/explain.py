"""`simulate --explain`: for every rule the message was tried against, why it did not match.

A pure function over the same rule set and context `classify` uses: it walks the candidates
in classify's order — detect rules, then the tools' senders, skip rules, account rules — and
says for each the first part that failed (sender, subject phrase, a capture, a required
capture, a condition), or that it matched, where classify would stop. Rules the index rules
out (no sender, domain or subject word of theirs in the message) are counted, not listed.
"""

from __future__ import annotations

from bridge.classify import safety
from bridge.classify.engine import ClassifyContext
from bridge.classify.evaluate import evaluate
from bridge.classify.fields import RuleFields
from bridge.classify.ruleset import RuleSet
from bridge.classify.tokens import trusted_token
from bridge.classify.view import MessageView
from bridge.models import ParsedMessage


def explain(msg: ParsedMessage, rules: RuleSet, ctx: ClassifyContext) -> list[str]:
    """One line per rule considered, in the order classify tries them."""
    if safety.unsafe_reason(msg, ctx.own_addresses) is not None:
        return ["no rule is tried: the safety check rejects the message first"]
    token, source, bad = trusted_token(msg, ctx.ates_sources, ctx.ates_id, ctx.ates_password,
                                       [])
    if bad is not None:
        return [f"no rule is tried: {bad}"]
    view = MessageView(msg, token, source)
    lines: list[str] = []
    detected, tool, fields = None, None, None
    tried = 0
    for rule in rules.detect.candidates(view):
        tried += 1
        why, fields, failed = evaluate(rule, view)
        if why is not None:
            lines.append(f"detect {rule.label}: matched ({why})")
            detected, tool = rule.name, rule.tool or None
            break
        lines.append(f"detect {rule.label}: {failed}")
    if detected is None and tried < len(rules.detect):
        lines.append(f"detect: {len(rules.detect) - tried} rule(s) not tried (the index: "
                     "none of their senders, domains or subject words is in the message)")
    if detected is None:
        for t in rules.tools.candidates(view):
            why, failed = t.matcher.check(view)
            lines.append(f"tool {t.label}: " + (f"matched ({why})" if why is not None
                                                  else failed))
            if why is not None:
                tool = t.name
                break
    if detected is None and tool is None and token is None:
        return lines + ["skip and account rules are not tried: not automated"]
    for skip in rules.skip.candidates(view):
        why, _, failed = evaluate(skip, view, tool)
        if why is not None:
            return lines + [f"skip {skip.label}: matched ({why})"]
        lines.append(f"skip {skip.label}: {failed}")
    cid = view.token_value("customer_id")
    if cid:
        hit = rules.accounts.find(cid, ("foreign-id", "record-id", "name"))
        if hit is not None:
            return lines + [f"account: ATES CustomerID {cid!r} names {hit[0].id}"]
        lines.append(f"account: ATES CustomerID {cid!r} is in no account")
    for account in rules.account_rules.candidates(view):
        if not account.applies(detected, tool):
            lines.append(f"account {account.label}: not for this mail's rule or tool")
            continue
        if account.field is not None and fields is None:
            fields = RuleFields(view, detected or "", tool or "")
        found = account.find(view, rules.accounts, fields.get if fields is not None else None)
        if isinstance(found, tuple):
            return lines + [f"account {account.label}: found {found[0].id} {found[1]}"]
        lines.append(f"account {account.label}: {found or 'does not apply'}")
    return lines
