"""The durable store: staged raw messages, correlations, the outbox and events (SQLite, WAL).

`Store` is synchronous and owned by one thread; `AsyncStore` runs every call on one dedicated
worker thread so asyncio code can await it (sqlite connections must not hop threads).
"""

from bridge.store.db import AsyncStore, OutboxRow, StagedRow, Store

__all__ = ["Store", "AsyncStore", "StagedRow", "OutboxRow"]
