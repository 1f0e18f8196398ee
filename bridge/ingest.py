"""The pipe source (`mailbridge ingest < message.eml`, SPEC §3.1).

Exit 0 once the message is durably staged, 75 (EX_TEMPFAIL) when it could not be, so the MTA
keeps it and retries: a message is never both lost and acknowledged. After staging, the message
is processed and its outbox rows delivered right here, unless a running daemon (its heartbeat
in the store is fresh) will do it. Claims are atomic, so both never work on one message.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from bridge.config import Settings
from bridge.models import RawMessage

log = logging.getLogger("mailbridge.ingest")

EX_OK, EX_TEMPFAIL = 0, 75
DAEMON_FRESH = 30.0  # seconds: a heartbeat younger than this means a daemon is processing


def ingest(raw: bytes, settings: Settings, now: float | None = None) -> int:
    from bridge.store import Store

    if not raw.strip():
        print("mailbridge ingest: empty message on stdin", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        store = Store(settings.store.path)
        result = store.stage(RawMessage(raw, "pipe", None, now or time.time()))
    except Exception as exc:  # disk full, locked past the timeout, unreadable store, ...
        print(f"mailbridge ingest: could not stage the message: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    if result.duplicate:
        print(f"mailbridge ingest: already staged as message {result.id}", file=sys.stderr)
        return EX_OK
    heartbeat = store.get_meta("daemon_heartbeat")
    store.close()
    if heartbeat and time.time() - float(heartbeat) < DAEMON_FRESH:
        return EX_OK  # the daemon polls for staged rows
    if any(not s for s in _declared_secrets(settings)):
        return EX_OK  # credentials unreadable (service stopped): the daemon will process it
    try:
        asyncio.run(_process(settings, result.id))
    except Exception as exc:  # staged is safe: report, but do not make the MTA retry
        log.error("message %s staged, but processing failed here: %s", result.id, exc)
        print(f"mailbridge ingest: staged as {result.id}; processing deferred: {exc}",
              file=sys.stderr)
    return EX_OK


async def _process(settings: Settings, message_id: int) -> None:
    from bridge.daemon import Bridge

    bridge = Bridge(settings)
    try:
        await bridge.process_pending(only=message_id)
        await bridge.delivery.drain()
    finally:
        await bridge.close()


def _declared_secrets(settings: Settings) -> list[str]:
    """Values of the secrets the PSA client needs; empty when lenient loading dropped one."""
    return [settings.psa.client_secret.get_secret_value(),
            settings.psa.organization_oem_token.get_secret_value()] if settings.psa.enabled \
        else []
