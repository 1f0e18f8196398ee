"""Read-only access to a store file without opening a `Store`: what `migrate` reports before
it migrates, and the raw bytes an isolation worker reads for itself.

A `Store` opened read-write may create or migrate the file; these never do, and they take no
lock a writer waits for.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def schema_version_at(path: Path | str) -> int:
    """The schema version of the store file at `path` (0: none yet), read without migrating."""
    probe = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(probe.execute("PRAGMA user_version").fetchone()[0])
    finally:
        probe.close()


class RawReader:
    """Raw message bytes by message id, one read-only connection per store path, kept for the
    life of the process (a worker reads many messages)."""

    def __init__(self) -> None:
        self._connections: dict[str, sqlite3.Connection] = {}

    def forget(self) -> None:
        """Drop the connections without closing them: after a fork they are the parent's, and
        closing them here would touch its file handles."""
        self._connections.clear()

    def read(self, path: str, message_ref: int) -> bytes:
        """The message's raw bytes; empty when it has none (pruned, or no such message)."""
        conn = self._connections.get(path)
        if conn is None:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
            self._connections[path] = conn
        row = conn.execute("SELECT raw FROM raw_messages WHERE message_ref=?",
                           (message_ref,)).fetchone()
        return bytes(row[0]) if row else b""
