"""The IMAP source's overlap of staging and IMAP work, apart from the source (module size).

While batch k is being staged (on the store's thread), batch k+1 is fetched; batch k is moved
to the processed folder only once its own stage() has returned True for it. At most one
stage() call is in flight.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from bridge.models import RawMessage
from bridge.sources.imap_client import ImapConnection


class StagingPipeline:
    """One batch staged while the next is fetched. `push(msgs)` waits for the previous
    batch's stage() result, starts staging `msgs`, then moves the previous batch's staged
    messages; `finish()` stages-and-moves what is left. A stage() still running when the
    connection fails is left to complete: its messages stay in the folder, and the next pass
    finds them already staged (the store de-duplicates)."""

    def __init__(self, conn: ImapConnection,
                 stage: Callable[[list[RawMessage]], Awaitable[list[bool]]], folder: str,
                 taken: Callable[[int, str], None]) -> None:
        self.conn = conn
        self._stage = stage
        self._folder = folder
        self._taken = taken
        self.moved = 0
        self.failed: set[int] = set()
        self._pending: tuple[asyncio.Future[list[bool]], list[int]] | None = None

    async def push(self, msgs: list[RawMessage]) -> None:
        if not msgs:
            return
        done = await self._collect()
        uids = [int(str(m.source_uid).rsplit(":", 1)[1]) for m in msgs]
        self._pending = (asyncio.ensure_future(self._stage(msgs)), uids)
        await self._move(done)

    async def finish(self) -> None:
        await self._move(await self._collect())

    async def _collect(self) -> list[int]:
        """Wait for the batch being staged; return its UIDs that may now be moved."""
        if self._pending is None:
            return []
        task, uids = self._pending
        self._pending = None
        results = await task
        self.failed |= {u for u, ok in zip(uids, results) if not ok}
        return [u for u, ok in zip(uids, results) if ok]

    async def _move(self, uids: list[int]) -> None:
        if not uids:
            return
        # Only now, with their batch committed, may the messages leave the folder.
        await self.conn.move(uids, self._folder)
        self.moved += len(uids)
        self._taken(len(uids), self._folder)
