"""Alert key + correlation -> create, append or resolve, with storm control (SPEC §3.5).

Pure: no I/O and no clock. `decide()` gets the alert, an `AlertContext` read by the caller in
the same write transaction that records the result (open correlation, unsent calls of that
correlation, recent new alerts of the account), and the storm policy. All windows are measured
on the message's arrival time and are half-open ([first, first + window)), so a backlog drained
after an outage is judged as it happened and a window of 0 holds and folds nothing.

The rules, in the order they apply:
1. An open correlation older than `max_open_age_days` is stale, and one whose held RESOLVED was
   due before this alert arrived has (by arrival time) closed: either is closed now and this
   alert is treated as new.
2. A key grouped into a storm ticket appends to that ticket; its recovery is noted there, and
   the storm ticket resolves when the last grouped key has recovered (`stormgroup.py`).
3. RESOLVED: nothing open -> `nothing-to-resolve`; the ticket's OPEN still held (minimum
   duration, group wait) -> both mails `damped`, no ticket; a resolve of this ticket already
   waiting -> folded; else a RESOLVED call, held `resolve_delay` seconds (flap damping).
4. OPEN/UPDATE with this ticket's resolve waiting -> the resolve is cancelled (a flap) and this
   occurrence appends. With an open ticket: an unsent append of it that started less than
   `coalesce_window` ago takes this occurrence (`coalesced`), else a new append is held for the
   window so later repeats fold into it.
5. No open ticket: a new alert. Over the account's (or, in a burst, the global) cap, or in a
   burst while the account's storm ticket is open -> listed on the storm ticket (opened if
   needed, taking over the burst's held OPENs). Else OPEN with a correlationId made here, sent
   at once — unless the account is in a burst (held `group_wait`) or the rule sets a minimum
   duration (held that long). A key whose ticket closed before re-opens as a new ticket that
   names the previous one (or appends to it, `reopen = "append"`).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Callable

from bridge.config import StormSettings
from bridge.decide.stormgroup import (STORM_APPEND_CHARS, STORM_LINE_CHARS, grouped, join_storm,
                                      storm_key)
from bridge.models import Alert, AlertContext, CorrelationView, Decision, OutboxItem, Outcome, \
    TicketCall

__all__ = ["DEFAULT_POLICY", "STORM_APPEND_CHARS", "STORM_LINE_CHARS", "decide",
           "new_correlation_id", "storm_key", "with_webhooks"]

# The plain create / append / resolve table: no holds, no caps, no bursts.
DEFAULT_POLICY = StormSettings(coalesce_window=0.0, resolve_delay=0.0, account_cap=10**9,
                               global_cap=10**9, burst_threshold=10**9)


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def decide(alert: Alert, ctx: AlertContext | CorrelationView | None,
           new_id: Callable[[], str] = new_correlation_id,
           policy: StormSettings = DEFAULT_POLICY) -> Decision:
    if not isinstance(ctx, AlertContext):  # the plain form: just the open correlation
        ctx = AlertContext(arrived_at=0.0, open_correlation=ctx)
    if alert.coalesce_window is not None:  # the detection rule's own window wins
        policy = policy.model_copy(update={"coalesce_window": alert.coalesce_window})
    t = ctx.arrived_at
    corr = ctx.open_correlation
    closing: str | None = None
    note = ""
    if corr is not None and t - corr.opened_at > policy.max_open_age_days * 86400:
        closing, note = corr.correlation_id, (
            f" (ticket {corr.correlation_id} was open longer than"
            f" {policy.max_open_age_days:g} days: treated as stale)")
        ctx = replace(ctx, open_correlation=None, pending_update=None, pending_resolve=None,
                      held_open=None)
    elif corr is not None and ctx.pending_resolve is not None and \
            t >= _due(ctx.pending_resolve.held_until, ctx.pending_resolve.due_at):
        # Its resolve was due before this mail arrived: by arrival time the ticket is closed,
        # whether or not delivery has got round to it yet.
        closing, note = corr.correlation_id, (
            f" (ticket {corr.correlation_id} counts as closed: its resolve was due before"
            f" this arrived)")
        ctx = replace(ctx, open_correlation=None, pending_update=None, pending_resolve=None,
                      held_open=None, last_closed=corr)
    if ctx.storm_of_key is not None:
        return grouped(alert, ctx, policy)
    if alert.status == "resolved":
        d = _resolve(alert, ctx, policy)
    else:
        d = _fire(alert, ctx, new_id, policy)
    if closing and d.close_correlation is None:
        d = replace(d, close_correlation=closing, reason=d.reason + note)
    return d


def _due(held_until: float | None, due_at: float) -> float:
    return held_until if held_until is not None else due_at


def _resolve(alert: Alert, ctx: AlertContext, policy: StormSettings) -> Decision:
    key, corr = alert.alert_key, ctx.open_correlation
    if corr is None:
        return Decision(outcome=Outcome.NOTHING_TO_RESOLVE, alert_key=key,
                        reason="resolved, but no open ticket for this alert: nothing sent")
    cid = corr.correlation_id
    held = ctx.held_open  # its held_until is its arrival when it was not held
    if held is not None and held.held_until is not None and ctx.arrived_at < held.held_until:
        return Decision(outcome=Outcome.DAMPED, alert_key=key, damp=cid,
                        reason=f"healed {ctx.arrived_at - corr.opened_at:g} s after it began,"
                               " before its ticket was due (minimum duration or group wait):"
                               " no ticket")
    if ctx.pending_resolve is not None:
        return Decision(outcome=Outcome.COALESCED, alert_key=key,
                        fold_into=ctx.pending_resolve.row_id,
                        reason=f"a resolve of ticket {cid} is already waiting: folded into it")
    hold = flush = None
    if policy.resolve_delay > 0:
        hold = ctx.arrived_at + policy.resolve_delay
        if ctx.pending_update is not None:  # it goes first anyway (one key, in order)
            hold = max(hold, _due(ctx.pending_update.held_until, ctx.pending_update.due_at))
    elif ctx.pending_update is not None:
        # No flap damping wanted: the held append goes now, the resolve right after it.
        flush = ctx.pending_update.row_id
    item = OutboxItem("psa", key, TicketCall.of(alert).payload(), "RESOLVED", cid,
                      not_before=hold)
    if policy.resolve_delay > 0:
        # Closed when the resolve is sent, so a re-fire within the delay can still cancel it.
        return Decision(reason=f"resolves ticket {cid} after a {policy.resolve_delay:g} s"
                        " resolve delay (cancelled if the alert fires again)",
                        alert_key=key, outbox=(item,))
    return Decision(reason=f"resolves the open ticket {cid}", alert_key=key, outbox=(item,),
                    close_correlation=cid, flush_row=flush)


def _fire(alert: Alert, ctx: AlertContext, new_id: Callable[[], str],
          policy: StormSettings) -> Decision:
    key, t, corr = alert.alert_key, ctx.arrived_at, ctx.open_correlation
    if corr is not None:
        cid = corr.correlation_id
        cancel, flap_note = None, ""
        if ctx.pending_resolve is not None:
            cancel = ctx.pending_resolve.row_id
            flap_note = " (it fired again within the resolve delay: the pending resolve is" \
                        " cancelled, the ticket stays open)"
        pending = ctx.pending_update
        if pending is not None and t - pending.first_arrived_at < policy.coalesce_window:
            return Decision(outcome=Outcome.COALESCED, alert_key=key, fold_into=pending.row_id,
                            cancel_row=cancel,
                            reason=f"repeat within {policy.coalesce_window:g} s: folded into"
                                   f" the waiting append to ticket {cid}{flap_note}")
        call = TicketCall.of(alert)
        if cancel is not None:
            call = replace(call, summary=f"{alert.summary}\n\n[mailbridge] The alert fired"
                           " again within the resolve delay (flapping); the ticket stays open.")
        hold = t + policy.coalesce_window if policy.coalesce_window > 0 else None
        return Decision(reason=f"appends to the open ticket {cid}{flap_note}", alert_key=key,
                        cancel_row=cancel,
                        outbox=(OutboxItem("psa", key, call.payload(), "UPDATE", cid,
                                           not_before=hold),))
    if ctx.last_closed is not None and policy.reopen == "append":
        cid = ctx.last_closed.correlation_id
        # Said in the append too: a PSA that refuses appends to closed tickets (MSPCentric
        # answers 404) makes delivery create a new ticket from this payload, which then still
        # names the previous one.
        call = replace(TicketCall.of(alert), summary=f"{alert.summary}\n\n[mailbridge] This"
                       f" alert fired again after its ticket (correlationId {cid}) was closed.")
        return Decision(reason=f"fired again after ticket {cid} closed: appends to it"
                        " (reopen = append)", alert_key=key, reopen=cid,
                        outbox=(OutboxItem("psa", key, call.payload(), "UPDATE", cid),))
    return _new(alert, ctx, new_id, policy)


def _new(alert: Alert, ctx: AlertContext, new_id: Callable[[], str],
         policy: StormSettings) -> Decision:
    """A new alert: its own ticket (at once, or held), or a line on the storm ticket."""
    key, t = alert.alert_key, ctx.arrived_at
    burst = ctx.burst_alerts >= policy.burst_threshold
    over_account = ctx.new_alerts_account >= policy.account_cap
    # The global cap only groups accounts that burst themselves: a quiet account's first
    # alert is never held or grouped because others storm.
    over_global = burst and ctx.new_alerts_global >= policy.global_cap
    if over_account or over_global or (burst and ctx.open_storm is not None):
        if over_account:
            why = f"{ctx.new_alerts_account} new alerts for account {alert.account_id}"
        elif over_global:
            why = f"{ctx.new_alerts_global} new alerts overall"
        else:
            why = f"{ctx.burst_alerts} new alerts for account {alert.account_id} in a burst"
        return join_storm(alert, ctx, new_id, policy, why, burst)
    cid = new_id()
    call = TicketCall.of(alert)
    previous = ctx.last_closed.correlation_id if ctx.last_closed else None
    if previous:
        call = replace(call, summary=f"{alert.summary}\n\n[mailbridge] This alert fired again"
                       f" after its previous ticket (correlationId {previous}) was closed.")
    hold = max(alert.min_duration, policy.group_wait if burst else 0.0)
    why_held = ""
    if hold > 0:
        why_held = (f"; held {hold:g} s (" + ("minimum duration" if hold == alert.min_duration
                                              else f"a burst of {ctx.burst_alerts} new alerts"
                                                   f" within {policy.burst_window:g} s: group"
                                                   " wait") + ")")
    return Decision(reason="no open ticket for this alert: create one"
                    + (f" (follows closed ticket {previous})" if previous else "") + why_held,
                    alert_key=key, open_correlation=cid, previous_id=previous,
                    outbox=(OutboxItem("psa", key, call.payload(), "OPEN", cid,
                                       not_before=t + hold if hold > 0 else None),))


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
            # Held as its PSA call is, so a damped or grouped alert notifies nobody.
            extra.append(OutboxItem("webhook", f"webhook:{name}:{alert.alert_key}",
                                    {"target": name, "fields": fields}, item.action,
                                    item.correlation_id, not_before=item.not_before))
    return replace(decision, outbox=decision.outbox + tuple(extra)) if extra else decision
