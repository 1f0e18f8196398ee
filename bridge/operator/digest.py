"""The daily digest to the administrator: creates the PSA refused with 404 (issue 17).

A 404 for one account's create is an expected answer — an account the partner has not mapped,
a product group without rules — so it is the message's outcome (`failed`, with the PSA's
message), not a trouble alert. Once a day, at `[routing] digest_time` (local time), the
admin gets one mail listing them since the last digest; nothing when there were none, and
nothing without [smtp] and an admin address. The mail goes through the outbox, queued in the
same transaction that records the time it was sent, so a crash never doubles it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

from bridge.config import Settings
from bridge.models import OutboxItem

META_KEY = "digest_sent_at"
LINES = 200  # at most this many refusals are listed; the count says how many there were


def last_slot(at_hhmm: str, now: float) -> float:
    """The latest moment at `at_hhmm` local time that is not after `now`."""
    hour, minute = (int(x) for x in at_hhmm.split(":"))
    today = datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0,
                                                microsecond=0)
    if today.timestamp() > now:
        today -= timedelta(days=1)
    return today.timestamp()


def compose(refusals: list[dict[str, Any]], since: float, now: float) -> str:
    def line(row: dict[str, Any]) -> str:
        try:
            d = json.loads(row["detail"] or "{}")
        except ValueError:
            d = {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["at"]))
        return (f"{when}  message {row['message_ref']}  account {d.get('account_id')}"
                f"  {d.get('product_group')}/{d.get('alert_type')}: {d.get('message')}")

    start = time.strftime("%Y-%m-%d %H:%M", time.localtime(since))
    body = [f"The PSA refused {len(refusals)} ticket create(s) with 404 since {start}.",
            "Usually the partner has not mapped the account, or has no rules for the product",
            "group; each message ended `failed` with the PSA's answer. Once mapped, replay a",
            "message with `mailbridge replay ID`.", "",
            *(line(r) for r in refusals[:LINES])]
    if len(refusals) > LINES:
        body.append(f"... and {len(refusals) - LINES} more (`mailbridge events --outcome"
                    " failed`)")
    return "\n".join(body) + "\n"


def digest_due(settings: Settings, store: Any, now: float | None = None) -> OutboxItem | None:
    """The digest mail when one is due now, after recording that it was sent; else None.
    Called by the daemon's housekeeping on the store's thread."""
    now = time.time() if now is None else now
    r = settings.routing
    if not r.digest_time or not r.admin_address or settings.smtp is None:
        return None
    slot = last_slot(r.digest_time, now)
    sent = store.get_meta(META_KEY)
    if sent is not None and float(sent) >= slot:
        return None
    since = float(sent) if sent is not None else slot - 86400
    refusals = store.refused_creates(since)
    mail = None
    if refusals:
        mail = OutboxItem("smtp", "admin:digest", {
            "type": "admin", "to": r.admin_address,
            "subject": f"[mailbridge] daily digest: {len(refusals)} create(s) refused by the PSA",
            "text": compose(refusals, since, now)}, "admin")
    with store.write():  # the time and the mail together: a crash never mails twice
        store.set_meta(META_KEY, str(now))
        if mail is not None:
            store.enqueue(mail, None)
    return mail
