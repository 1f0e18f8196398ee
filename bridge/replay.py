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
            row = bridge.sync_store.query(
                "SELECT state, outcome, EXISTS (SELECT 1 FROM raw_messages WHERE message_ref=id)"
                " AS has_raw FROM messages WHERE id=?",
                [message_id])
            if not row:
                echo(f"no message {message_id}")
                return 1
            if row[0]["outcome"] not in ("quarantined", "failed", "unmatched"):
                echo(f"message {message_id} ended {row[0]['outcome'] or row[0]['state']};"
                     " only quarantined, failed or unmatched messages are replayed")
                return 1
            if not row[0]["has_raw"]:
                echo(f"message {message_id}: its raw bytes were pruned by retention")
                return 1
            with bridge.sync_store.write() as conn:
                # A fresh start: a poison-quarantined message gets its tries again.
                conn.execute("UPDATE messages SET state='staged', outcome=NULL, claimed_by=NULL,"
                             " claims=0, suspect=0 WHERE id=?", (message_id,))
            bridge.sync_store.event("replayed", message_id, None, None,
                                    previous=row[0]["outcome"])
            await bridge.store.run(bridge.pipeline.process_batch, bridge.worker, 1, message_id)
            await bridge.delivery.drain()
            after = bridge.sync_store.query("SELECT state, outcome, reason FROM messages"
                                            " WHERE id=?", [message_id])[0]
            echo(f"message {message_id}: {after['outcome'] or after['state']} — "
                 f"{after['reason']}")
            return 0
        finally:
            await bridge.close()

    return asyncio.run(go())
