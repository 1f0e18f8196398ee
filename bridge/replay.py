"""`mailbridge replay ID`: run a quarantined or failed message again through the current rules.

The staged raw bytes are kept (until retention prunes them), so a rule fix can be applied to
what already arrived. The message goes back to `staged` and through the normal pipeline; its
earlier outcome stays in the event history.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from bridge.config import Settings


def replay(settings: Settings, message_id: int, echo: Callable[[str], None] = print) -> int:
    from bridge.daemon import Bridge

    async def go() -> int:
        bridge = Bridge(settings)
        try:
            await bridge.lease.register("once")
            row = bridge.sync_store.message_state(message_id)
            if row is None:
                echo(f"no message {message_id}")
                return 1
            if row["outcome"] not in ("quarantined", "failed", "unmatched"):
                echo(f"message {message_id} ended {row['outcome'] or row['state']};"
                     " only quarantined, failed or unmatched messages are replayed")
                return 1
            if not row["has_raw"]:
                echo(f"message {message_id}: its raw bytes were pruned by retention")
                return 1
            await bridge.store.run(bridge.sync_store.requeue_message, message_id)
            await bridge.process_pending(only=message_id)
            await bridge.delivery.drain()
            after = bridge.sync_store.message_state(message_id) or {}
            echo(f"message {message_id}: {after.get('outcome') or after.get('state')} — "
                 f"{after.get('reason')}")
            return 0
        finally:
            await bridge.close()

    return asyncio.run(go())
