"""The store's one thread, with two queues: delivery's short transactions go first.

Every store call of the daemon runs on one thread (SQLite allows one writer, and one
connection keeps the WAL's readers simple). With one FIFO queue, a settlement or an outbox
claim — a few milliseconds each — waited behind whatever processing had queued before it: a
batch of staged mail (20 ms), the decisions of a batch (40–60 ms). On the backlog benchmark a
settlement waited 10–40 ms at the median while processing ran, each wait lengthened the chain
of calls of one alert key (the next row of a key is claimed only after the previous one is
written), and delivery managed a third of what its window allows until processing ended.

So a call sent with `first=True` runs before every call still waiting that was not: it waits
at most for the transaction under way. Calls of one queue keep their order. Nothing depends on
the order between the queues: two asyncio tasks' calls were never ordered, and each call is
its own transaction. Processing cannot be starved: delivery's calls wait on the network
between two transactions, and there are at most a window's worth of them.

The thread is a `ThreadPoolExecutor`'s (its shutdown at interpreter exit, its name
`store_0`): one job at a time is handed to it, and that job runs the queued calls until both
queues are empty.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Any, Callable

_Call = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class StoreThread:
    def __init__(self, name: str = "store") -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix=name)
        self._lock = threading.Lock()
        self._first: collections.deque[_Call] = collections.deque()
        self._rest: collections.deque[_Call] = collections.deque()
        self._running = False  # a job of the pool is running the queues

    def submit(self, fn: Callable[[], Any], first: bool = False
               ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            (self._first if first else self._rest).append((fn, future))
            if self._running:
                return future
            self._running = True
        try:
            self._pool.submit(self._run_queued)
        except RuntimeError:  # shut down: nothing will run it
            with self._lock:
                self._running = False
            raise
        return future

    def _run_queued(self) -> None:
        while True:
            with self._lock:
                if self._first:
                    fn, future = self._first.popleft()
                elif self._rest:
                    fn, future = self._rest.popleft()
                else:
                    self._running = False
                    return
            if not future.set_running_or_notify_cancel():
                continue  # its caller was cancelled before it started
            try:
                result = fn()
            except BaseException as exc:  # the caller gets it, as from an executor
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Wait for every queued call, then end the thread."""
        self._pool.shutdown(wait=True)
