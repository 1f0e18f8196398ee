"""Alert key + correlation -> create, append or resolve, with storm control (SPEC §3.5).

Pure: no I/O and no clock. `decide()` gets the alert, an `AlertContext` read by the caller in
the same write transaction that records the result (open correlation, unsent calls of the key,
recent new alerts of the account), and the storm policy. All windows are measured on the
message's arrival time, so a backlog drained after an outage is judged as it happened.

The rules, in the order they apply:
1. An open correlation older than `max_open_age_days` is stale: it is closed, and this alert
   is treated as new.
2. A key grouped into a storm ticket appends to that ticket; its recovery is noted there, and
   the storm ticket resolves when the last grouped key has recovered. A storm append lists at
   most `STORM_APPEND_CHARS` characters of alert lines, so it is never cut at the summary
   limit.
3. RESOLVED: nothing open -> `nothing-to-resolve`; a resolve already waiting -> folded; else a
   RESOLVED call, held `resolve_delay` seconds (flap damping).
4. OPEN/UPDATE with a resolve waiting -> the resolve is cancelled (a flap) and this occurrence
   appends. With an open ticket: an unsent append within `coalesce_window` takes this occurrence
   (`coalesced`), else a new append is held for the window so later repeats fold into it.
5. No open ticket: over the account's (or global) cap of new alerts per window -> grouped into
   the account's storm ticket (opened if needed); else OPEN with a correlationId made here, so a
   retried create names the same ticket. A key whose ticket closed before re-opens as a new
   ticket that names the previous one (or appends to it, `reopen = "append"`).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Callable

from bridge.config import StormSettings
from bridge.models import Alert, AlertContext, CorrelationView, Decision, OutboxItem, Outcome

# A storm append lists one line per grouped alert; the PSA client cuts a summary at
# `psa.summary_max_chars` (default 8000). So one append takes at most this many lines of at most
# this many characters (6.4k), and the next grouped alert starts a new append: a 500-alert storm
# is listed in full over a dozen appends instead of being cut off after the first hundred.
# A storm append lists its alerts up to this many characters of summary, so the list fits
# the default 8000-character summary limit with room for the occurrence note; the next alert
# starts the next append. Lines are cut at STORM_LINE_CHARS.
STORM_APPEND_CHARS = 7000
STORM_LINE_CHARS = 160

DEFAULT_POLICY = StormSettings(coalesce_window=0.0, resolve_delay=0.0, account_cap=10**9,
                               global_cap=10**9)


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def psa_data(alert: Alert) -> dict[str, Any]:
    """The `data` object of a sync call, without credentials (the client adds those)."""
    data: dict[str, Any] = {
        "title": alert.title,
        "summary": alert.summary,
        "alertType": alert.alert_type,
        "accountId": alert.account_id,
        "productGroup": alert.product_group,
    }
    if alert.device:
        data["device"] = alert.device
    return data


def storm_key(account_id: str) -> str:
    return f"storm:{account_id}"


def decide(alert: Alert, ctx: AlertContext | CorrelationView | None,
           new_id: Callable[[], str] = new_correlation_id,
           policy: StormSettings = DEFAULT_POLICY) -> Decision:
    if not isinstance(ctx, AlertContext):  # the plain form: just the open correlation
        ctx = AlertContext(arrived_at=0.0, open_correlation=ctx)
    if alert.coalesce_window is not None:  # the detection rule's own window wins
        policy = policy.model_copy(update={"coalesce_window": alert.coalesce_window})
    t = ctx.arrived_at
    corr = ctx.open_correlation
    stale: str | None = None
    if corr is not None and t - corr.opened_at > policy.max_open_age_days * 86400:
        stale, corr = corr.correlation_id, None
    if ctx.storm_of_key is not None:
        return _grouped(alert, ctx, policy)
    if alert.status == "resolved":
        d = _resolve(alert, ctx, corr, policy)
    else:
        d = _fire(alert, ctx, corr, new_id, policy)
    if stale and d.close_correlation is None:
        d = replace(d, close_correlation=stale,
                    reason=f"{d.reason} (ticket {stale} was open longer than"
                           f" {policy.max_open_age_days:g} days: treated as stale)")
    return d


def _resolve(alert: Alert, ctx: AlertContext, corr: CorrelationView | None,
             policy: StormSettings) -> Decision:
    key = alert.alert_key
    if ctx.pending_resolve is not None:
        return Decision(outcome=Outcome.COALESCED, alert_key=key,
                        fold_into=ctx.pending_resolve.row_id,
                        reason="a resolve of this alert is already waiting: folded into it")
    if corr is None:
        return Decision(outcome=Outcome.NOTHING_TO_RESOLVE, alert_key=key,
                        reason="resolved, but no open ticket for this alert: nothing sent")
    cid = corr.correlation_id
    hold = flush = None
    if policy.resolve_delay > 0:
        hold = ctx.arrived_at + policy.resolve_delay
        if ctx.pending_update is not None:  # it goes first anyway (one key, in order)
            hold = max(hold, ctx.pending_update.due_at)
    elif ctx.pending_update is not None:
        # No flap damping wanted: the held append goes now, the resolve right after it.
        flush = ctx.pending_update.row_id
    item = OutboxItem("psa", key, psa_data(alert), "RESOLVED", cid, not_before=hold)
    if policy.resolve_delay > 0:
        # Closed when the resolve is sent, so a re-fire within the delay can still cancel it.
        return Decision(reason=f"resolves ticket {cid} after a {policy.resolve_delay:g} s"
                        " resolve delay (cancelled if the alert fires again)",
                        alert_key=key, outbox=(item,))
    return Decision(reason=f"resolves the open ticket {cid}", alert_key=key, outbox=(item,),
                    close_correlation=cid, flush_row=flush)


def _fire(alert: Alert, ctx: AlertContext, corr: CorrelationView | None,
          new_id: Callable[[], str], policy: StormSettings) -> Decision:
    key, t = alert.alert_key, ctx.arrived_at
    cancel, flap_note = None, ""
    if ctx.pending_resolve is not None and corr is not None:
        cancel = ctx.pending_resolve.row_id
        flap_note = " (it fired again within the resolve delay: the pending resolve is" \
                    " cancelled, the ticket stays open)"
    if corr is not None:
        cid = corr.correlation_id
        pending = ctx.pending_update
        if pending is not None and t - pending.first_arrived_at <= policy.coalesce_window:
            return Decision(outcome=Outcome.COALESCED, alert_key=key, fold_into=pending.row_id,
                            cancel_row=cancel,
                            reason=f"repeat within {policy.coalesce_window:g} s: folded into"
                                   f" the waiting append to ticket {cid}{flap_note}")
        data = psa_data(alert)
        if cancel is not None:
            data["summary"] = f"{alert.summary}\n\n[mailbridge] The alert fired again within" \
                              " the resolve delay (flapping); the ticket stays open."
        hold = t + policy.coalesce_window if policy.coalesce_window > 0 else None
        return Decision(reason=f"appends to the open ticket {cid}{flap_note}", alert_key=key,
                        cancel_row=cancel,
                        outbox=(OutboxItem("psa", key, data, "UPDATE", cid, not_before=hold),))
    if ctx.last_closed is not None and policy.reopen == "append":
        cid = ctx.last_closed.correlation_id
        data = psa_data(alert)
        # Said in the append too: a PSA that refuses appends to closed tickets (MSPCentric
        # answers 404) makes delivery create a new ticket from this payload, which then still
        # names the previous one.
        data["summary"] = f"{alert.summary}\n\n[mailbridge] This alert fired again after its" \
                          f" ticket (correlationId {cid}) was closed."
        return Decision(reason=f"fired again after ticket {cid} closed: appends to it"
                        " (reopen = append)", alert_key=key, reopen=cid,
                        outbox=(OutboxItem("psa", key, data, "UPDATE", cid),))
    over_account = ctx.new_alerts_account >= policy.account_cap
    over_global = ctx.new_alerts_global >= policy.global_cap
    if (over_account or over_global) and policy.storm_product_group and policy.storm_alert_type:
        return _join_storm(alert, ctx, new_id, policy,
                           "account" if over_account else "global")
    cid = new_id()
    data = psa_data(alert)
    previous = ctx.last_closed.correlation_id if ctx.last_closed else None
    if previous:
        data["summary"] = f"{alert.summary}\n\n[mailbridge] This alert fired again after its" \
                          f" previous ticket (correlationId {previous}) was closed."
    return Decision(reason="no open ticket for this alert: create one"
                    + (f" (follows closed ticket {previous})" if previous else ""),
                    alert_key=key, open_correlation=cid, previous_id=previous,
                    outbox=(OutboxItem("psa", key, data, "OPEN", cid),))


def _storm_alert(alert: Alert, policy: StormSettings, title: str, summary: str) -> dict[str, Any]:
    return {"title": title, "summary": summary, "alertType": policy.storm_alert_type,
            "accountId": alert.account_id, "productGroup": policy.storm_product_group}


def _storm_line(what: str, alert: Alert) -> str:
    """One line of a storm ticket's list, cut so that a full append fits a summary."""
    line = f"- {what} {alert.alert_key}: {alert.title}"
    return line if len(line) <= STORM_LINE_CHARS else line[:STORM_LINE_CHARS - 1] + "…"


