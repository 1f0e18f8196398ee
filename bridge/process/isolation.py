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

import contextlib
import logging
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path

import pebble

from bridge.config import ProcessingSettings
from bridge.models import Classification, ParsedMessage
from bridge.process import forkserver
from bridge.process.pipeline import Broken, Evaluation, Pipeline, Result, quarantine
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
_detail = False
_raw = RawReader()


def _start_worker(pipeline: Pipeline, budget: ProcessingSettings,
                  detail: bool = False) -> None:
    global _pipeline, _budget, _detail
    # The daemon's stop and reload signals are the daemon's: a worker stops when told by
    # the pool (SIGTERM, default action) and ignores a terminal's Ctrl-C sent to the group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pipeline, _budget, _detail = pipeline, budget, detail
    _raw.forget()  # a forked worker must not use its parent's connections
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget.memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _evaluate_in_worker(path: str, refs: list[tuple[int, str, int | None]],
                        progress: str = "") -> tuple[list[Result], float]:
    """The chunk's results and the seconds it took. `progress` names a file the worker marks
    with the message it starts and when, so a chunk that is stopped or dies can be blamed on
    that one message."""
    assert _pipeline is not None and _budget is not None
    out: list[Result] = []
    started = time.monotonic()
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o600) if progress else -1
    try:
        for message_ref, source, oversize in refs:
            if fd >= 0:
                os.pwrite(fd, f"{message_ref} {time.time():.3f}".ljust(40).encode(), 0)
            out.append(_evaluate_one(path, message_ref, source, oversize))
    finally:
        if fd >= 0:
            os.close(fd)
    return out, time.monotonic() - started


def _evaluate_one(path: str, message_ref: int, source: str, oversize: int | None) -> Result:
    assert _pipeline is not None and _budget is not None
    try:
        raw = _raw.read(path, message_ref)
        _test_hook(raw)
        ev = _pipeline.evaluate(raw, oversize=oversize, source=source,
                                message_ref=message_ref)
        del raw
        return _slim(ev, _budget.text_chars, _detail)
    except MemoryError:
        return quarantine(ParsedMessage(), f"over the memory budget of"
                          f" {_budget.memory_mb} MiB while reading the message")
    except Exception as exc:  # a bug in a parser: this message only
        return quarantine(ParsedMessage(), "internal error while processing:"
                          f" {type(exc).__name__}: {str(exc)[:300]}")


