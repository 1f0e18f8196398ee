"""The daemon's slow loop: runtime status for `mailbridge status`, rule-file watch, admin
alerts, hourly reconcile with the PSA, daily retention."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.daemon import Bridge

log = logging.getLogger("mailbridge.daemon")


async def housekeeping(bridge: Bridge, stop: asyncio.Event) -> None:
    from bridge.assembly import rules_signature
    from bridge.operator.admin import check_and_alert
    from bridge.operator.audit import prune
    from bridge.operator.digest import digest_due
    from bridge.operator.status import save_runtime

    last_check = last_prune = last_reconcile = 0.0
    while not stop.is_set():
        now = time.monotonic()
        settings = bridge.settings
        try:
            if settings.rules.watch and rules_signature(settings) != bridge.rules_seen:
                # An admin saved a rule file: reload as on SIGHUP.
                log.info("rule files changed on disk: reloading")
                bridge.rules_seen = rules_signature(settings)
                bridge.request_reload()
            await bridge.store.run(save_runtime, bridge.sync_store, bridge.runtime)
            if now - last_check >= 30:
                last_check = now
                mailed = await bridge.store.run(check_and_alert, settings, bridge.runtime,
                                                bridge.sync_store, bridge.delivery.psa_refused)
                digest = await bridge.store.run(digest_due, settings, bridge.sync_store)
                if mailed or digest:
                    bridge.delivery.wake.set()
            if now - last_reconcile >= 3600 and bridge.delivery.psa is not None \
                    and not bridge.delivery.psa_refused:
                last_reconcile = now
                await _reconcile(bridge)
            if now - last_prune >= 86400:
                last_prune = now
                s = settings.store
                pruned = await bridge.store.run(prune, bridge.sync_store, s.retention_days,
                                                s.correlation_retention_days)
                log.info("retention: %s", pruned)
        except Exception:
            log.exception("housekeeping pass failed")
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
        except asyncio.TimeoutError:
            pass


async def _reconcile(bridge: Bridge) -> None:
    from bridge.operator.reconcile import reconcile

    psa = bridge.delivery.psa
    if psa is None:
        return
    try:
        report = await reconcile(bridge.store, psa, fix=True)
    except Exception as exc:  # PSA unreachable: the next round will try again
        log.warning("reconcile skipped: %s", exc)
        return
    if report.fixed:
        log.info("reconcile: %d ticket(s) closed at the PSA, correlations closed here",
                 report.fixed)