def _join_storm(alert: Alert, ctx: AlertContext, new_id: Callable[[], str],
                policy: StormSettings, which: str) -> Decision:
    key = alert.alert_key
    line = _storm_line(alert.status.upper(), alert)
    storm = ctx.open_storm
    why = (f"{ctx.new_alerts_account} new alerts for account {alert.account_id}"
           if which == "account" else f"{ctx.new_alerts_global} new alerts overall")
    if storm is None:
        cid = new_id()
        skey = storm_key(alert.account_id)
        data = _storm_alert(alert, policy, f"Alert storm: {alert.account_id}",
                            f"[mailbridge] {why} within {policy.account_window:g} s: further"
                            f" alerts are grouped into this ticket until the storm subsides."
                            f"\n\nGrouped alerts:\n{line}")
        return Decision(reason=f"storm ({why}): opens storm ticket {cid} and groups {key}"
                        " into it", alert_key=key, open_correlation=cid, open_key=skey,
                        storm_join=cid, outbox=(OutboxItem("psa", skey, data, "OPEN", cid),))
    return _storm_append(alert, ctx, policy, storm, line, join=True,
                         reason=f"storm ({why}): {key} grouped into storm ticket"
                                f" {storm.correlation_id}")


def _storm_append(alert: Alert, ctx: AlertContext, policy: StormSettings,
                  storm: CorrelationView, line: str, join: bool, reason: str) -> Decision:
    key, skey = alert.alert_key, storm.alert_key
    pending = ctx.storm_pending_update
    join_id = storm.correlation_id if join else None
    if pending is not None and \
            pending.summary_chars + len(line) + 1 <= STORM_APPEND_CHARS and \
            ctx.arrived_at - pending.first_arrived_at <= \
            max(policy.coalesce_window, policy.account_window):
        return Decision(outcome=Outcome.COALESCED, alert_key=key, fold_into=pending.row_id,
                        fold_note=line, storm_join=join_id,
                        reason=f"{reason}; folded into its waiting append")
    data = _storm_alert(alert, policy, f"Alert storm: {alert.account_id}",
                        f"Grouped alerts:\n{line}")
    hold = ctx.arrived_at + max(policy.coalesce_window, 1.0)
    return Decision(reason=reason, alert_key=key, storm_join=join_id,
                    outbox=(OutboxItem("psa", skey, data, "UPDATE", storm.correlation_id,
                                       not_before=hold),))


