"""`mailbridge test-alert`: one synthetic alert end to end (seed 000 "test alert button").

A small message is staged like any other (so it has an id, events and an outcome), decided as
an alert of the configured test product group, and delivered now. `--resolve` resolves the
open test ticket of the account again. The outcome printed is the PSA's real answer.
"""

from __future__ import annotations

import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from bridge.decide.decider import SEND_NOW
from bridge.models import Alert, RawMessage

if TYPE_CHECKING:
    from bridge.daemon import Bridge


def test_message(account: str, resolve: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = "mailbridge-test@localhost"
    msg["To"] = "mailbridge@localhost"
    msg["Subject"] = f"mailbridge test alert for {account}" + (" (resolve)" if resolve else "")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex[:12], domain="mailbridge.test")
    msg.set_content("A test alert sent by `mailbridge test-alert`. No action is needed.")
    return bytes(msg)


async def send_test_alert(bridge: Bridge, account: str, product_group: str, alert_type: str,
                          resolve: bool = False) -> dict[str, Any]:
    await bridge.lease.register("once")
    now = time.time()
    raw = test_message(account, resolve)
    [staged] = await bridge.store.stage_many([RawMessage(raw, "test-alert", None, now)])
    alert = Alert(f"test:{account}:{product_group}:{alert_type}",
                  "resolved" if resolve else "open", account, product_group, alert_type,
                  f"mailbridge test alert ({account})",
                  "A test alert sent by `mailbridge test-alert` to check the path to the PSA."
                  " No action is needed.")

    def record() -> None:
        store = bridge.sync_store
        with store.write():
            store.claim_staged(bridge.worker, limit=1, only=staged.id)
            # The one decide path, told to send now: no coalescing, no resolve delay.
            d = bridge.parts.decider.decide(store, alert, now, override=SEND_NOW)
            store.apply_decision(staged.id, d, arrived_at=now, rule="test-alert",
                                 alert_meta={"account_id": account, "title": alert.title,
                                             "product_group": product_group,
                                             "alert_type": alert_type})

    await bridge.store.run(record)
    await bridge.delivery.drain()
    row = bridge.sync_store.message_state(staged.id) or {}
    return {"message": staged.id, "alert_key": alert.alert_key, "state": row.get("state"),
            "outcome": row.get("outcome"), "reason": row.get("reason")}
