"""classify(): the precedence of SPEC §3.4 (RangerMSP's Email Connector), as a pure function.

1. Automated? Detection rules in order, first match wins; a trusted ATES token also makes a
   message automated. A rule may demand an authenticated sender.
2. Automated: skip rules — skipped mail is forwarded, not ticketed.
3. Automated, not skipped: the account — ATES CustomerID first, then account rules in order;
   none found means `unmatched`, forwarded for manual handling.
4. Not automated: an XML transaction when API-by-email is enabled.
5. Otherwise a regular email.
0. Safety: our own mail, bounces and auto-replies are rejected before any rule runs
   (`bridge.classify.safety`), so no rule can turn them into an alert or a forward.
Every step appends one readable line to `steps`, which `mailbridge simulate` prints. No I/O,
no clock, no exceptions for any ParsedMessage: outcomes are values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bridge.classify import authenticity, expect, safety
from bridge.classify.accounts import Account
from bridge.classify.alerts import build_alert, build_alert_v2
from bridge.classify.evaluate import evaluate
from bridge.classify.fields import RuleFields
from bridge.classify.model import DetectRule
from bridge.classify.ruleset import RuleSet
from bridge.classify.tool import Tool
from bridge.classify.tokens import trusted_token
from bridge.classify.view import MessageView
from bridge.models import Alert, Classification, Kind, ParsedMessage
from bridge.parse.xmlapi import looks_like_transaction


@dataclass(frozen=True)
class ClassifyContext:
    """What classification needs from the config; built once, shared by every message."""

    ates_sources: frozenset[str] = frozenset()
    ates_id: str | None = None
    ates_password: str | None = None
    authserv_ids: frozenset[str] = frozenset()
    trusted_relays: frozenset[str] = frozenset()
    trusted_hosts: frozenset[str] = frozenset()  # empty: the authserv-ids
    xml_password_set: bool = False  # a transaction's password authenticates its resolves
    xml_enabled: bool = False
    internal_address: str | None = None
    # Our own addresses (safety.own_addresses(settings)): mail from them is never an alert.
    own_addresses: frozenset[str] = frozenset()


def _result(kind: Kind, reason: str, steps: list[str], *, rule: str | None = None,
            alert: Alert | None = None, forward_to: str | None = None,
            account_how: str | None = None) -> Classification:
    return Classification(kind=kind, reason=reason, rule=rule, alert=alert,
                          forward_to=forward_to, account_how=account_how, steps=tuple(steps))


def _find_account(view: MessageView, rules: RuleSet, detect_rule: str | None,
                  steps: list[str], tool: str | None = None,
                  fields: RuleFields | None = None) -> tuple[Account, str] | None:
    cid = view.token_value("customer_id")
    if cid:
        hit = rules.accounts.find(cid, ("foreign-id", "record-id", "name"))
        if hit is not None:
            how = f"ATES CustomerID {cid!r} {hit[1]}"
            steps.append(f"account: {hit[0].id} from {how}")
            return hit[0], how
        steps.append(f"account: ATES CustomerID {cid!r} is in no account; trying account rules")
    for rule in rules.account_rules.candidates(view):
        if not rule.applies(detect_rule, tool):
            continue
        if rule.field is not None and fields is None:
            fields = RuleFields(view, detect_rule or "", tool or "")
        found = rule.find(view, rules.accounts, fields.get if fields is not None else None)
        if isinstance(found, tuple):
            steps.append(f"account: {found[0].id} {found[1]} by {rule.label}")
            return found[0], f"{found[1]} by {rule.label}"
        if found is not None:
            steps.append(f"account: {rule.label}: {found}")
    return None


def _mx_refuses(msg: ParsedMessage, view: MessageView, ctx: ClassifyContext, alert: Alert,
                by_password: bool, steps: list[str]) -> str | None:
    """A mail our MX marked as failing never resolves, whatever its rule says (a correct
    ATES password authenticates on its own)."""
    if alert.status != "resolved" or by_password:
        return None
    failed = authenticity.mx_failure(msg, view.sender, ctx.authserv_ids, ctx.trusted_relays,
                                     ctx.trusted_hosts)
    if failed is None:
        return None
    reason = f"a resolve from a sender our mail server did not authenticate: {failed}"
    steps.append(f"authenticate: {reason}")
    return reason


_NAMED_ADDRESS = re.compile(r"[^\s<>\"'@,;()]+@[^\s<>\"'@,;()]+")


def _impersonation(msg: ParsedMessage, rules: RuleSet, view: MessageView) -> str | None:
    """A display name that carries an address a detect rule would accept, on a mail from
    another address, poses as a monitored sender (`From: nagios@mon.example <x@evil.example>`).
    The address never counts; the pose is refused rather than passed on as regular mail."""
    for named in _NAMED_ADDRESS.findall(msg.sender_name or ""):
        named = named.strip(".").lower()
        if named == view.sender:
            continue
        posed = MessageView(replace(msg, sender=named), view.token, view.token_source)
        posers: tuple[DetectRule | Tool, ...] = (*rules.detect.candidates(posed),
                                                 *rules.tools.candidates(posed))
        for candidate in posers:
            if candidate.matcher.senders and candidate.matcher.match(posed) is not None:
                return (f"the From display name {named!r} is a sender of {candidate.label}, "
                        f"but the mail is from {view.sender or '(no address)'}")
    return None


_RESOLVE = tuple("<resolve".encode(enc) for enc in ("ascii", "utf-16-le", "utf-16-be"))


def _xml_resolve_refused(msg: ParsedMessage, view: MessageView, ctx: ClassifyContext,
                         steps: list[str]) -> str | None:
    """Without an XML password nothing but our MX vouches for a transaction's sender."""
    if ctx.xml_password_set or not any(m in part for part in msg.xml_parts for m in _RESOLVE):
        return None
    failed = authenticity.mx_failure(msg, view.sender, ctx.authserv_ids, ctx.trusted_relays,
                                     ctx.trusted_hosts)
    if failed is None:
        return None
    reason = ("an XML transaction with a resolve from a sender our mail server did not "
              f"authenticate: {failed}")
    steps.append(f"authenticate: {reason}")
    return reason


