"""Storm tickets: one ticket per storm group (an account, or an account and product group,
`storm_group`) for a burst of new alerts.

Pure, like `core.py` (`decide()`), which hands over here when a new alert belongs on a storm ticket
(docs/storm.md, "Bursts and the storm ticket"). A storm ticket's summary is a compact list: a
short header, then one block per section — an alert type for failing alerts, `Recovered`, and
the alerts of the burst that got tickets of their own before the storm began — with one line
per alert key. `add_storm_line` keeps that shape when a line is folded into a held row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from bridge.config import StormSettings
from bridge.models import Alert, AlertContext, CorrelationView, Decision, HeldOpen, OutboxItem, \
    Outcome, PendingCall, TicketCall

# A storm row lists at most this many characters of lines: the PSA client cuts a summary at
# `psa.summary_max_chars` (default 8000), and the occurrence note needs room too. A line is cut
# at STORM_LINE_CHARS, so one row lists at least ~60 alerts, typically ~110.
STORM_APPEND_CHARS = 7000
STORM_LINE_CHARS = 120
RECOVERED = "Recovered"
OWN_TICKETS = "Ticketed on their own before the storm"


def storm_key(account_id: str, product_group: str | None = None) -> str:
    """The key of a storm group's ticket: `storm:<account>` (or `storm:<account>:<group>`)."""
    return f"storm:{account_id}" + (f":{product_group}" if product_group else "")


def group_of(alert: Alert, policy: StormSettings) -> str | None:
    """The product group that is part of the alert's storm group, if storms are per group."""
    return alert.product_group if policy.storm_group == "product_group" else None


def storm_title(count: int, account_id: str, product_group: str | None = None) -> str:
    what = f"{account_id} ({product_group})" if product_group else account_id
    return f"Alert storm: {count} alert{'s' if count != 1 else ''} for {what}"


def storm_line(alert_key: str, title: str, prefix: str = "", suffix: str = "") -> str:
    """One line of a storm list, cut so that a full row fits a summary."""
    line = f"- {prefix}{alert_key}: {title}"
    room = STORM_LINE_CHARS - len(suffix)
    return (line if len(line) <= room else line[:room - 1] + "…") + suffix


def add_storm_line(summary: str, section: str, line: str) -> str:
    """`summary` with `line` appended to the block of `section` (a new block if none)."""
    blocks = summary.split("\n\n") if summary else []
    heading = f"{section}:"
    for i, block in enumerate(blocks):
        if block.split("\n", 1)[0] == heading:
            blocks[i] = f"{block}\n{line}"
            return "\n\n".join(blocks)
    return "\n\n".join([*blocks, f"{heading}\n{line}"])


def _routing(policy: StormSettings, first_group: str, first_type: str) -> tuple[str, str]:
    """The configured storm routing, or else that of the storm's first alert (so the storm
    ticket routes where those alerts would)."""
    if policy.storm_product_group and policy.storm_alert_type:
        return policy.storm_product_group, policy.storm_alert_type
    return first_group, first_type


def _payload(account_id: str, routing: tuple[str, str], title: str,
             summary: str) -> dict[str, str]:
    """A storm ticket's call: routed by (product group, alert type), never naming a device."""
    return TicketCall(title, summary, alert_type=routing[1], account_id=account_id,
                      product_group=routing[0]).payload()


def _pack(header: str, entries: list[tuple[str, str]]) -> list[str]:
    """Summaries of at most STORM_APPEND_CHARS: the header and (section, line) entries."""
    out: list[str] = []
    current = header
    for section, line in entries:
        grown = add_storm_line(current, section, line)
        if len(grown) > STORM_APPEND_CHARS and current != header and current:
            out.append(current)
            grown = add_storm_line("", section, line)
        current = grown
    out.append(current)
    return out


def open_storm(alert: Alert, ctx: AlertContext, new_id: Callable[[], str],
               policy: StormSettings, why: str, burst: bool) -> Decision:
    """The first alert of a storm opens the storm ticket and takes over the burst's held
    OPENs; the ticket lists them, and the burst's own tickets, by name."""
    key, t = alert.alert_key, ctx.arrived_at
    absorbed: tuple[HeldOpen, ...] = tuple(sorted(ctx.held_opens, key=lambda h: h.arrived_at))
    if absorbed:
        routing = _routing(policy, absorbed[0].product_group, absorbed[0].alert_type)
    else:
        routing = _routing(policy, alert.product_group, alert.alert_type)
    count = len(absorbed) + 1
    entries = [(h.alert_type, storm_line(h.alert_key, h.title)) for h in absorbed]
    entries.append((alert.alert_type, storm_line(key, alert.title)))
    entries += [(OWN_TICKETS, storm_line(o.alert_key, o.title,
                                         suffix=f" (ticket {o.correlation_id})"))
                for o in ctx.own_tickets]
    header = (f"[mailbridge] {why} within {policy.account_window:g} s: further new alerts of"
              f" {alert.account_id} are listed on this ticket until the storm subsides.")
    group = group_of(alert, policy)
    cid, skey = new_id(), storm_key(alert.account_id, group)
    # Sent when the first OPEN it took over would have gone, so the alerts that arrive
    # meanwhile are listed in it; a storm that starts without a burst goes at once.
    if absorbed:
        hold: float | None = min(h.due_at for h in absorbed)
    else:
        hold = t + policy.group_wait if burst and policy.group_wait > 0 else None
    title = storm_title(count, alert.account_id, group)
    items = [OutboxItem("psa", skey, _payload(alert.account_id, routing, title, summary),
                        "OPEN" if i == 0 else "UPDATE", cid, not_before=hold)
             for i, summary in enumerate(_pack(header, entries))]
    taken = f", taking over {len(absorbed)} held alert(s)" if absorbed else ""
    return Decision(reason=f"storm ({why}): opens storm ticket {cid} and groups {key} into"
                           f" it{taken}", alert_key=key, open_correlation=cid, open_key=skey,
                    storm_join=cid, absorb=absorbed, outbox=tuple(items))


