"""An XML transaction ("API by Email", seed 002) -> per-action decisions and a response.

`read_transaction` (pure, run with the rest of the work on untrusted bytes) reads the document
with the hardened parser; `apply_transaction` runs in the message's write transaction. A
refused document, or a wrong or missing password, ends the message `rejected` with the reason and is never answered (an
attacker learns nothing). Each action becomes an alert decided like any other (so storm control
and ordering apply); its result is an event. The message's own outcome is `xml`. When the
document asks for a response and responses are enabled, a reply row goes into the outbox; it is
composed only when every action's call has settled, and goes to the address in the XML — never
to the sender, never to our own or auto-submitted mail, and at most `response_rate_per_hour`
times per address.
"""

from __future__ import annotations

from typing import Any

from bridge.classify.accounts import AccountsDirectory
from bridge.config import Settings
from bridge.decide.decider import Decider
from bridge.models import Alert, Decision, OutboxItem, Outcome, ParsedMessage
from bridge.parse.xmlapi import (Action, ActionResult, Transaction, XmlApiError, check_password,
                                 looks_like_transaction, parse_transaction)
from bridge.seams import StateStore


def read_transaction(parsed: ParsedMessage, settings: Settings) -> Transaction | Decision:
    """The pure half: the document, parsed and its password checked; a refusal is final."""
    xs = settings.xml_api
    part = next(p for p in parsed.xml_parts if looks_like_transaction(p))
    tx = parse_transaction(part, xs.max_bytes)
    if isinstance(tx, XmlApiError):
        return Decision(outcome=Outcome.REJECTED,
                        reason=f"XML transaction refused: {tx.code}: {tx.message}")
    if xs.password is not None and not check_password(tx, xs.password):
        return Decision(outcome=Outcome.REJECTED,
                        reason="XML transaction refused: wrong or missing password"
                               " (not answered)")
    return tx


def apply_transaction(tx: Transaction, parsed: ParsedMessage, settings: Settings,
                      store: StateStore, decider: Decider, message_ref: int,
                      arrived_at: float, accounts: AccountsDirectory | None) -> Decision:
    """Each action decided through the one decide path and recorded before the next, so a
    later action of the same document sees an earlier one's ticket. Runs in the message's
    write transaction."""
    results: list[dict[str, Any]] = []
    row_ids: list[int] = []
    for action in tx.actions:
        result, ids = _one_action(tx, action, settings, store, decider, message_ref,
                                  arrived_at, accounts)
        results.append(result)
        row_ids += ids
        store.event("xml-action", message_ref, tx.alert_key(action), result["outcome"],
                    action=action.kind, alert_id=action.alert_id,
                    error=result.get("error"), transaction=tx.transaction_id)
    replies = _reply(tx, parsed, settings, store, message_ref, results, row_ids, arrived_at)
    summary = ", ".join(f"{r['kind']} {r['alert_id']}: {r['outcome']}" for r in results)
    return Decision(outcome=Outcome.XML, outbox=replies,
                    reason=f"XML transaction {tx.transaction_id or ''} from {tx.application}:"
                           f" {summary}" + ("" if replies else "; no response sent"))


def _one_action(tx: Transaction, action: Action, settings: Settings, store: StateStore,
                decider: Decider, message_ref: int, arrived_at: float,
                accounts: AccountsDirectory | None) -> tuple[dict[str, Any], list[int]]:
    key = tx.alert_key(action)
    base = {"index": action.index, "kind": action.kind, "alert_id": action.alert_id}
    known = store.correlation_meta(key) or {}
    account = action.account or known.get("account_id")
    group = action.product_group or known.get("product_group")
    alert_type = action.alert_type or known.get("alert_type")
    title = action.title or known.get("title") or action.alert_id

    def error(code: str, message: str) -> tuple[dict[str, Any], list[int]]:
        return base | {"outcome": "rejected", "error": {"code": code, "message": message}}, []

    if action.kind != "resolve" or known:
        if not account or (accounts is not None and accounts.get(account) is None):
            return error("account-not-found", "the account is not in the accounts directory")
        # Integrators write names as they like: match the catalogue case-insensitively and
        # send the catalogue's own spelling.
        catalogue = {g.casefold(): (g, {t.casefold(): t for t in types})
                     for g, types in settings.catalogue_map().items()}
        entry = catalogue.get((group or "").casefold())
        if entry is None:
            return error("unknown-product-group", "product-group is missing or not in the"
                         " catalogue")
        group, types = entry
        alert_type = types.get((alert_type or "").casefold())
        if alert_type is None:
            return error("unknown-alert-type", "alert-type is missing or not listed for the"
                         " product group")
    alert = Alert(key, action.status, account or "", group or "", alert_type or "", title,
                  action.summary or title, device=action.device)
    d = decider.decide(store, alert, arrived_at)
    meta = {"account_id": alert.account_id, "product_group": alert.product_group,
            "alert_type": alert.alert_type, "title": alert.title[:255]}
    ids = store.record_effects(message_ref, d, arrived_at=arrived_at, alert_meta=meta)
    cid = next((i.correlation_id for i in d.outbox if i.kind == "psa"), None)
    outcome = d.outcome.value if d.outcome else "pending"
    return base | {"outcome": outcome, "correlation_id": cid, "rows": ids,
                   "reason": d.reason}, ids


def _reply(tx: Transaction, parsed: ParsedMessage, settings: Settings, store: StateStore,
           message_ref: int, results: list[dict[str, Any]], row_ids: list[int],
           arrived_at: float) -> tuple[OutboxItem, ...]:
    xs = settings.xml_api
    if not (tx.respond_to and xs.responses) or settings.smtp is None:
        return ()
    from bridge.deliver.mailcompose import loop_reason

    own = list(settings.routing.own_addresses)
    if loop_reason(parsed, own, settings.smtp.from_address) is not None:
        return ()
    if tx.respond_to.lower() in {a.lower() for a in own + [settings.smtp.from_address]}:
        return ()
    if store.recent_replies(tx.respond_to, arrived_at - 3600) >= xs.response_rate_per_hour:
        store.event("xml-reply-limited", message_ref, None, None, to=tx.respond_to)
        return ()
    payload = {"type": "reply", "to": tx.respond_to, "bcc": xs.bcc,
               "subject": f"mailbridge response {tx.transaction_id or ''}".strip(),
               "transaction_id": tx.transaction_id, "results": results, "rows": row_ids,
               "in_reply_to": parsed.message_id}
    return (OutboxItem("smtp", f"xml-reply:{message_ref}", payload, "reply"),)


def final_results(payload: dict[str, Any], rows: dict[int, dict[str, Any]]) -> \
        list[ActionResult] | None:
    """The per-action results once every call settled; None while one is still waiting."""
    import json

    out = []
    for r in payload.get("results", []):
        outcome, cid, err = r["outcome"], r.get("correlation_id"), None
        for row_id in r.get("rows", []):
            row = rows.get(row_id)
            if row is None:
                continue
            if row["state"] in ("pending", "in_flight"):
                return None
            if row["state"] == "dead":
                outcome, err = "failed", XmlApiError("psa-rejected", str(row["last_error"])[:300])
            elif row["result"]:
                outcome = json.loads(row["result"]).get("outcome", outcome)
            cid = row["correlation_id"] or cid
        if r.get("error"):
            err = XmlApiError(r["error"]["code"], r["error"]["message"])
        out.append(ActionResult(r["index"], r["kind"], r["alert_id"],
                                outcome if outcome != "pending" else "failed", cid, err))
    return out
