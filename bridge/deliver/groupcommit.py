"""Group commit: the settlements of calls that end close together are written in one transaction.

One COMMIT per delivered row was the largest single cost of a backlog drain (docs/performance.md),
and a transaction's own cost (BEGIN, COMMIT, the events' insert) is still most of a small
group's. The first settlement to arrive starts a flush. When no other call is under way
(`busy()` is false: nothing could join), it is written at once, with no added delay; otherwise
the flush waits for company — at most `DELAY`, and less when the queue holds `MAX_BATCH`
settlements or the last call under way has ended. Everything queued by then goes to the store
thread as one transaction (`apply_settlements`: a row whose writes fail is undone alone and its
deliverer gets the exception, as before), and whatever arrives while that transaction runs goes
in the next one. A deliverer's `settle` returns only once its row is committed, and the row is
in flight in the store until then, so the next row of its key is claimed after it, never beside
it; a crash loses at most uncommitted settlements — whose rows are still in flight in the store
and are handed back and sent again with the same correlation id, as before.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from bridge.deliver.settle import apply_settlements
from bridge.seams import Settlement
from bridge.store.db import AsyncStore, OutboxRow

DELAY = 0.002     # seconds a settlement may wait for company: "a few milliseconds" at most
MAX_BATCH = 256   # settlements per transaction (4 × the largest concurrency)

_Waiting = tuple[OutboxRow, Settlement, "asyncio.Future[None]"]


def _never_busy() -> bool:
    return False


class GroupCommit:
    def __init__(self, store: AsyncStore, delay: float = DELAY,
                 busy: Callable[[], bool] = _never_busy):
        self._store = store
        self._delay = delay
        self._busy = busy  # are other calls under way, whose settlements may join?
        self._queue: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._company: asyncio.Future[None] | None = None  # the flush waiting for company

    async def settle(self, row: OutboxRow, settlement: Settlement) -> None:
        """Write this row's settlement; return once it is committed (or raise why not)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, settlement, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        elif self._company is not None and not self._company.done() and (
                len(self._queue) >= MAX_BATCH or not self._busy()):
            self._company.set_result(None)  # nobody else is coming: write now
        await done

    async def _wait_for_company(self) -> None:
        if not self._busy() or len(self._queue) >= MAX_BATCH:
            return
        loop = asyncio.get_running_loop()
        self._company = company = loop.create_future()
        timer = loop.call_later(self._delay, _resolve, company)
        try:
            await company
        finally:
            timer.cancel()
            self._company = None

    async def _flush(self) -> None:
        await self._wait_for_company()
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                errors = await self._store.run_first(apply_settlements, self._store.store,
                                               [(row, s) for row, s, _ in batch])
            except asyncio.CancelledError:
                for _, _, done in batch + self._queue:
                    done.cancel()
                raise
            except Exception as exc:  # the transaction itself failed: each row's failure
                errors = [exc] * len(batch)
            for (_, _, done), error in zip(batch, errors):
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
