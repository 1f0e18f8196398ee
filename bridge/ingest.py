"""The pipe source (`mailbridge ingest < message.eml`, SPEC §3.1).

Exit 0 once the message is durably staged, 75 (EX_TEMPFAIL) when it could not be, so the MTA
keeps it and retries: a message is never both lost and acknowledged. After staging, the message
is processed and its outbox rows delivered right here, unless a running daemon (a live owner of
kind daemon, or its heartbeat in the store is fresh) will do it. Claims are atomic, so both
never work on one message. Ingest never migrates an existing store, and when the write lock
does not come within 1 s the message goes durably to the spool (`bridge.store.spool`) and
ingest exits 0 at once: the MTA is never kept waiting behind a long write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time

from bridge.config import Settings
from bridge.models import RawMessage

log = logging.getLogger("mailbridge.ingest")

EX_OK, EX_TEMPFAIL = 0, 75
DAEMON_FRESH = 30.0  # seconds: a heartbeat younger than this means a daemon is processing


def ingest(raw: bytes, settings: Settings, now: float | None = None) -> int:
    from bridge.store.db import Store
    from bridge.store.spool import INGEST_BUSY_TIMEOUT, spool, stage_spooled

    if not raw.strip():
        print("mailbridge ingest: empty message on stdin", file=sys.stderr)
        return EX_TEMPFAIL
    arrived = now or time.time()
    try:
        # Only a store without any schema is created here: ingest never runs a migration of
        # an existing store, and it waits for the write lock only briefly (then it spools).
        store = Store(settings.store.path, migrate="missing")
        store.set_busy_timeout(INGEST_BUSY_TIMEOUT)
        try:
            result = store.stage(RawMessage(raw, "pipe", None, arrived))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            store.close()
            spool(settings.store.path, raw, arrived)
            return EX_OK  # durable in the spool; the daemon or the next run stages it
    except Exception as exc:  # disk full, unreadable store, ...
        print(f"mailbridge ingest: could not stage the message: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        ids = [] if result.duplicate else [result.id]
        ids += stage_spooled(store)  # what earlier calls had to spool
    except Exception as exc:  # staged is safe; the spool waits for the next caller
        log.warning("spooled messages not staged yet: %s", exc)
    if result.duplicate:
        print(f"mailbridge ingest: already staged as message {result.id}", file=sys.stderr)
    heartbeat = store.get_meta("daemon_heartbeat")
    try:
        daemon = store.live_daemon()
    except sqlite3.Error:  # a store not migrated to owners yet: the heartbeat alone tells
        daemon = None
    store.close()
    if daemon is not None or (heartbeat and time.time() - float(heartbeat) < DAEMON_FRESH):
        return EX_OK  # the daemon polls for staged rows
    if not ids:
        return EX_OK
    if any(not s for s in _declared_secrets(settings)):
        return EX_OK  # credentials unreadable (service stopped): the daemon will process it
    try:
        asyncio.run(_process(settings, ids))
    except Exception as exc:  # staged is safe: report, but do not make the MTA retry
        log.error("message(s) %s staged, but processing failed here: %s", ids, exc)
        print(f"mailbridge ingest: staged as {ids[0]}; processing deferred: {exc}",
              file=sys.stderr)
    return EX_OK


async def _process(settings: Settings, message_ids: list[int]) -> None:
    from bridge.daemon import Bridge

    bridge = Bridge(settings)
    try:
        await bridge.lease.register("once")  # its claims are protected from other reclaims
        for message_id in message_ids:
            await bridge.process_pending(only=message_id)
        await bridge.delivery.drain()
    finally:
        await bridge.close()


def _declared_secrets(settings: Settings) -> list[str]:
    """Values of the secrets the PSA client needs; empty when lenient loading dropped one."""
    return [settings.psa.client_secret.get_secret_value(),
            settings.psa.organization_oem_token.get_secret_value()] if settings.psa.enabled \
        else []
