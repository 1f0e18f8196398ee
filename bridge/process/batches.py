"""Staged messages through the worker pool, batch by batch, the next one evaluated while the
previous one is applied.

The store's thread claims a batch and later records its results, APPLY_SLICE messages per
transaction; the worker pool evaluates it in between. (One transaction for all 200 took
40-60 ms on the backlog benchmark, and every outbox claim and settlement that came meanwhile
waited for it: delivery's calls go ahead of waiting store calls (bridge.store.thread), but not
of the one under way. Slices of 50 add three commits a batch and let delivery keep up with
processing.) Delivery is told after each slice.

One after the other, the workers would wait while a batch is applied and the store's thread
while one is evaluated; so the next batch is claimed and handed to the pool before the
previous one is applied: the pool always has work for every worker it has, and applying
overlaps evaluating. At most two batches are claimed at a time, the second
only behind a full one: suspects (claim_staged hands them out one per claim, so that a poison
message shares its deaths with no other claim) and a last short batch go one at a time; a death
of the whole process with two batches claimed charges both one claim. Each batch keeps the
parts it was claimed with (a reload takes effect at the next claim). If recording a slice
fails, the slices before it stay recorded, that one and the rest of its batch stay claimed as
before, the batch behind it goes back to `staged` (not counted against its messages) and the
failure goes on to the caller.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

from bridge.process.pipeline import Broken, Result
from bridge.seams import Source
from bridge.store.db import AsyncStore, StagedRow

if TYPE_CHECKING:
    from bridge.assembly import Parts

BATCH = 200  # messages per claim: one transaction to claim
APPLY_SLICE = 50  # messages per transaction that records results

_Batch = tuple["Parts", list[StagedRow], "asyncio.Future[list[Result]]"]


async def process_staged(store: AsyncStore, current: Callable[[], Parts], worker: str,
                         only: int | None = None,
                         applied: Callable[[], object] = lambda: None) -> int:
    """Process staged messages (`only`: that one) until none is left; how many were.
    `applied` is called after each batch is recorded (delivery has new rows)."""
    total = 0
    inflight: list[_Batch] = []  # claimed and in the pool, oldest first: at most two
    try:
        while True:
            rows: list[StagedRow] | None = None  # None: no claim this round
            # Claim ahead only behind a full batch: suspects come one per claim and must not
            # share a death with another claim (claim_staged), and a short batch means the
            # store had no more.
            if (only is None or total == 0 and not inflight) and \
                    (not inflight or len(inflight[-1][1]) == BATCH):
                parts = current()
                rows = await store.run(store.store.claim_staged, worker, BATCH, only, False)
                if rows:
                    inflight.append((parts, rows, asyncio.ensure_future(asyncio.to_thread(
                        parts.evaluator.evaluate, store.store.path, rows))))
            if inflight and (len(inflight) == 2 or not rows):
                parts, done, evaluation = inflight.pop(0)
                results = await evaluation
                for at in range(0, len(done), APPLY_SLICE):
                    await store.run(parts.pipeline.apply_batch, store.store,
                                    done[at:at + APPLY_SLICE], results[at:at + APPLY_SLICE],
                                    worker)
                    applied()
                total += len(done)
            if not inflight and (rows == [] or only is not None and total > 0):
                return total
    except Exception:
        # A shutdown (cancellation) leaves the claims to the daemon's release_claims.
        for parts, rows, evaluation in inflight:  # not applied yet: back to staged
            await asyncio.wait([evaluation])
            back: list[Result] = [Broken(r.id, "processing of the batch before failed",
                                         crashed=False) for r in rows]
            await store.run(parts.pipeline.apply_batch, store.store, rows, back, worker)
        raise


async def drain_all(sources: Sequence[Source]) -> None:
    """`run --once`'s intake: what every source holds now, one after the other."""
    for source in sources:
        await source.drain()


async def process_until(process_pending: Callable[[], Awaitable[int]],
                        intake: asyncio.Future[object], signal: asyncio.Event) -> None:
    """Process batches as they are staged until intake has ended and nothing is left."""
    while True:
        signal.clear()
        ended = intake.done()
        if await process_pending() > 0:
            continue
        if ended:
            intake.result()  # intake's failure is run_once's
            return
        staged: asyncio.Future[object] = asyncio.ensure_future(signal.wait())
        await asyncio.wait((staged, intake), return_when=asyncio.FIRST_COMPLETED)
        staged.cancel()