def classify(msg: ParsedMessage, rules: RuleSet, ctx: ClassifyContext) -> Classification:
    """Where the message goes, with the rule that said so and a step-by-step trace, and the
    `[[expect]]` instances it satisfies (matched on the message without its token)."""
    c = _classify(msg, rules, ctx)
    if not rules.expect:
        return c
    found = expect.hits(rules.expect, c, MessageView(msg))
    if not found:
        return c
    steps = c.steps + tuple(f"expect: satisfies {h.expectation}"
                            + (f" for {h.scope}" if h.scope else "") for h in found)
    return replace(c, expected=found, steps=steps)


def _classify(msg: ParsedMessage, rules: RuleSet, ctx: ClassifyContext) -> Classification:
    steps: list[str] = []
    unsafe = safety.unsafe_reason(msg, ctx.own_addresses)
    if unsafe is not None:
        steps.append(f"safety: {unsafe}; never an alert, never forwarded or answered")
        return _result(Kind.REJECTED, unsafe, steps)
    token, source, bad_token = trusted_token(msg, ctx.ates_sources, ctx.ates_id,
                                             ctx.ates_password, steps)
    if bad_token is not None:
        steps.append(f"reject: {bad_token}")
        return _result(Kind.REJECTED, bad_token, steps)
    view = MessageView(msg, token, source)

    # 1. automated?
    rule: DetectRule | None = None
    fields: RuleFields | None = None
    for candidate in rules.detect.candidates(view):
        if candidate.version == 1:
            why = candidate.matcher.match(view)
        else:
            why, fields, _ = evaluate(candidate, view)
        if why is not None:
            rule = candidate
            steps.append(f"detect: matched {rule.label} ({why})")
            break
    tool = rule.tool or None if rule is not None else None
    if rule is None:
        for t in rules.tools.candidates(view):
            why = t.matcher.match(view)
            if why is not None:
                tool = t.name
                steps.append(f"detect: no rule matched; mail from tool {t.label} ({why})")
                break
    authenticated = False
    if rule is not None and rule.require_authentication:
        ok, detail = authenticity.verify(msg, view.sender, ctx.authserv_ids, ctx.trusted_relays,
                                         ctx.trusted_hosts)
        if not ok:
            reason = f"sender not authenticated: {detail}"
            steps.append(f"authenticate: {reason}")
            return _result(Kind.REJECTED, reason, steps, rule=rule.label)
        steps.append(f"authenticate: {detail}")
        authenticated = True
    if rule is None and token is None and tool is None:
        posing = _impersonation(msg, rules, view)
        if posing is not None:
            steps.append(f"reject: {posing}")
            return _result(Kind.REJECTED, posing, steps)
        steps.append("detect: no rule matched; not automated")
        # 4. XML transaction?  5. regular.
        # Only XML that names our transaction root counts: a human mail with an .xml
        # attachment is regular mail, not a refused transaction.
        if any(looks_like_transaction(part) for part in msg.xml_parts):
            if ctx.xml_enabled:
                refused = _xml_resolve_refused(msg, view, ctx, steps)
                if refused is not None:
                    return _result(Kind.REJECTED, refused, steps)
                steps.append("xml: the message carries an XML transaction")
                return _result(Kind.XML, "XML transaction (API by email)", steps)
            steps.append("xml: carries an XML transaction, but API by email is disabled")
        steps.append("regular: not automated, not an XML transaction")
        return _result(Kind.REGULAR, "not automated and not an XML transaction", steps)
    if rule is None and tool is None:
        steps.append(f"detect: no rule matched; automated by its ATES token from {source!r}")
    label = rule.label if rule is not None else None

    # 2. skip?
    for skip in rules.skip.candidates(view):
        why = skip.matcher.match(view) if skip.version == 1 else evaluate(skip, view, tool)[0]
        if why is not None:
            forward = skip.forward_to or ctx.internal_address
            steps.append(f"skip: matched {skip.label} ({why}); forward to {forward or 'nobody'}")
            return _result(Kind.SKIPPED, f"skip rule {skip.label} ({why})", steps,
                           rule=skip.label, forward_to=forward)
    steps.append("skip: no rule matched")

    # 3. account
    found = _find_account(view, rules, rule.name if rule is not None else None, steps, tool,
                          fields)
    if rule is None and tool is not None:
        reason = f"mail from tool {tool} matched none of its detect rules"
        steps.append(f"route: {reason}; forward to {ctx.internal_address or 'nobody'}")
        return _result(Kind.UNMATCHED, reason, steps, forward_to=ctx.internal_address,
                       account_how=found[1] if found else None)
    if found is None:
        steps.append(f"account: not found; forward to {ctx.internal_address or 'nobody'}")
        return _result(Kind.UNMATCHED, "automated, but no account found", steps, rule=label,
                       forward_to=ctx.internal_address)
    account, how = found
    if rule is None:
        reason = (f"automated by an ATES token from {source!r}, but no [[detect]] rule gives "
                  "its product group and alert type")
        steps.append(f"route: {reason}")
        return _result(Kind.UNMATCHED, reason, steps, forward_to=ctx.internal_address,
                       account_how=how)
    alert = build_alert(rule, view, account, steps) if fields is None else \
        build_alert_v2(rule, view, account, fields, steps)
    # A sender `verify` authenticated passes `mx_failure` too: the same checks of the same
    # headers (an aligned pass, or a trusted relay), not worth running twice.
    refused = None if authenticated else _mx_refuses(
        msg, view, ctx, alert, token is not None and bool(ctx.ates_password), steps)
    if refused is not None:
        return _result(Kind.REJECTED, refused, steps, rule=label)
    reason = f"{alert.status} {alert.product_group}/{alert.alert_type} alert for {account.id}"
    return _result(Kind.ALERT, reason, steps, rule=label, alert=alert, account_how=how)
