"""Untrusted bytes are read in worker processes, each message under a budget.

Postfix's way: the process that parses what strangers send is a separate, bounded process, and
nothing another part waits on is held while it works. A pool of workers (pebble, which can kill
one task's process and replace it — `concurrent.futures` and loky cannot) receives the compiled
`Pipeline` once, when the pool starts (one pool per set of parts: a reload starts a new one);
each task names message ids, and the worker reads their raw bytes itself from the store file,
read-only, so a 50 MB message is not copied through a pipe. Per message:

- wall time: a task over `wall_seconds` is killed; the message is quarantined at once;
- address space: a worker may grow by `memory_mb` (RLIMIT_AS over its size at start); a
  `MemoryError` quarantines the message at once;
- output: title and summary are cut at `text_chars`, and only what `apply` needs comes back;
- a worker that dies (a crash in a C library, the kernel's OOM killer) is replaced; the message
  goes back to `staged` and is tried again, up to the store's poison cap.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

import pebble

from bridge.config import ProcessingSettings
from bridge.models import Classification, ParsedMessage
from bridge.pipeline import Broken, Evaluation, Pipeline, Result, quarantine
from bridge.store.readonly import RawReader
from bridge.store.staging import StagedRow

log = logging.getLogger("mailbridge.isolation")

# Test-only hooks, documented as such in docs/hardening.md: `crash=MARK;hang=MARK;hog=MARK`.
# A worker reading a message that contains MARK exits at once (a crash), sleeps for ever (a
# runaway parser) or allocates without end (a memory bomb). Unset in production, so no mail
# can trigger them.
TEST_HOOKS_ENV = "MAILBRIDGE_TEST_HOOKS"


def _test_hook(raw: bytes) -> None:
    spec = os.environ.get(TEST_HOOKS_ENV)
    if not spec:
        return
    for item in spec.split(";"):
        what, _, mark = item.partition("=")
        if not mark or mark.encode() not in raw:
            continue
        if what == "crash":
            os._exit(70)
        if what == "hang":
            while True:
                time.sleep(60)
        if what == "hog":
            hog = []
            while True:
                hog.append(bytearray(16 * 1024 * 1024))


# -- the worker side ------------------------------------------------------------------------

_pipeline: Pipeline | None = None
_budget: ProcessingSettings | None = None
_raw = RawReader()


def _start_worker(pipeline: Pipeline, budget: ProcessingSettings) -> None:
    global _pipeline, _budget
    # The daemon's stop and reload signals are the daemon's: a worker stops when told by
    # the pool (SIGTERM, default action) and ignores a terminal's Ctrl-C sent to the group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pipeline, _budget = pipeline, budget
    _raw.forget()  # a forked worker must not use its parent's connections
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget.memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _evaluate_in_worker(path: str, refs: list[tuple[int, str, int | None]]) -> list[Result]:
    assert _pipeline is not None and _budget is not None
    out: list[Result] = []
    for message_ref, source, oversize in refs:
        try:
            raw = _raw.read(path, message_ref)
            _test_hook(raw)
            ev = _pipeline.evaluate(raw, oversize=oversize, source=source,
                                    message_ref=message_ref)
            del raw
            out.append(_slim(ev, _budget.text_chars))
        except MemoryError:
            out.append(quarantine(ParsedMessage(), f"over the memory budget of"
                                  f" {_budget.memory_mb} MiB while reading the message"))
        except Exception as exc:  # a bug in a parser: this message only
            out.append(quarantine(ParsedMessage(), "internal error while processing:"
                                  f" {type(exc).__name__}: {str(exc)[:300]}"))
    return out


def _slim(ev: Evaluation, text_chars: int) -> Evaluation:
    """Only what `apply` reads goes back through the pipe: no body, no attachments."""
    parsed = replace(ev.parsed, body="", attachments=(), xml_parts=())
    c = ev.classification
    if c is not None and c.alert is not None and \
            len(c.alert.summary) + len(c.alert.title) > text_chars:
        alert = replace(c.alert, title=c.alert.title[:text_chars // 8],
                        summary=c.alert.summary[:text_chars])
        c = Classification(c.kind, c.reason, c.rule, alert, c.forward_to, c.account_how,
                           c.steps)
    return replace(ev, parsed=parsed, classification=c)


# -- the parent side ------------------------------------------------------------------------

# Messages per task, and the time a chunk may take before it is re-run message by message. An
# ordinary alert takes about a millisecond; a chunk over a second holds a message that needs
# its own, full budget (or a machine so loaded that one-by-one costs little more).
CHUNK = 64
CHUNK_SECONDS = 1.0

class WorkerPool:
    """The pool of one set of parts. `evaluate` blocks its caller (a worker thread of the
    daemon's, never the store's thread) until every row has a result."""

    def __init__(self, pipeline: Pipeline, budget: ProcessingSettings):
        self.budget = budget
        # forkserver, not fork: a worker (started lazily, or as a replacement at any time)
        # must not inherit the daemon's descriptors — an inherited client socket would keep
        # a connection the daemon closed open for the peer — nor its signal set-up.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bridge.isolation"])
        self._pool = pebble.ProcessPool(max_workers=budget.workers, initializer=_start_worker,
                                        initargs=(pipeline, budget), context=context)
        # The pool starts lazily; one empty task now starts the forkserver and the workers
        # while the sources are still fetching, instead of in front of the first batch.
        self._pool.schedule(_evaluate_in_worker, ("", []))

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
        """Rows go out in chunks (one task per message costs more in the pool's pipes than a
        small alert costs to read). A chunk that does not finish within CHUNK_SECONDS, or whose
        worker dies, is taken apart: each of its messages runs alone under the full budget, so
        only the guilty one is quarantined or sent back."""
        chunks = [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)]
        futures = [self._schedule(store_path, chunk) for chunk in chunks]
        results: dict[int, Result] = {}
        alone: list[StagedRow] = []
        for chunk, future in zip(chunks, futures):
            if len(chunk) == 1:
                results[chunk[0].id] = self._result(chunk[0], future)
                continue
            try:
                results.update(zip((r.id for r in chunk), future.result()))
            except Exception:  # over the chunk's time, a dead worker, …: one by one
                alone += chunk
        singles = [(row, self._schedule(store_path, [row])) for row in alone]
        for row, future in singles:
            results[row.id] = self._result(row, future)
        return [results[r.id] for r in rows]

    def _schedule(self, store_path: str, chunk: list[StagedRow]) -> pebble.ProcessFuture:
        timeout = self.budget.wall_seconds if len(chunk) == 1 else \
            min(self.budget.wall_seconds, CHUNK_SECONDS)
        return self._pool.schedule(_evaluate_in_worker,
                                   (store_path, [(r.id, r.source, r.oversize) for r in chunk]),
                                   timeout=timeout)

    def _result(self, row: StagedRow, future: pebble.ProcessFuture) -> Result:
        wall = self.budget.wall_seconds
        try:
            [result] = future.result()
            return result
        except FutureTimeout:
            return quarantine(ParsedMessage(), f"over the time budget of {wall:g} s while"
                              " reading the message (its worker was stopped)")
        except pebble.ProcessExpired as exc:
            return Broken(row.id, f"its worker process died (exit {exc.exitcode})")
        except Exception as exc:  # the pool itself failed (closed by a reload, …)
            return Broken(row.id, f"the worker pool failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Graceful: tasks already scheduled finish; then the workers exit."""
        self._pool.close()
        self._pool.join(timeout=self.budget.wall_seconds + 5)
        if self._pool.active:
            self._pool.stop()
            self._pool.join()
