"""WAL checkpoints on their own thread (bridge/store/checkpoint.py): the daemon's store
connection never checkpoints inside a COMMIT, yet the WAL's pages still reach the database
file, and closing hands SQLite's automatic checkpoint back."""

from __future__ import annotations

import os
import threading
import time

from bridge.store.checkpoint import AUTOCHECKPOINT_PAGES, Checkpointer
from bridge.store.db import AsyncStore, Store


def _poll(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)  # polling a condition, not a blind delay
    return predicate()


def test_pages_reach_the_database_file_from_the_checkpoint_thread(tmp_path):
    path = tmp_path / "m.db"
    store = Store(path)
    checkpoints = Checkpointer(str(path), interval=0.01)
    checkpoints.start(store.conn)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = os.path.getsize(path)
        with store.write() as conn:  # ~8 MB: twice what the automatic checkpoint would allow
            conn.execute("CREATE TABLE filler (b BLOB)")
            conn.executemany("INSERT INTO filler VALUES (?)",
                             [(os.urandom(4000),) for _ in range(2000)])
        # Only a checkpoint writes the database file in WAL mode; the store's own connection
        # no longer takes one, so the file grows only through the checkpoint thread.
        assert _poll(lambda: os.path.getsize(path) > before + 7_000_000)
    finally:
        checkpoints.stop(store.conn)
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTOCHECKPOINT_PAGES
    store.close()


def test_the_async_store_runs_one_and_hands_checkpoints_back_on_close(tmp_path):
    def checkpoint_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "store-checkpoint"}

    before = checkpoint_threads()  # other tests' stores may still have theirs
    store = Store(tmp_path / "m.db")
    async_store = AsyncStore(store)
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    (ours,) = checkpoint_threads() - before
    async_store.close()
    assert not ours.is_alive()


def test_a_store_in_memory_keeps_sqlites_own_checkpoints():
    store = Store(":memory:")
    AsyncStore(store).close()
