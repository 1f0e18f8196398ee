"""Admin alerts (SPEC §3.7): mail the admin when mailbridge itself is in trouble.

Checked by the daemon's housekeeping every half minute: IMAP login failing for a while, the PSA
refusing the credentials, outbox rows gone dead (and not acknowledged), creates refused with
404 across several accounts, the store's disk nearly full. Each kind is
raised in the runtime status (so `status` and `/healthz` show it) and mailed at most once per
`REMIND_AFTER` through the outbox — so an SMTP outage delays the mail but loses nothing. When
the condition clears, the alert is cleared too.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.models import OutboxItem

REMIND_AFTER = 6 * 3600.0     # one mail per kind per six hours while it lasts
IMAP_GRACE = 300.0            # a source down this long is worth a mail
OWN_KINDS = {"imap", "psa-auth", "dead-rows", "disk", "psa-404"}  # raised and cleared by this module


def conditions(settings: Settings, runtime: Any, store: Any, psa_refused: str | None,
               now: float) -> dict[str, str]:
    """The trouble there is now, by kind (pure apart from reading the store and the disk)."""
    found: dict[str, str] = {}
    for name, src in getattr(runtime, "sources", {}).items():
        since = getattr(src, "since", None)  # last change of `connected`
        if not getattr(src, "connected", True) and getattr(src, "last_error", None) and \
                since is not None and now - since >= IMAP_GRACE:
            found[f"imap:{name}"] = f"mailbox {name} unreachable since" \
                f" {time.strftime('%H:%M UTC', time.gmtime(since))}: {src.last_error}"
    if psa_refused:
        found["psa-auth"] = f"the PSA refuses mailbridge's credentials ({psa_refused});" \
                            " nothing is sent until they are fixed and reloaded"
    dead = store.dead_outbox_count()
    if dead:
        found["dead-rows"] = f"{dead} outbox row(s) are dead; see `mailbridge outbox`"
    from bridge.operator.status import REFUSED_ACCOUNTS, REFUSED_WINDOW, refused_accounts

    refused = refused_accounts(store, now - REFUSED_WINDOW)
    if len(refused) >= REFUSED_ACCOUNTS:  # one account: the daily digest; several: trouble
        found["psa-404"] = f"the PSA refused creates (404) for {len(refused)} accounts within" \
                           " the hour: check psa.integration_id and the partner's catalogue"
    try:
        free = shutil.disk_usage(Path(settings.store.path).resolve().parent).free
    except OSError:
        free = None
    if free is not None and free < settings.store.disk_warn_mb * 1024 * 1024:
        found["disk"] = f"only {free // (1024 * 1024)} MB free beside the store" \
                        f" {settings.store.path}"
    return found


def check_and_alert(settings: Settings, runtime: Any, store: Any,
                    psa_refused: str | None, now: float | None = None) -> list[str]:
    """Raise/clear runtime alerts and queue mails; return the kinds mailed now."""
    now = time.time() if now is None else now
    found = conditions(settings, runtime, store, psa_refused, now)
    raised = {a.kind: a.message for a in getattr(runtime, "admin_alerts", [])}
    for kind in list(raised):
        if kind.split(":", 1)[0] in OWN_KINDS and kind not in found:
            runtime.clear_alert(kind)  # the condition is over
    # Alerts the sources raise themselves (a refused IMAP login) are mailed here too.
    found |= {k: m for k, m in raised.items() if k.startswith("imap-login:")}
    mailed: list[str] = []
    for kind, message in found.items():
        message = store.redact(message)  # server text: an IMAP NO may echo the password
        if runtime is not None:
            runtime.raise_alert(kind, message)
        last = store.get_meta(f"admin_alert:{kind}")
        if last is not None and now - float(last) < REMIND_AFTER:
            continue
        to = settings.routing.admin_address
        mail = None
        if to and settings.smtp is not None:
            mail = OutboxItem("smtp", f"admin:{kind}", {
                "type": "admin", "to": to, "subject": f"[mailbridge] {message[:120]}",
                "text": f"mailbridge needs attention.\n\n{message}\n\nSee `mailbridge status`"
                        " and the dashboard for details."}, "admin")
            mailed.append(kind)
        # When, the event and the mail in one transaction: a crash never mails twice or
        # records an alert whose mail was lost.
        store.record_admin_alert(kind, message, now, mail)
    return mailed
