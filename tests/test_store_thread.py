"""The store's thread (bridge.store.thread): delivery's calls go ahead of the waiting ones.

Each test holds the thread on a call that waits for an event, queues calls behind it, then
lets it go and looks at the order in which they ran.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from bridge.models import OutboxItem
from bridge.store.db import AsyncStore, Store
from bridge.store.thread import StoreThread


def held(thread: StoreThread) -> threading.Event:
    """Occupy the thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    thread.submit(hold)
    assert started.wait(10)
    return release


def test_a_call_sent_first_runs_before_the_calls_waiting_and_each_queue_keeps_its_order(
) -> None:
    thread = StoreThread("test-store")
    ran: list[str] = []
    release = held(thread)
    futures = [thread.submit(functools.partial(ran.append, n), first=n.startswith("first"))
               for n in ("batch-1", "first-1", "batch-2", "first-2")]
    release.set()
    for f in futures:
        f.result(timeout=10)
    thread.shutdown()
    assert ran == ["first-1", "first-2", "batch-1", "batch-2"]


def test_a_failing_call_gives_its_caller_the_exception_and_the_next_call_still_runs() -> None:
    thread = StoreThread("test-store")

    def fail() -> None:
        raise ValueError("boom")

    failed = thread.submit(fail)
    after = thread.submit(lambda: 42)
    with pytest.raises(ValueError, match="boom"):
        failed.result(timeout=10)
    assert after.result(timeout=10) == 42
    thread.shutdown()


def test_a_call_cancelled_before_it_started_never_runs() -> None:
    thread = StoreThread("test-store")
    ran: list[int] = []
    release = held(thread)
    cancelled = thread.submit(lambda: ran.append(1))
    assert cancelled.cancel()
    kept = thread.submit(lambda: ran.append(2))
    release.set()
    kept.result(timeout=10)
    thread.shutdown()
    assert ran == [2]


def test_shutdown_waits_for_every_queued_call() -> None:
    thread = StoreThread("test-store")
    ran: list[int] = []
    release = held(thread)
    for i in range(5):
        thread.submit(functools.partial(ran.append, i))
    threading.Timer(0.05, release.set).start()
    thread.shutdown()
    assert ran == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        thread.submit(lambda: None)


async def test_an_outbox_claim_overtakes_a_queued_processing_call_on_a_real_store(tmp_path
                                                                                  ) -> None:
    store = Store(tmp_path / "s.db")
    store.enqueue(OutboxItem("psa", "k1", {"title": "t"}, "OPEN", "c1"), None, now=1.0)
    astore = AsyncStore(store)
    try:
        seen: list[str] = []
        release = held(astore._thread)
        # Queued first, run second: it sees the row the claim took.
        batch = asyncio.ensure_future(astore.run(
            lambda: seen.append(store.scalar("SELECT state FROM outbox"))))
        await asyncio.sleep(0)
        claim = asyncio.ensure_future(astore.claim_outbox(2.0, 10))
        await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(asyncio.gather(batch, claim), timeout=10)
        assert [r.ordering_key for r in claim.result()] == ["k1"]
        assert seen == ["in_flight"]
    finally:
        astore.close()
