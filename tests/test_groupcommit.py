"""Group commit of settlements (bridge.deliver.groupcommit): when a flush waits for company.

A fake store records the batches it is asked to write; the settlements are plain data.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from bridge.deliver.groupcommit import GroupCommit
from bridge.seams import RowState, Settlement
from bridge.store.db import OutboxRow


class Recorder:
    """Stands in for AsyncStore: `run(apply_settlements, store, batch)` records the batch."""

    store = None

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def run(self, fn: Callable[..., Any], store: Any, batch: list[Any]) -> list[None]:
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
