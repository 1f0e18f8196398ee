"""WAL checkpoints on a thread of their own, for the daemon's store.

SQLite's automatic checkpoint runs inside whichever COMMIT pushes the WAL past 1,000 pages: on
the daemon's one store thread, the thread every claim, settlement and processed batch waits
for. On the backlog benchmark that was about half the CPU of COMMIT and a quarter of settling
a call (docs/performance.md, round 4). `Checkpointer` turns the automatic checkpoint off on the
store's connection and runs PASSIVE checkpoints from a second connection on its own thread
instead; sqlite3 releases the GIL while it copies pages and syncs, so the work moves to the
other core and no store call waits behind it.

PASSIVE never blocks a writer or a reader: it copies what no reader still needs and returns.
The WAL is still reset by the next writer once everything is copied, as with the automatic
checkpoint. Other processes on the same file (`ingest`, CLI commands) keep SQLite's automatic
checkpoint, so the WAL stays bounded whoever writes. If the second connection cannot be opened
the store keeps SQLite's automatic checkpoint; if a checkpoint fails (a disk error) the thread
logs once per kind of failure and keeps trying. On stop the store's connection gets its
automatic checkpoint back and takes one last checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

# SQLite's own default (pages); what the store's connection gets back on stop.
AUTOCHECKPOINT_PAGES = 1000
# Each checkpoint copies the latest version of every page written since the one before, so
# a page rewritten by many commits (the tail of the events table, hot index pages) is copied
# once per interval. Every second rather than every quarter: on the backlog benchmark 35 MB
# and 9,000 write calls less per 10,000 mails, main-process CPU -0.2 s, for a WAL of ~16 MB
# under a backlog instead of ~4 MB. A checkpoint of an already copied WAL costs microseconds.
INTERVAL_SECONDS = 1.0


class Checkpointer:
    def __init__(self, path: str, interval: float = INTERVAL_SECONDS):
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()

    def start(self, conn: sqlite3.Connection) -> None:
        """Take over checkpointing from `conn` (the store's own connection)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return  # no WAL file to move
        try:  # opened here, so a store this cannot reach keeps SQLite's automatic checkpoint
            own = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                  check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("store checkpoints stay in the store's commits: %s", exc)
            return
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._thread = threading.Thread(target=self._loop, args=(own,),
                                        name="store-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, conn: sqlite3.Connection) -> None:
        """Hand checkpointing back to `conn` and let it take one last checkpoint."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("store checkpoint at close failed: %s", exc)

    def _loop(self, conn: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    kind = type(exc).__name__
                    if kind not in self._failures:
                        self._failures.add(kind)
                        log.warning("store checkpoint failed (%s); trying again every %g s",
                                    exc, self.interval)
        finally:
            conn.close()