def storm_append(alert: Alert, ctx: AlertContext, policy: StormSettings,
                 storm: CorrelationView, section: str, line: str, join: bool,
                 reason: str) -> Decision:
    """A line for the storm ticket: folded into its held row while that has room and is
    within the window, else a new held append."""
    key, skey, t = alert.alert_key, storm.alert_key, ctx.arrived_at
    pending = ctx.storm_pending_update
    join_id = storm.correlation_id if join else None
    size = ctx.storm_size + (1 if join else 0)
    title = storm_title(size, alert.account_id, group_of(alert, policy))
    routing = ctx.storm_routing or _routing(policy, alert.product_group, alert.alert_type)
    window = max(policy.coalesce_window, policy.account_window)
    if pending is not None and \
            pending.summary_chars + len(line) + len(section) + 3 <= STORM_APPEND_CHARS and \
            t - pending.first_arrived_at < window:
        return Decision(outcome=Outcome.COALESCED, alert_key=key, fold_into=pending.row_id,
                        fold_note=line, fold_section=section,
                        fold_title=title if join else None, storm_join=join_id,
                        reason=f"{reason}; folded into its waiting {pending.action}")
    data = _payload(alert.account_id, routing, title, add_storm_line("", section, line))
    hold = t + max(policy.coalesce_window, 1.0)
    return Decision(reason=reason, alert_key=key, storm_join=join_id,
                    outbox=(OutboxItem("psa", skey, data, "UPDATE", storm.correlation_id,
                                       not_before=hold),))


def join_storm(alert: Alert, ctx: AlertContext, new_id: Callable[[], str],
               policy: StormSettings, why: str, burst: bool) -> Decision:
    if ctx.open_storm is None:
        return open_storm(alert, ctx, new_id, policy, why, burst)
    return storm_append(alert, ctx, policy, ctx.open_storm, alert.alert_type,
                        storm_line(alert.alert_key, alert.title), join=True,
                        reason=f"storm ({why}): {alert.alert_key} grouped into storm ticket"
                               f" {ctx.open_storm.correlation_id}")


def grouped(alert: Alert, ctx: AlertContext, policy: StormSettings) -> Decision:
    """An alert of a key that is listed on a storm ticket."""
    storm = ctx.storm_of_key
    assert storm is not None
    key = alert.alert_key
    if alert.status != "resolved":
        return storm_append(alert, ctx, policy, storm, alert.alert_type,
                            storm_line(key, alert.title), join=False,
                            reason=f"{key} is grouped into storm ticket"
                                   f" {storm.correlation_id}: appended there")
    line = storm_line(key, alert.title, prefix="RECOVERED ")
    if ctx.storm_members_open > 1:
        d = storm_append(alert, ctx, policy, storm, RECOVERED, line, join=False,
                         reason=f"{key} recovered; storm ticket {storm.correlation_id} stays"
                                f" open for {ctx.storm_members_open - 1} other alert(s)")
        return replace(d, storm_leave=storm.correlation_id)
    routing = ctx.storm_routing or _routing(policy, alert.product_group, alert.alert_type)
    data = _payload(alert.account_id, routing,
                    storm_title(ctx.storm_size, alert.account_id, group_of(alert, policy)),
                    f"Every grouped alert has recovered (last: {key}).")
    pending = ctx.storm_pending_update
    return Decision(reason=f"the last grouped alert recovered: resolves storm ticket"
                           f" {storm.correlation_id}", alert_key=key,
                    storm_leave=storm.correlation_id, close_correlation=storm.correlation_id,
                    outbox=(OutboxItem("psa", storm.alert_key, data, "RESOLVED",
                                       storm.correlation_id,
                                       not_before=_behind(pending)),))


def _behind(pending: PendingCall | None) -> float | None:
    """A storm ticket's RESOLVED goes after its held row (on the arrival clock)."""
    if pending is None:
        return None
    return pending.held_until if pending.held_until is not None else pending.due_at