def _slim(ev: Evaluation, text_chars: int, detail: bool = False) -> Evaluation:
    """Only what `apply` reads goes back through the pipe: no body, no attachments, and of a
    message that is not an XML transaction only the subject (the `classified` event), the
    sender and the Message-ID; no precedence steps. The parent unpickles every result on the
    daemon's one core: headers, trace, date and steps were 55 % of the bytes and of that time.
    An XML transaction keeps its headers (the reply's loop check reads them). `detail` keeps
    what `simulate` reports: the steps, and every header (`--explain` runs the rules again)."""
    p = ev.parsed
    if detail or ev.transaction is not None:
        parsed = replace(p, body="", html_body="", attachments=(), xml_parts=())
    else:
        parsed = ParsedMessage(subject=p.subject, sender=p.sender, message_id=p.message_id,
                               parse_error=p.parse_error)
    c = ev.classification
    if c is not None:
        if c.alert is not None and len(c.alert.summary) + len(c.alert.title) > text_chars:
            c = replace(c, alert=replace(c.alert, title=c.alert.title[:text_chars // 8],
                                         summary=c.alert.summary[:text_chars]))
        if not detail and c.steps:
            c = replace(c, steps=())
    return replace(ev, parsed=parsed, classification=c)


# -- the parent side ------------------------------------------------------------------------

# Messages per task. Every task costs the daemon's process a few wake-ups of the pool's threads
# (the task sent, its acknowledgement and its result received, the waiting thread woken), on
# the one core its event loop and store thread share: so as many messages per task as take
# about CHUNK_SHARE of the wall budget at the pace the workers have shown (an ordinary alert
# takes under a millisecond), at most CHUNK_MAX, and at least one task per worker. A chunk
# stopped at its budget is run again without the message it was on (`_blame`), and that
# message is quarantined at once only if it had 90 % of the budget itself: so a chunk must
# stay well inside the other 10 % (half of it here), and a run of slow but harmless mail
# shrinks the next chunks.
CHUNK_FIRST = 64  # until a chunk has been timed
CHUNK_MAX = 200
CHUNK_SHARE = 0.05


def chunk_size(rows: int, workers: int, wall: float, pace: float | None) -> int:
    """Messages per task for a batch of `rows`; `pace`: seconds per message of the last
    timed chunk (None: none yet)."""
    size = CHUNK_FIRST if pace is None else int(wall * CHUNK_SHARE / max(pace, 1e-6))
    per_worker = -(-rows // workers)  # every worker gets a share of the batch
    return max(1, min(size, CHUNK_MAX, per_worker))


class WorkerPool:
    """The pool of one set of parts. `evaluate` blocks its caller (a worker thread of the
    daemon's, never the store's thread) until every row has a result."""

    def __init__(self, pipeline: Pipeline, budget: ProcessingSettings, *,
                 detail: bool = False):
        """`detail`: results carry what `simulate` reports (`_slim`)."""
        self.budget = budget
        self._pace: float | None = None  # seconds per message of the last timed chunk
        self._progress_dir = tempfile.mkdtemp(prefix="mailbridge-progress-")
        self._pool = pebble.ProcessPool(max_workers=budget.workers, initializer=_start_worker,
                                        initargs=(pipeline, budget, detail),
                                        context=forkserver.context())
        # The pool starts lazily; one empty task now starts the forkserver and the workers
        # while the sources are still fetching, instead of in front of the first batch. On a
        # thread: starting waits for the fork server to import its preload (0.5 s on a quiet
        # machine, seconds under load), which held up the assembly and so the first fetch.
        # pebble starts its pool under a lock, so a batch scheduled meanwhile waits for it.
        threading.Thread(target=self._warm_up, name="pool-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            self._pool.schedule(_evaluate_in_worker, ("", []))
        except RuntimeError:  # closed before it started (a reload, a one-shot command)
            pass

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
        """Rows go out in chunks, each task under the wall budget. When a chunk is stopped or
        its worker dies, the progress mark names the message it was on: if that message had
        its whole budget, it alone is quarantined (or, after a death, sent back); else it
        runs again alone with a full budget. The rest of the chunk runs again as a chunk."""
        results: dict[int, Result] = {}
        size = chunk_size(len(rows), self.budget.workers, self.budget.wall_seconds,
                          self._pace)
        todo = [rows[i:i + size] for i in range(0, len(rows), size)]
        while todo:
            try:
                running = [(chunk, *self._schedule(store_path, chunk)) for chunk in todo]
            except RuntimeError as exc:  # a reload closed this pool: the new parts retry
                for row in (r for chunk in todo for r in chunk if r.id not in results):
                    results[row.id] = Broken(row.id, f"the worker pool closed: {exc}",
                                             crashed=False)
                break
            todo = []
            for chunk, future, progress in running:
                try:
                    found, seconds = future.result()
                    results.update(zip((r.id for r in chunk), found))
                    if found:
                        self._pace = seconds / len(found)
                except Exception as exc:  # stopped, died, or the pool failed
                    todo += self._blame(chunk, exc, progress, results)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(progress)
        return [results[r.id] for r in rows]

    def _schedule(self, store_path: str,
                  chunk: list[StagedRow]) -> tuple[pebble.ProcessFuture, str]:
        progress = os.path.join(self._progress_dir, uuid.uuid4().hex)
        future = self._pool.schedule(
            _evaluate_in_worker,
            (store_path, [(r.id, r.source, r.oversize) for r in chunk], progress),
            timeout=self.budget.wall_seconds)
        return future, progress

    def _blame(self, chunk: list[StagedRow], exc: Exception, progress: str,
               results: dict[int, Result]) -> list[list[StagedRow]]:
        """Settle the message the chunk failed on; return what must run again."""
        wall = self.budget.wall_seconds
        try:
            ref_text, started_text = Path(progress).read_text().split()[:2]
            ref, started = int(ref_text), float(started_text)
        except (OSError, ValueError):
            ref, started = -1, time.time()
        index = next((i for i, r in enumerate(chunk) if r.id == ref), None)
        if index is None:  # no mark: nothing to blame precisely, every message alone
            if len(chunk) > 1:
                return [[r] for r in chunk]
            results[chunk[0].id] = self._verdict(chunk[0], exc)
            return []
        row = chunk[index]
        rest = chunk[:index] + chunk[index + 1:]
        had_budget = time.time() - started >= wall * 0.9 or len(chunk) == 1
        if isinstance(exc, FutureTimeout) and not had_budget:
            return [c for c in ([row], rest) if c]  # slow company: a full budget alone
        results[row.id] = self._verdict(row, exc)
        return [rest] if rest else []

    def _verdict(self, row: StagedRow, exc: Exception) -> Result:
        if isinstance(exc, FutureTimeout):
            return quarantine(ParsedMessage(), f"over the time budget of"
                              f" {self.budget.wall_seconds:g} s while reading the message"
                              " (its worker was stopped)")
        if isinstance(exc, pebble.ProcessExpired):
            return Broken(row.id, f"its worker process died (exit {exc.exitcode})")
        return Broken(row.id, f"the worker pool failed: {type(exc).__name__}: {exc}",
                      crashed=False)

    def close(self) -> None:
        """Graceful: tasks already scheduled finish; then the workers exit."""
        self._pool.close()
        self._pool.join(timeout=self.budget.wall_seconds + 5)
        if self._pool.active:
            self._pool.stop()
            self._pool.join()
        shutil.rmtree(self._progress_dir, ignore_errors=True)
