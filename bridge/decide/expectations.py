"""Expected mail that did not come, as alerts through the one decide path (issue 20).

`judge` runs after the sources have been drained (the daemon's processing loop once every
source has caught up; `run --once` after its drain): each `[[expect]]` instance whose deadline
passed becomes one synthetic *open* alert — decided by the `Decider` like any other, so many
at once land on one storm ticket — and its row turns `missing` until a report comes, so an
outage makes one ticket however many windows it spans. `report_seen` (called by the pipeline
for each report, inside its write transaction) moves the deadline on and, when the instance
was missing, resolves that ticket through the same path. Each missing-mail ticket is an event
with its expectation: there is no staged message behind it.

Synthetic alerts get one explicit policy difference (`SYNTHETIC`): no resolve delay, since a
report that arrives is not a flap.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

from bridge.classify.expect import ExpectRule
from bridge.decide.decider import Decider
from bridge.models import Alert, Decision, ExpectationRow, ExpectHit, Status
from bridge.seams import StateStore
from bridge.store.db import Store

log = logging.getLogger("mailbridge.expect")

SYNTHETIC = {"resolve_delay": 0.0}


def _when(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def missing_key(name: str, scope: str) -> str:
    key = f"expect:{name}:{scope}" if scope else f"expect:{name}"
    return key if len(key) <= 200 else key[:180] + "#" + hashlib.sha256(
        key.encode()).hexdigest()[:16]


def _alert(rule: ExpectRule, row: ExpectationRow, status: Status, key: str) -> Alert:
    fields = {"expectation": rule.name, "account": row.account_id, "what": row.what,
              "last_seen": _when(row.last_seen_at), "due": _when(row.judge_at),
              "scope": row.scope}
    summary = (f"No mail for the expectation {rule.name} ({rule.schedule.describe()}): "
               f"the last report arrived {_when(row.last_seen_at)}; the next was due by "
               f"{_when(row.judge_at)} (grace included).")
    if status == "resolved":
        summary = f"The expected mail for {rule.name} arrived again."
    return Alert(alert_key=key, status=status, account_id=row.account_id,
                 product_group=rule.product_group, alert_type=rule.alert_type,
                 title=rule.title.render(fields)[:255] or f"Expected mail missing: {rule.name}",
                 summary=summary, min_duration=0.0)


def _decide(store: StateStore, decider: Decider, alert: Alert, at: float,
            message_ref: int | None) -> Decision:
    decision = decider.decide(store, alert, at, override=SYNTHETIC)
    meta: dict[str, Any] = {"account_id": alert.account_id,
                            "product_group": alert.product_group,
                            "alert_type": alert.alert_type, "title": alert.title}
    store.record_effects(message_ref, decision, arrived_at=at, alert_meta=meta)
    return decision


def report_seen(store: StateStore, rules: tuple[ExpectRule, ...], decider: Decider,
                hit: ExpectHit, arrived_at: float, message_ref: int) -> None:
    """A report arrived (in the pipeline's write transaction): move the deadline on, and
    resolve the missing-mail ticket of an outage it ends."""
    rule = next((r for r in rules if r.name == hit.expectation), None)
    if rule is None:
        return
    before = store.expectation_seen(hit.expectation, hit.scope, hit.account_id, hit.what,
                                    arrived_at, rule.schedule.judge_at(arrived_at))
    if before is None or before.state != "missing" or not before.alert_key:
        return
    alert = _alert(rule, before, "resolved", before.alert_key)
    decision = _decide(store, decider, alert, arrived_at, message_ref)
    store.event("expectation-met", message_ref, alert.alert_key,
                decision.outcome.value if decision.outcome else "pending",
                expectation=rule.name, scope=hit.scope, missing_since=before.missing_since)


def judge(store: StateStore, rules: tuple[ExpectRule, ...], decider: Decider,
          now: float) -> int:
    """Open a missing-mail ticket for each expectation past its deadline (in the caller's
    write transaction); the number opened."""
    by_name = {r.name: r for r in rules}
    for rule in rules:  # a fixed account is watched from the start, before any report
        if rule.account is not None and rule.per in ("once", "account"):
            scope = "" if rule.per == "once" else rule.account
            if store.expectation(rule.name, scope) is None:
                store.expectation_start(rule.name, scope, rule.account, rule.name, now,
                                        rule.schedule.judge_at(now))
    opened = 0
    for row in store.expectations():
        watched = by_name.get(row.name)
        if watched is None:
            store.expectation_forget(row.name, row.scope)
            store.event("expectation-dropped", None, row.alert_key, None, expectation=row.name,
                        scope=row.scope, why="no [[expect]] rule of that name any more")
            continue
        silent_since = row.last_seen_at if row.last_seen_at is not None else row.created_at
        if watched.account is None and now - silent_since > watched.expire_after:
            # A job that was removed: stop watching it. A missing-mail ticket it had stays
            # open for a person to close (its key is in the event).
            store.expectation_forget(row.name, row.scope)
            store.event("expectation-expired", None, row.alert_key, None,
                        expectation=row.name, scope=row.scope, last_seen=row.last_seen_at)
            continue
        if row.state != "watching" or row.judge_at > now:
            continue
        key = missing_key(row.name, row.scope)
        alert = _alert(watched, row, "open", key)
        decision = _decide(store, decider, alert, now, None)
        store.expectation_missing(row.name, row.scope, key, now)
        store.event("expectation-missing", None, key,
                    decision.outcome.value if decision.outcome else "pending",
                    expectation=row.name, scope=row.scope, account=row.account_id,
                    last_seen=row.last_seen_at, due=row.judge_at, reason=decision.reason,
                    queued=[i.action for i in decision.outbox])
        opened += 1
    return opened


def judge_in(store: Store, rules: tuple[ExpectRule, ...], decider: Decider, now: float) -> int:
    """`judge` in a write transaction of its own (the daemon's and `run --once`'s call, on
    the store's thread)."""
    if not rules:
        return 0
    with store.write():
        return judge(store, rules, decider, now)