def _grouped(alert: Alert, ctx: AlertContext, policy: StormSettings) -> Decision:
    storm = ctx.storm_of_key
    assert storm is not None
    key = alert.alert_key
    if alert.status != "resolved":
        return _storm_append(alert, ctx, policy, storm,
                             _storm_line(alert.status.upper(), alert), join=False,
                             reason=f"{key} is grouped into storm ticket"
                                    f" {storm.correlation_id}: appended there")
    if ctx.storm_members_open > 1:
        d = _storm_append(alert, ctx, policy, storm, _storm_line("RECOVERED", alert),
                          join=False, reason=f"{key} recovered; storm ticket"
                          f" {storm.correlation_id} stays open for"
                          f" {ctx.storm_members_open - 1} other alert(s)")
        return replace(d, storm_leave=storm.correlation_id)
    data = _storm_alert(alert, policy, f"Alert storm: {alert.account_id}",
                        f"Every grouped alert has recovered (last: {key}).")
    return Decision(reason=f"the last grouped alert recovered: resolves storm ticket"
                    f" {storm.correlation_id}", alert_key=key,
                    storm_leave=storm.correlation_id, close_correlation=storm.correlation_id,
                    outbox=(OutboxItem("psa", storm.alert_key, data, "RESOLVED",
                                       storm.correlation_id, not_before=(
                                           ctx.storm_pending_update.due_at
                                           if ctx.storm_pending_update else None)),))


def with_webhooks(decision: Decision, alert: Alert, targets: list[str]) -> Decision:
    """Each PSA call is mirrored to every configured webhook target, in its own ordered lane."""
    extra = []
    for item in decision.outbox if targets else ():
        if item.kind != "psa":
            continue
        fields = {"title": alert.title, "summary": alert.summary, "account_id": alert.account_id,
                  "product_group": alert.product_group, "alert_type": alert.alert_type,
                  "status": item.action, "alert_key": alert.alert_key,
                  "correlation_id": item.correlation_id, "device": alert.device or ""}
        for name in targets:
            extra.append(OutboxItem("webhook", f"webhook:{name}:{alert.alert_key}",
                                    {"target": name, "fields": fields}, item.action,
                                    item.correlation_id))
    return replace(decision, outbox=decision.outbox + tuple(extra)) if extra else decision
