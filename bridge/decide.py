"""Alert key + correlation -> create, append or resolve (SPEC §3.5). Pure: no I/O, no clock.

`decide()` gets the alert, the open correlation of its key (read by the caller inside the same
write transaction that records the result) and the message's arrival time, and returns a
`Decision`: an outbox row to write and the correlation change, or a final outcome when nothing
needs sending. The correlationId of a new ticket is made here (a UUID) and travels with the
OPEN, so a retried create names the same ticket (idempotent creates, docs/psa-api.md).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from bridge.models import Alert, CorrelationView, Decision, OutboxItem, Outcome


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


def decide(alert: Alert, open_correlation: CorrelationView | None,
           new_id: Callable[[], str] = new_correlation_id) -> Decision:
    key = alert.alert_key
    if alert.status == "resolved":
        if open_correlation is None:
            return Decision(outcome=Outcome.NOTHING_TO_RESOLVE, alert_key=key,
                            reason="resolved, but no open ticket for this alert: nothing sent")
        cid = open_correlation.correlation_id
        return Decision(
            reason=f"resolves the open ticket {cid}", alert_key=key,
            outbox=(OutboxItem("psa", key, psa_data(alert), "RESOLVED", cid),),
            close_correlation=cid)
    if open_correlation is None:
        cid = new_id()
        return Decision(
            reason="no open ticket for this alert: create one", alert_key=key,
            outbox=(OutboxItem("psa", key, psa_data(alert), "OPEN", cid),),
            open_correlation=cid)
    cid = open_correlation.correlation_id
    return Decision(
        reason=f"appends to the open ticket {cid} (occurrence {open_correlation.occurrences + 1})",
        alert_key=key, outbox=(OutboxItem("psa", key, psa_data(alert), "UPDATE", cid),))
