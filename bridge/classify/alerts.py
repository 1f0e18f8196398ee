"""Turn an automated, account-matched message into an Alert: status, key, title, summary.

Fields for the templates are the message's (subject, sender, body, date …), the account's,
the trusted ATES token's, and the named captures of the rule's regexes. The alert key follows
SPEC §3.5: ATES source+AlertID, else source+TicketID, else the rule's `key` template (when
every field it uses is present), else `key_regex` captures, else account + alert type + the
subject with its status phrases removed — so "PROBLEM: x" and "RECOVERY: x" share a key.
"""

from __future__ import annotations

import hashlib

from bridge.classify.accounts import Account
from bridge.classify.fields import RuleFields, subject_identity
from bridge.classify.model import DetectRule
from bridge.classify.templates import FieldValues
from bridge.classify.text import nfc
from bridge.classify.view import MessageView
from bridge.models import Alert
from bridge.parse.ates import cut_tokens

MAX_KEY = 200


def _bounded(key: str) -> str:
    """Keys live in an index: cap them, keeping them unique with a hash of the rest."""
    key = nfc(key)
    if len(key) <= MAX_KEY:
        return key
    return key[:180] + "#" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _secrets(view: MessageView) -> tuple[str, ...]:
    return tuple(t.pw for t in view.msg.ates if t.pw)


def fields_for(rule: DetectRule, view: MessageView, account: Account) -> dict[str, str]:
    msg = view.msg
    secrets = _secrets(view)
    fields = {
        "subject": view.subject, "sender": view.sender, "sender_name": nfc(msg.sender_name or ""),
        # Templates never see the ATES token: its PW would reach the PSA ticket.
        "body": cut_tokens(msg.body or "", secrets),
        "date": msg.date.isoformat() if msg.date else "",
        "message_id": msg.message_id or "", "account": account.id, "account_name": account.name,
        "alert_type": rule.alert_type, "product_group": rule.product_group, "rule": rule.name,
        "token_source": view.token_source or "",
    }
    for attr in ("customer_id", "device_id", "alert_id", "ticket_id"):
        fields[f"token_{attr}"] = view.token_value(attr) or ""
    pairs = [(rx, view.subject) for rx in rule.subject_regex]
    pairs += [(rx, view.body) for rx in rule.body_regex]
    if rule.key_regex is not None:
        pairs.append((rule.key_regex, view.subject))
    for rx, text in pairs:
        m = rx.search(text)
        if m is not None:
            fields.update({k: cut_tokens(nfc(v), secrets) for k, v in m.groupdict().items() if v})
    return fields


def alert_key(rule: DetectRule, view: MessageView, account: Account,
              fields: FieldValues, steps: list[str], alert_type: str | None = None) -> str:
    alert_type = rule.alert_type if alert_type is None else alert_type
    for attr, label, kind in (("alert_id", "AlertID", "alert"), ("ticket_id", "TicketID", "ticket")):
        value = view.token_value(attr)
        if value:
            ref = getattr(view.token, attr)
            src = (ref.source or view.token_source or "").strip()
            steps.append(f"key: ATES {label} {value!r} from {src!r}")
            return _bounded(f"ates:{src}:{kind}:{value}")
    templates = rule.keys if rule.version == 2 else (rule.key,) if rule.key is not None else ()
    for n, template in enumerate(templates, start=1):
        missing = template.missing(fields)
        if not missing:
            steps.append(f"key: template {template.source!r}")
            return _bounded(template.render(fields))
        steps.append(f"key: template {template.source!r} lacks {', '.join(missing)}; " + (
            "using the default key" if n == len(templates) else "trying the next"))
    if not templates and rule.key_regex is not None:
        m = rule.key_regex.search(view.subject)
        if m is not None:
            parts = [v for v in (m.groupdict().values() if rule.key_regex.groupindex
                                 else m.groups()) if v] or [m.group(0)]
            steps.append(f"key: key_regex captured {parts!r}")
            ident = ":".join(nfc(p).casefold() for p in parts)
            return _bounded(f"{account.id}:{alert_type}:{ident}")
        steps.append("key: key_regex did not match the subject; using the default key")
    ident = subject_identity(view.fsubject, rule.spec.strip if rule.spec is not None
                             else rule.status.strip)
    steps.append("key: account + alert type + subject without status phrases")
    return _bounded(f"{account.id}:{alert_type}:{ident}")


def build_alert_v2(rule: DetectRule, view: MessageView, account: Account, fields: RuleFields,
                   steps: list[str]) -> Alert:
    """A v2 rule's alert: maps, then status, device, key, title and summary, each reading the
    fields decided before it (docs/rules-v2-format.md)."""
    assert rule.spec is not None
    fields.decided.update(account=account.id, account_name=account.name)
    routed = {"product_group": rule.product_group, "alert_type": rule.alert_type}
    for name, fmap in (("product_group", rule.product_group_map),
                       ("alert_type", rule.alert_type_map)):
        if fmap is not None:
            routed[name], how = fmap.lookup(fields)
            steps.append(f"{name.replace('_', ' ')}: {routed[name]} ({how})")
    fields.decided.update(routed)
    status, why = rule.spec.decide(fields)
    steps.append(f"status: {status} ({why})")
    fields.decided["status"] = status
    device = view.token_value("device_id") or ""
    if not device and rule.device is not None:
        device = nfc(rule.device.render(fields))
    fields.decided["device"] = device
    key = alert_key(rule, view, account, fields, steps, routed["alert_type"])
    secrets = fields.secrets
    title = cut_tokens(nfc(rule.title.render(fields)) or view.subject
                       or f"{routed['alert_type']} alert", secrets)
    return Alert(alert_key=key, status=status, account_id=account.id,
                 product_group=routed["product_group"], alert_type=routed["alert_type"],
                 title=title, summary=cut_tokens(rule.summary.render(fields), secrets).strip(),
                 device=device or None, ticket_ref=view.token_value("ticket_id"),
                 coalesce_window=rule.coalesce_window, min_duration=rule.min_duration)


def build_alert(rule: DetectRule, view: MessageView, account: Account,
                steps: list[str]) -> Alert:
    fields = fields_for(rule, view, account)
    where = rule.status_in
    text = {"subject": view.fsubject, "body": view.fbody,
            "both": view.fsubject + "\n" + view.fbody}[where]
    status, phrase = rule.status.decide(text)
    steps.append(f"status: {status} (phrase {phrase!r} in {where})" if phrase
                 else f"status: open (no status phrase in {where})")
    device = view.token_value("device_id") or ""
    if not device and rule.device is not None:
        device = nfc(rule.device.render(fields))
    fields["device"], fields["status"] = device, status
    key = alert_key(rule, view, account, fields, steps)
    secrets = _secrets(view)
    title = cut_tokens(nfc(rule.title.render(fields)) or view.subject
                       or f"{rule.alert_type} alert", secrets)
    return Alert(alert_key=key, status=status, account_id=account.id,
                 product_group=rule.product_group, alert_type=rule.alert_type, title=title,
                 summary=cut_tokens(rule.summary.render(fields), secrets).strip(),
                 device=device or None,
                 ticket_ref=view.token_value("ticket_id"),
                 coalesce_window=rule.coalesce_window, min_duration=rule.min_duration)
