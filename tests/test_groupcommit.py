"""Group commit of settlements (bridge.deliver.groupcommit): when a flush waits for company,
and the drain's window, whose slot frees when a call ends, before its settlement is written.

A fake store records the batches it is asked to write; the settlements are plain data.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from bridge.deliver.groupcommit import GroupCommit
from bridge.seams import RowState, Settlement
from bridge.store.db import OutboxRow


class Recorder:
    """Stands in for AsyncStore: `run_first(apply_settlements, store, batch)` records the
    batch."""

    store = None

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def run_first(self, fn: Callable[..., Any], store: Any, batch: list[Any]
                        ) -> list[None]:
        self.batches.append([row.id for row, _ in batch])
        return [None] * len(batch)


def row(i: int) -> OutboxRow:
    return OutboxRow(i, "psa", f"k{i}", i, "OPEN", f"c{i}", {}, 1)


DONE = Settlement(RowState.DONE, "")


async def test_a_settlement_with_no_other_call_under_way_is_written_at_once() -> None:
    store = Recorder()
    commit = GroupCommit(store, delay=30.0, busy=lambda: False)  # type: ignore[arg-type]
    start = time.monotonic()
    await asyncio.wait_for(commit.settle(row(1), DONE), timeout=5.0)
    assert store.batches == [[1]] and time.monotonic() - start < 5.0


async def test_while_calls_are_under_way_settlements_wait_for_company_until_the_last() -> None:
    store = Recorder()
    calling = [3]
    commit = GroupCommit(store, delay=30.0, busy=lambda: calling[0] > 0)  # type: ignore[arg-type]
    waiting = []
    for i in (1, 2, 3):
        calling[0] -= 1
        waiting.append(asyncio.ensure_future(commit.settle(row(i), DONE)))
        await asyncio.sleep(0)
    # The third call ended the window: written at once, long before the 30 s delay, together.
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5.0)
    assert store.batches == [[1, 2, 3]]


async def test_a_busy_window_flushes_after_the_delay_at_most() -> None:
    store = Recorder()
    commit = GroupCommit(store, delay=0.05, busy=lambda: True)  # type: ignore[arg-type]
    start = time.monotonic()
    await asyncio.gather(commit.settle(row(1), DONE), commit.settle(row(2), DONE))
    assert store.batches == [[1, 2]] and 0.04 <= time.monotonic() - start < 5.0


class GatedCommit:
    """Stands in for the delivery's GroupCommit: settlements wait until the gate opens."""

    def __init__(self, write: Callable[[OutboxRow, Settlement], Awaitable[None]]) -> None:
        self.write = write
        self.gate = asyncio.Event()
        self.waiting: list[int] = []

    async def settle(self, row: OutboxRow, settlement: Settlement) -> None:
        self.waiting.append(row.id)
        await self.gate.wait()
        await self.write(row, settlement)


async def test_a_window_slot_frees_when_its_call_ends_not_when_it_is_committed(tmp_path) -> None:
    """concurrency 1: the second key's call starts while the first row still waits to be
    written; the first key's next row waits for that write (head of its key)."""
    from bridge.config import settings_from_dict
    from bridge.deliver.outbox import Delivery
    from bridge.deliver.settle import apply_settlement
    from bridge.models import OutboxItem
    from bridge.store import AsyncStore, Store

    sync = Store(tmp_path / "mb.db", clock=lambda: 1000.0)
    astore = AsyncStore(sync)

    async def settle_now(row: OutboxRow, settlement: Settlement) -> None:
        await astore.run(apply_settlement, sync, row, settlement)

    a1, b1, a2 = (sync.enqueue(OutboxItem("webhook", key, {"target": "t"}, "OPEN"), None)
                  for key in ("k:a", "k:b", "k:a"))
    delivery = Delivery(astore, settings_from_dict({"psa": {"concurrency": 1}}),
                        clock=lambda: 1000.0)
    gated = GatedCommit(settle_now)
    started: list[int] = []

    class Target:
        kind = "webhook"

        async def deliver(self, row: OutboxRow) -> Settlement:
            started.append(row.id)
            return Settlement(RowState.DONE, "", result={})

        async def render(self, row: OutboxRow) -> dict[str, object]:
            return {}

    delivery.targets = {"webhook:t": Target()}  # type: ignore[dict-item]
    delivery._commit = gated  # type: ignore[assignment]
    try:
        drain = asyncio.ensure_future(delivery.drain())
        for _ in range(200):
            if len(started) == 2:
                break
            await asyncio.sleep(0.01)
        assert started == [a1, b1] and gated.waiting == [a1, b1]  # a1 not yet written
        gated.gate.set()
        assert await asyncio.wait_for(drain, timeout=10.0) == 3
        assert started == [a1, b1, a2]
    finally:
        astore.close()
